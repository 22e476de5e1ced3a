"""The multipart form's model reader (extproc/multipart.py): arbitrary bytes, and forms built
from the input with a model field in them.

Invariants: :func:`form_model` returns a string or None, or raises a 400 ``GatewayError`` with
a message, whatever the bytes and the content type; a built form yields its model, and
:func:`with_model` changes that value alone (the body otherwise byte for byte).
"""

from __future__ import annotations

import atheris
from _common import argv, guard

with atheris.instrument_imports():
    from extproc.errors import GatewayError
    from extproc.multipart import form_model, with_model

BOUNDARY = b"fuzzb0undary"
CONTENT_TYPES = [
    "multipart/form-data; boundary=fuzzb0undary",
    'multipart/form-data; boundary="fuzzb0undary"',
    "multipart/form-data",
    "application/json",
    None,
]


def _built(fdp: atheris.FuzzedDataProvider, model: bytes) -> tuple[bytes, int, int]:
    """A form with ``model`` among fuzzed fields; where the model value is."""
    out = b""
    start = end = 0
    for i in range(fdp.ConsumeIntInRange(0, 4)):
        value = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)).replace(b"\r\n--", b"")
        out += b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n' % i
        out += value.rstrip(b"\r") + b"\r\n"
        if i == 0:
            out += b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            start = len(out)
            out += model
            end = len(out)
            out += b"\r\n"
    if not end:
        out += b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
        start, end = len(out), len(out) + len(model)
        out += model + b"\r\n"
    return out + b"--" + BOUNDARY + b"--\r\n", start, end


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        content_type = CONTENT_TYPES[fdp.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
        body = fdp.ConsumeBytes(fdp.remaining_bytes())
        try:
            model = form_model(body, content_type)
        except GatewayError as err:
            if err.status != 400 or not err.message:
                raise AssertionError(f"not a 400 with a message: {err!r}") from None
            return
        if not (model is None or isinstance(model, str)):
            raise AssertionError("a model of the wrong type")
        return
    model = fdp.ConsumeUnicodeNoSurrogates(30).replace("\r", "").replace("\n", "") or "m"
    body, start, end = _built(fdp, model.encode())
    if form_model(body, CONTENT_TYPES[0]) != model:
        raise AssertionError("a built form's model was not read")
    out = with_model(body, "renamed")
    if out != body[:start] + b"renamed" + body[end:]:
        raise AssertionError("with_model changed more than the model's value")


def main() -> None:
    atheris.Setup(argv(), guard("multipart", check))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
