from __future__ import annotations

import random

import pytest

from extproc.usage import (
    MAX_EVENT_BYTES,
    SSEObserver,
    Usage,
    from_json_doc,
    from_openai,
    json_document,
)
from tests.fakes.openai import chat_reply, completion_chunks, sse_events
from tests.fakes.replay import cassette


def test_from_openai_detailed() -> None:
    body = cassette("chat-detailed-usage").response_body
    usage, model = from_json_doc(json_document(body))
    assert usage is not None and model and model.startswith("gpt-5-nano")
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.reasoning_tokens > 0


def test_embeddings_usage() -> None:
    usage, _ = from_json_doc(json_document(cassette("embeddings-basic").response_body))
    assert usage == Usage(input_tokens=7, output_tokens=0, total_tokens=7)


def test_malformed_usage_is_ignored() -> None:
    assert from_openai("nope") is None
    assert from_json_doc(json_document(b"{not json")) == (None, None)
    assert from_openai({"prompt_tokens": True, "completion_tokens": 2}) == Usage(0, 2, 2)


def _split(data: bytes, rng: random.Random) -> list[bytes]:
    parts, i = [], 0
    while i < len(data):
        n = rng.randint(1, 40)
        parts.append(data[i : i + n])
        i += n
    return parts


def test_observer_passes_bytes_through_and_reads_usage() -> None:
    body = cassette("chat-streaming-detailed-usage").response_body
    observer = SSEObserver(strip_usage=False)
    parts = _split(body, random.Random(1))
    out = b"".join(observer.feed(p, i == len(parts) - 1) for i, p in enumerate(parts))
    assert out == body
    assert observer.usage is not None and observer.usage.output_tokens == 100


def test_stripping_gives_the_stream_without_include_usage() -> None:
    reply = chat_reply({"model": "m", "messages": [{"role": "user", "content": "a b c d"}]})
    without = b"".join(sse_events(completion_chunks(reply, include_usage=False)))
    with_usage = b"".join(sse_events(completion_chunks(reply, include_usage=True)))
    for seed in range(20):
        observer = SSEObserver(strip_usage=True)
        parts = _split(with_usage, random.Random(seed))
        out = b"".join(observer.feed(p, i == len(parts) - 1) for i, p in enumerate(parts))
        assert out == without
        assert observer.usage is not None and observer.usage.output_tokens > 0


def test_stripping_recorded_openai_stream() -> None:
    body = cassette("chat-streaming-detailed-usage").response_body
    observer = SSEObserver(strip_usage=True)
    out = observer.feed(body, True)
    assert b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n")
    assert out.count(b"data: ") == body.count(b"data: ") - 1


def test_cut_stream_estimate() -> None:
    observer = SSEObserver(strip_usage=False)
    observer.feed(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choices":[{"de', False)
    assert observer.usage is None
    # Only the complete event is counted: "a", one token for an OpenAI model.
    assert observer.said == ["a"]
    assert observer.output_tokens("gpt-4o-mini") == 1


@pytest.mark.parametrize("strip", [True, False])
def test_the_held_event_is_bounded(strip: bool) -> None:
    observer = SSEObserver(strip_usage=strip)
    observer.feed(b"data: {", False)
    piece = b"y" * 4096
    held = 0
    while not observer.overflow:
        observer.feed(piece, False)
        held = max(held, len(observer._buffer))
    assert held <= MAX_EVENT_BYTES
    assert len(observer._buffer) == 0
    assert observer.feed(b"\n\ndata: [DONE]\n\n", True) == b""
    assert not observer.done


def test_events_split_anywhere_across_long_held_bytes() -> None:
    # The scan resumes where the last one stopped: a separator split over two chunks, and one
    # in \r\n form after a long event, are still found.
    long = b'data: {"choices":[{"delta":{"content":"' + b"z" * 100_000 + b'"}}]}'
    observer = SSEObserver(strip_usage=True)
    out = observer.feed(long[:50_000], False) + observer.feed(long[50_000:] + b"\n", False)
    out += observer.feed(b"\n", False)
    assert out == long + b"\n\n" and len(observer.said) == 1
    out = observer.feed(b"data: [DONE]\r\n", False) + observer.feed(b"\r\n", False)
    assert out == b"data: [DONE]\r\n\r\n" and observer.done
