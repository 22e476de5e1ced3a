"""MessagesStream (extproc/translate/anthropic/stream.py): any bytes as Anthropic's event
stream, in any chunking.

Invariants: never raises; the output is SSE events, each ``data:`` and a JSON object or
``[DONE]``; it has exactly one end (``[DONE]`` after ``message_stop``, else an error event), and
``done`` says which; the output, usage and failure do not depend on how the stream was cut.
"""

from __future__ import annotations

import itertools

import atheris
from _common import argv, guard

with atheris.instrument_imports():
    import orjson

    from extproc.translate.anthropic.request import Plan
    from extproc.translate.anthropic.stream import MessagesStream
    from extproc.translate.chat_output import CompletionId

_IDENT = CompletionId("chatcmpl-fuzz", 0, "m")


def _run(parts: list[bytes], include_usage: bool) -> tuple[bytes, MessagesStream]:
    stream = MessagesStream(Plan(stream=True, include_usage=include_usage), _IDENT)
    out = b"".join(stream.feed(part, i == len(parts) - 1) for i, part in enumerate(parts))
    return out, stream


def check(data: bytes) -> None:
    # data[0]: include_usage and how many cuts; then two bytes per cut; the rest is the stream.
    count = data[0] % 9 if data else 0
    include_usage = bool(data[0] & 0x80) if data else False
    head, body = data[1 : 1 + 2 * count], data[1 + 2 * count :]
    cuts = [int.from_bytes(head[i : i + 2], "big") for i in range(0, len(head), 2)]
    bounds = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
    parts = [body[a:b] for a, b in itertools.pairwise(bounds)]

    out, stream = _run(parts, include_usage)
    whole, once = _run([body], include_usage)
    if (out, stream.usage, stream.failure) != (whole, once.usage, once.failure):
        raise AssertionError("the translated stream depends on the chunking")
    events = out.split(b"\n\n")
    if events[-1] != b"":
        raise AssertionError("the output does not end with a whole event")
    for event in events[:-1]:
        if not event.startswith(b"data: "):
            raise AssertionError(f"not an SSE data event: {event[:40]!r}")
        if event != b"data: [DONE]" and not isinstance(orjson.loads(event[6:]), dict):
            raise AssertionError("an event that is not a JSON object")
    ends = [e for e in events[:-1] if e == b"data: [DONE]" or e.startswith(b'data: {"error"')]
    if len(ends) != 1 or ends[0] != events[-2]:
        raise AssertionError("the stream has not exactly one end, last")
    if stream.done != (ends[0] == b"data: [DONE]"):
        raise AssertionError("done does not say how the stream ended")


def main() -> None:
    atheris.Setup(argv(), guard("anthropic_stream", check))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
