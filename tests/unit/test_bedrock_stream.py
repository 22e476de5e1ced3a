"""ConverseStream's event stream -> OpenAI chat completion chunks, in any split."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from extproc.eventstream import encode_message
from extproc.translate.bedrock.chat import BedrockChat
from extproc.translate.bedrock.converse_translator import ConverseTranslator
from extproc.usage import Usage
from tests.bedrock_cases import (
    COSINE_TOOL,
    EXPECTED,
    SCHEMA_FORMAT,
    STREAM_HEAD,
    Json,
    Weather,
    accumulate,
    chat,
    converse,
    sse_events,
)
from tests.fakes.bedrock import CONFORMANCE, RECORDING, event_frame, exception_frame

# --- chat streams -------------------------------------------------------------------------------


def stream(t: BedrockChat, data: bytes, sizes: Callable[[], int]) -> list[Any]:
    """Feed ``data`` in pieces of ``sizes()`` bytes; the SSE events the client gets."""
    return sse_events(fed(t, data, sizes))


def fed(t: ConverseTranslator, data: bytes, sizes: Callable[[], int]) -> bytes:
    """Feed ``data`` in pieces of ``sizes()`` bytes; what the client gets."""
    assert t.response_body_mode(200, STREAM_HEAD) == "streamed"
    head = t.response_headers(200, STREAM_HEAD)
    assert head.set["content-type"] == "text/event-stream"
    assert "content-length" in head.remove
    out = bytearray()
    pos = 0
    while pos < len(data):
        size = sizes()
        out += t.response_body(data[pos : pos + size], False)
        pos += size
    out += t.response_body(b"", True)
    return bytes(out)


def _random_sizes(seed: int) -> Callable[[], int]:
    rng = random.Random(seed)
    return lambda: rng.randint(1, 64)


SPLITS: list[tuple[str, Callable[[], int]]] = [
    ("one-byte", lambda: 1),
    ("two-bytes", lambda: 2),
    ("seven-bytes", lambda: 7),
    ("whole", lambda: 1 << 20),
    *((f"random-{seed}", _random_sizes(seed)) for seed in range(10)),
]


@pytest.mark.parametrize("sizes", [s for _, s in SPLITS], ids=[name for name, _ in SPLITS])
def test_recorded_stream_in_any_split_gives_the_expected_answer(sizes: Callable[[], int]) -> None:
    t = chat()
    converse({"stream": True, "stream_options": {"include_usage": True}, "tools": [COSINE_TOOL]}, t)
    events = stream(t, RECORDING.read_bytes(), sizes)
    assert events[-1] == "[DONE]"
    chunks: list[Json] = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("chatcmpl-req-1", chunks[0]["created"], "my-model", "chat.completion.chunk")
    }
    # With include_usage: usage null everywhere but in the last chunk, which has no choices.
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    got = accumulate(chunks)
    want = EXPECTED["expected_openai"]
    assert got["content"] == want["content"]
    assert got["tool_calls"] == want["tool_calls"]
    assert got["finish_reason"] == want["finish_reason"]
    assert {k: got["usage"][k] for k in want["usage"]} == want["usage"]
    assert t.usage == Usage(
        input_tokens=want["usage"]["prompt_tokens"],
        output_tokens=want["usage"]["completion_tokens"],
        total_tokens=want["usage"]["total_tokens"],
    )


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    t = chat()
    converse({"stream": True, "tools": [COSINE_TOOL]}, t)
    events = stream(t, RECORDING.read_bytes(), lambda: 100)
    chunks = events[:-1]
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert t.usage is not None
    assert t.usage.total_tokens == 461


def frames(*events: tuple[str, Json]) -> bytes:
    return b"".join(event_frame(kind, payload, "abc") for kind, payload in events)


START = ("messageStart", {"role": "assistant"})
STOP = ("messageStop", {"stopReason": "end_turn"})
METADATA = (
    "metadata",
    {"usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}, "metrics": {"latencyMs": 1}},
)


def text_delta(text: str, index: int = 0) -> tuple[str, Json]:
    return ("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": text}})


def tool_start(index: int, tool_id: str, name: str) -> tuple[str, Json]:
    start = {"toolUse": {"toolUseId": tool_id, "name": name}}
    return ("contentBlockStart", {"contentBlockIndex": index, "start": start})


def tool_delta(index: int, fragment: str) -> tuple[str, Json]:
    return (
        "contentBlockDelta",
        {"contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}},
    )


@pytest.mark.parametrize(
    ("exception_type", "error_type"),
    [
        ("throttlingException", "rate_limit_error"),
        ("modelStreamErrorException", "upstream_error"),
        ("validationException", "invalid_request_error"),
        ("internalServerException", "server_error"),
        ("serviceUnavailableException", "server_error"),
    ],
)
def test_exception_frame_ends_the_stream_with_an_error_event(
    exception_type: str, error_type: str
) -> None:
    t = chat()
    converse({"stream": True}, t)
    data = (
        frames(START, text_delta("Hel"))
        + exception_frame(exception_type, "It broke.")
        + frames(text_delta("lo"), STOP)  # nothing after the exception reaches the client
    )
    events = stream(t, data, lambda: 5)
    assert events[1]["choices"][0]["delta"] == {"content": "Hel"}
    assert events[-1] == {
        "error": {
            "message": "It broke.",
            "type": error_type,
            "param": None,
            "code": exception_type[0].upper() + exception_type[1:],
        }
    }
    assert "[DONE]" not in events
    assert len(events) == 3


@pytest.mark.parametrize(
    "data",
    [
        frames(START, text_delta("Hel")),  # no messageStop
        frames(START, text_delta("Hel"), STOP)[:-3],  # cut inside the last frame
        frames(START) + b"\x00\x00\x00\x20garbage-garbage-garbage-garbage",  # bad prelude CRC
    ],
    ids=["no-stop", "cut", "corrupt"],
)
def test_broken_streams_end_with_an_error_event(data: bytes) -> None:
    t = chat()
    converse({"stream": True}, t)
    events = stream(t, data, lambda: 3)
    assert events[-1]["error"]["type"] == "upstream_error"
    assert "[DONE]" not in events
    # The attempt is recorded as failed, with the error code the client saw.
    assert t.failure == events[-1]["error"]["code"]
    assert t.failure in ("stream_truncated", "bad_upstream_response")
    assert not t.complete


NOT_AN_OBJECT = encode_message({":message-type": "event", ":event-type": "messageStop"}, b"[]")


@pytest.mark.parametrize(
    ("data", "failure"),
    [
        (frames(START, text_delta("Hel")), "stream_truncated"),
        (frames(START, text_delta("Hel"), STOP)[:-3], "stream_truncated"),
        (
            frames(START) + b"\x00\x00\x00\x20garbage-garbage-garbage-garbage",
            "bad_upstream_response",
        ),
        (frames(START) + NOT_AN_OBJECT, "bad_upstream_response"),
        (
            frames(START) + exception_frame("throttlingException", "Slow down"),
            "ThrottlingException",
        ),
        (frames(START) + exception_frame("madeUpException", "?"), "upstream_error"),
    ],
    ids=["no-stop", "cut", "corrupt", "unreadable-event", "exception", "unknown-exception"],
)
def test_stream_failure_names_what_went_wrong(data: bytes, failure: str) -> None:
    t = chat()
    converse({"stream": True}, t)
    stream(t, data, lambda: 7)
    assert t.failure == failure


def test_a_complete_stream_is_complete_and_no_failure() -> None:
    t = chat()
    converse({"stream": True}, t)
    assert t.failure is None and not t.complete
    events = stream(t, frames(START, text_delta("Hi"), STOP, METADATA), lambda: 5)
    assert events[-1] == "[DONE]"
    assert t.complete and t.failure is None


@pytest.mark.parametrize("index", [[], {}, "0", None, True, 1.5])
def test_unreadable_block_index_of_a_tool_call_is_malformed_output(index: Any) -> None:
    t = chat()
    converse({"stream": True, "tools": [COSINE_TOOL]}, t)
    start = {"toolUse": {"toolUseId": "tu0", "name": "cosine"}}
    data = frames(START, ("contentBlockStart", {"contentBlockIndex": index, "start": start}))
    events = stream(t, data, lambda: 9)
    assert events[-1]["error"]["code"] == "bad_upstream_response"
    assert t.failure == "bad_upstream_response"
    assert "[DONE]" not in events


@pytest.mark.parametrize("index", [[], {}, "0", None])
def test_tool_input_of_an_unreadable_block_index_is_dropped(index: Any) -> None:
    t = chat()
    converse({"stream": True, "tools": [COSINE_TOOL]}, t)
    bad = ("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": "{"}}})
    data = frames(
        START,
        tool_start(0, "tu0", "cosine"),
        tool_delta(0, '{"x": 1}'),
        bad,
        ("messageStop", {"stopReason": "tool_use"}),
        METADATA,
    )
    events = stream(t, data, lambda: 9)
    got = accumulate(events[:-1])
    assert [c["function"]["arguments"] for c in got["tool_calls"]] == ['{"x": 1}']
    assert events[-1] == "[DONE]" and t.failure is None


def test_cut_stream_counts_what_the_deltas_said() -> None:
    t = chat()
    converse({"stream": True}, t)
    stream(t, frames(START, text_delta("a"), text_delta("b"), text_delta("c")), lambda: 4)
    assert t.usage is None
    assert t.output_tokens("anthropic.claude-3-5-sonnet") == 1  # "abc" at 3.5 characters
    assert t.output_tokens("gpt-4o") == 1  # "abc": one cl100k token


def test_stream_json_answer_and_dropped_parallel_calls() -> None:
    t = chat()
    converse(
        {
            "stream": True,
            "response_format": SCHEMA_FORMAT,
            "tools": [COSINE_TOOL],
            "parallel_tool_calls": False,
        },
        t,
    )
    data = frames(
        START,
        tool_start(0, "tu0", "Weather"),
        tool_delta(0, '{"city": "Pa'),
        tool_delta(0, 'ris", "celsius": 21.5}'),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "tool_use"}),
        METADATA,
    )
    events = stream(t, data, lambda: 11)
    got = accumulate(events[:-1])
    assert Weather.model_validate_json(got["content"]) == Weather(city="Paris", celsius=21.5)
    assert got["tool_calls"] == []
    assert got["finish_reason"] == "stop"

    t = chat()
    converse({"stream": True, "tools": [COSINE_TOOL], "parallel_tool_calls": False}, t)
    data = frames(
        START,
        tool_start(0, "tu0", "cosine"),
        tool_delta(0, '{"x": 1}'),
        tool_start(1, "tu1", "cosine"),
        tool_delta(1, '{"x": 2}'),
        ("messageStop", {"stopReason": "tool_use"}),
        METADATA,
    )
    got = accumulate(stream(t, data, lambda: 1)[:-1])
    assert [(c["id"], c["function"]["arguments"]) for c in got["tool_calls"]] == [
        ("tu0", '{"x": 1}')
    ]
    assert got["finish_reason"] == "tool_calls"


def test_stream_reasoning_and_unknown_events() -> None:
    t = chat()
    converse({"stream": True}, t)
    reasoning = (
        "contentBlockDelta",
        {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Thinking"}}},
    )
    data = frames(START, reasoning, ("somethingNew", {"x": 1}), text_delta("Hi", 1), STOP, METADATA)
    events = stream(t, data, lambda: 9)
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Thinking"},
        {"content": "Hi"},
        {},
    ]


def test_conformance_corpus_is_where_the_fake_expects_it() -> None:
    assert (CONFORMANCE / "README.md").is_file()
