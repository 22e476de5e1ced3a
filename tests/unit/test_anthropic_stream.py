"""Anthropic's event stream -> OpenAI chat completion chunks, in any split."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from extproc.translate.anthropic.chat import AnthropicChat
from extproc.usage import MAX_EVENT_BYTES, Usage
from tests.anthropic_cases import STREAM_HEAD, Json, chat, messages, text_stream, wire
from tests.bedrock_cases import COSINE_TOOL, SCHEMA_FORMAT, accumulate, sse_events


def streaming(doc: Json | None = None, include_usage: bool = True) -> AnthropicChat:
    t = chat(stream=True, include_usage=include_usage)
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    messages({"stream": True, **options, **(doc or {})}, t)
    assert t.response_body_mode(200, STREAM_HEAD) == "streamed"
    head = t.response_headers(200, STREAM_HEAD)
    assert head.set["content-type"] == "text/event-stream"
    return t


def feed(t: AnthropicChat, data: bytes, seed: int = 0, end: bool = True) -> list[Any]:
    rng = random.Random(seed)
    out = bytearray()
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 40)
        out += t.response_body(data[pos : pos + size], False)
        pos += size
    if end:
        out += t.response_body(b"", True)
    return sse_events(bytes(out)) if out else []


@pytest.mark.parametrize("seed", range(5))
def test_a_text_stream_in_any_split(seed: int) -> None:
    t = streaming()
    events = feed(t, wire(text_stream("Hello there friend")), seed)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert accumulate(chunks) == {
        "content": "Hello there friend",
        "tool_calls": [],
        "finish_reason": "stop",
        "usage": {
            "prompt_tokens": 14,
            "completion_tokens": 7,
            "total_tokens": 21,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    assert chunks[-1]["choices"] == []
    assert t.complete and t.failure is None
    assert t.usage == Usage(14, 7, 21, cached_input_tokens=4)


def test_crlf_framing_and_no_usage_chunk_unless_asked() -> None:
    t = streaming(include_usage=False)
    data = wire(text_stream("Hi")).replace(b"\n", b"\r\n")
    events = feed(t, data)
    assert events[-1] == "[DONE]"
    assert all("usage" not in c and c["choices"] for c in events[:-1])
    assert t.usage is not None and t.usage.output_tokens == 7  # still accounted


def test_tool_calls_thinking_and_signatures() -> None:
    t = streaming({"tools": [COSINE_TOOL], "reasoning_effort": "low"})
    events = [
        text_stream()[0],
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "cosine", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"x":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]  # fmt: skip
    chunks = feed(t, wire(events))[:-1]
    reasoning = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    assert reasoning == "Hmm."
    assert b"c2ln" not in orjson.dumps(chunks)
    result = accumulate(chunks)
    assert result["finish_reason"] == "tool_calls"
    assert result["tool_calls"] == [
        {
            "index": 0,
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "cosine", "arguments": '{"x": 1}'},
        }
    ]


def test_the_answer_tool_streams_as_content() -> None:
    t = streaming({"response_format": SCHEMA_FORMAT})
    events = [
        text_stream()[0],
        {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "Weather", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"city"'}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ': "Oslo"}'}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]  # fmt: skip
    result = accumulate(feed(t, wire(events))[:-1])
    assert result["content"] == '{"city": "Oslo"}'
    assert result["tool_calls"] == [] and result["finish_reason"] == "stop"


def test_an_error_event_ends_the_stream_with_an_error() -> None:
    t = streaming()
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    events = feed(t, wire([*text_stream()[:4], error, *text_stream()[4:]]))
    assert "[DONE]" not in events
    assert events[-1] == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    assert t.failure == "overloaded_error" and not t.complete
    # The final usage never came: the attempt is estimated.
    assert t.usage is None and t.output_tokens("claude") > 0


def test_a_stream_cut_before_message_stop_says_so() -> None:
    t = streaming()
    events = feed(t, wire(text_stream()[:5]))
    assert events[-1]["error"]["code"] == "stream_truncated"
    assert t.failure == "stream_truncated" and not t.complete and t.usage is None


def test_a_client_that_leaves_mid_stream_leaves_no_final_usage() -> None:
    t = streaming()
    feed(t, wire(text_stream()[:4]), end=False)
    assert t.usage is None and not t.complete
    assert t.output_tokens("claude") >= 1


def test_unreadable_events_and_oversized_ones_end_the_stream() -> None:
    t = streaming()
    events = feed(t, wire(text_stream()[:2]) + b"data: {not json\n\n")
    assert events[-1]["error"]["code"] == "bad_upstream_response"
    t = streaming()
    events = feed(t, b"data: " + b"x" * (MAX_EVENT_BYTES + 10))
    assert events[-1]["error"]["code"] == "event_too_large"
    assert t.failure == "event_too_large"


def test_an_error_status_on_a_stream_is_a_json_error() -> None:
    t = chat(stream=True)
    messages({"stream": True}, t)
    assert t.response_body_mode(529, {"content-type": "application/json"}) == "buffered"
    head = t.response_headers(529, {"content-type": "application/json"})
    assert head.status == 503 and head.set["content-type"] == "application/json"
    body = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    assert orjson.loads(t.response_body(body, True))["error"]["code"] == "overloaded_error"
