"""ResponsesObserver (extproc/responses_usage.py) and the Responses usage reader: any bytes, in
any chunking.

Invariants: never raises; the output is the input, byte for byte; the usage, model, text said,
last sequence number, ``done`` and ``error`` do not depend on how the stream was cut into
chunks; a usage read has no negative count.
"""

from __future__ import annotations

import atheris
from _common import argv, chunks, guard

with atheris.instrument_imports():
    from extproc.responses_usage import ResponsesObserver


def _state(o: ResponsesObserver) -> tuple[object, ...]:
    return (o.usage, o.model, "".join(o.said), o.sequence, o.done, o.error)


def check(data: bytes) -> None:
    parts = chunks(data)
    stream = b"".join(parts)
    cut = ResponsesObserver()
    out = b"".join(cut.feed(part, i == len(parts) - 1) for i, part in enumerate(parts))
    if out != stream:
        raise AssertionError("the observer changed the bytes")
    whole = ResponsesObserver()
    whole.feed(stream, True)
    if _state(cut) != _state(whole):
        raise AssertionError("what was observed depends on the chunking")
    usage = cut.usage
    if usage is not None and min(usage.input_tokens, usage.output_tokens, usage.total_tokens) < 0:
        raise AssertionError("a negative count")


def main() -> None:
    atheris.Setup(argv(), guard("responses", check))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
