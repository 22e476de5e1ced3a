"""The ``model`` field of a ``multipart/form-data`` body (audio uploads), read without changing
a byte of it, and the same body with another model in that field.

The form is parsed by python-multipart (the streaming parser Starlette uses), once over the
whole body the router stage has buffered: only the offsets of the ``model`` part's value are
kept, never a copy of the file. Anything that is not a complete form is refused with a 400
that names the problem: no ``multipart/form-data`` content type (JSON sent to a form
endpoint), no boundary, a malformed or truncated body, no ``model`` field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from extproc.errors import GatewayError, bad_request

FORM_TYPE = b"multipart/form-data"
MAX_BOUNDARY = 70  # RFC 2046
MAX_MODEL_BYTES = 1024  # a model name is short (router.MAX_MODEL_LENGTH characters)


@dataclass(slots=True)
class _Form:
    """What the parser's callbacks saw: the current part's headers and where ``model`` is."""

    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    in_model: bool = False
    spans: list[tuple[int, int]] = field(default_factory=list)  # the model value's pieces
    model_parts: int = 0
    ended: bool = False

    def header_end(self) -> None:
        if bytes(self.header_name).strip().lower() == b"content-disposition":
            disposition, params = parse_options_header(bytes(self.header_value))
            self.in_model = disposition == b"form-data" and params.get(b"name") == b"model"
            self.model_parts += self.in_model
        self.header_name.clear()
        self.header_value.clear()

    def part_data(self, start: int, end: int) -> None:
        if self.in_model and self.model_parts == 1:
            self.spans.append((start, end))


def boundary(content_type: str | None) -> bytes:
    """The boundary a form's content type declares, or the 400 that says what is wrong."""
    kind, params = parse_options_header(content_type or "")
    if kind != FORM_TYPE:
        raise bad_request(
            f"This endpoint takes a multipart/form-data body (got content type"
            f" {content_type or 'none'!r}); send the audio file and the model as form fields.",
            code="invalid_content_type",
        )
    value = params.get(b"boundary", b"")
    if not value or len(value) > MAX_BOUNDARY:
        raise bad_request(
            "The multipart/form-data content type has no valid boundary parameter (1 to 70"
            " characters).",
            code="invalid_multipart",
        )
    return value


def model_span(body: bytes, boundary_: bytes) -> tuple[int, int] | None:
    """Where the value of the form's ``model`` field is in ``body``; None when it has none.
    Raises the 400 of a body that is not a complete form."""
    form = _Form()
    parser = MultipartParser(
        boundary_,
        callbacks={
            "on_header_field": lambda data, start, end: form.header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: form.header_value.extend(data[start:end]),
            "on_header_end": form.header_end,
            "on_part_data": lambda data, start, end: form.part_data(start, end),
            "on_part_end": lambda: setattr(form, "in_model", False),
            "on_end": lambda: setattr(form, "ended", True),
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise _malformed(f"it is malformed ({exc})") from None
    if not form.ended:
        raise _malformed("it ends before its closing boundary (truncated)")
    if form.model_parts > 1:
        raise bad_request(
            "The form has more than one 'model' field.", param="model", code="invalid_multipart"
        )
    if not form.spans:
        return None
    # The value's pieces are contiguous in the body written at once.
    return form.spans[0][0], form.spans[-1][1]


def form_model(body: bytes, content_type: str | None) -> str | None:
    """The form's ``model`` (None when it has no such field); the 400 of a bad form."""
    span = model_span(body, boundary(content_type))
    if span is None:
        return None
    raw = body[span[0] : span[1]]
    if len(raw) > MAX_MODEL_BYTES:
        raise bad_request("'model' is too long.", param="model", code="invalid_model")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise bad_request("'model' is not UTF-8 text.", param="model") from None


def with_model(body: bytes, model: str) -> bytes:
    """``body`` with ``model`` as its model field's value, every other byte as it was. The
    boundary is the body's first line (the translator does not see the request headers); a
    form that opens otherwise (a preamble) is refused."""
    first = body.split(b"\r\n", 1)[0]
    if not first.startswith(b"--") or not 2 < len(first) <= MAX_BOUNDARY + 2:
        raise _malformed("it does not open with its boundary")
    span = model_span(body, first[2:])
    if span is None:
        raise bad_request("The form has no 'model' field.", param="model")
    return body[: span[0]] + model.encode() + body[span[1] :]


def _malformed(why: str) -> GatewayError:
    return bad_request(
        f"The multipart/form-data body cannot be read: {why}.", code="invalid_multipart"
    )
