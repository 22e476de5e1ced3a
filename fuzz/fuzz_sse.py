"""SSEObserver (extproc/usage.py): any bytes, in any chunking.

Invariants: never raises; without stripping the output is the input, byte for byte; with
stripping the output, the usage, the model, the text said, ``done`` and ``error`` do not
depend on how the stream was cut into chunks; a stripped stream never shows a
``"usage": null``.
"""

from __future__ import annotations

import atheris
from _common import argv, chunks, guard

with atheris.instrument_imports():
    from extproc.usage import SSEObserver


def _feed(observer: SSEObserver, parts: list[bytes]) -> bytes:
    out = b""
    for i, part in enumerate(parts):
        out += observer.feed(part, i == len(parts) - 1)
    return out


def _state(o: SSEObserver) -> tuple[object, ...]:
    return (o.usage, o.model, o.said, o.done, o.error)


def check(data: bytes) -> None:
    parts = chunks(data)
    stream = b"".join(parts)

    plain = SSEObserver(strip_usage=False)
    if _feed(plain, parts) != stream:
        raise AssertionError("pass-through changed the bytes")
    whole = SSEObserver(strip_usage=False)
    whole.feed(stream, True)
    if _state(plain) != _state(whole):
        raise AssertionError("what was observed depends on the chunking")

    stripped = SSEObserver(strip_usage=True)
    out = _feed(stripped, parts)
    once = SSEObserver(strip_usage=True)
    if once.feed(stream, True) != out or _state(once) != _state(stripped):
        raise AssertionError("stripped output depends on the chunking")
    if len(out) > len(stream):
        raise AssertionError("stripping added bytes")


def main() -> None:
    atheris.Setup(argv(), guard("sse", check))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
