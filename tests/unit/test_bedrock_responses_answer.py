"""Converse's answers -> Responses documents, and ConverseStream -> the typed events, in any
split; every document and event is checked against the OpenAI SDK's own models."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from extproc.errors import GatewayError
from extproc.translate.bedrock.responses import BedrockResponses
from extproc.usage import Usage
from tests.bedrock_cases import HEAD, Json
from tests.fakes.bedrock import event_frame, exception_frame
from tests.unit.test_bedrock_responses_request import WEATHER, responses
from tests.unit.test_bedrock_stream import fed

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
USAGE = {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}


def translator(doc: Json | None = None, model: str | None = None) -> BedrockResponses:
    t = responses(model) if model else responses()
    t.request(orjson.dumps({"model": "m", "input": "hi", **(doc or {})}))
    return t


def answer(content: list[Json], stop: str = "end_turn", doc: Json | None = None) -> Json:
    t = translator(doc)
    t.response_headers(200, HEAD)
    body = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {**USAGE, "cacheReadInputTokens": 4, "cacheWriteInputTokens": 2},
    }
    result: Json = orjson.loads(t.response_body(orjson.dumps(body), True))
    Response.model_validate(result)
    return result


# --- answers ------------------------------------------------------------------------------------


def test_text_answer() -> None:
    doc = answer([{"text": "Hello"}], doc={"metadata": {"k": "v"}, "temperature": 0.5})
    assert doc["id"] == "resp_req1" and doc["object"] == "response"
    assert (doc["status"], doc["incomplete_details"], doc["model"]) == (
        "completed",
        None,
        "my-model",
    )
    (item,) = doc["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["id"].startswith("msg_") and item["status"] == "completed"
    assert item["content"] == [{"type": "output_text", "text": "Hello", "annotations": []}]
    assert doc["usage"] == {
        "input_tokens": 16,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 2},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 21,
    }
    assert (doc["metadata"], doc["temperature"], doc["store"]) == ({"k": "v"}, 0.5, False)
    assert doc["tools"] == [] and doc["tool_choice"] == "auto"
    assert doc["text"] == {"format": {"type": "text"}} and doc["parallel_tool_calls"] is True


def test_the_tier_that_served_is_echoed() -> None:
    t = translator({"service_tier": "auto"})
    t.response_headers(200, HEAD)
    body = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}},
        "stopReason": "end_turn",
        "serviceTier": {"type": "flex"},
    }
    assert orjson.loads(t.response_body(orjson.dumps(body), True))["service_tier"] == "flex"


def test_function_calls_and_their_order() -> None:
    use = {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}
    doc = answer(
        [{"text": "Let me look."}, {"toolUse": use}, {"toolUse": {**use, "toolUseId": "t2"}}],
        "tool_use",
        {"tools": [WEATHER]},
    )
    message, first, second = doc["output"]
    assert message["content"][0]["text"] == "Let me look."
    assert first["type"] == "function_call" and first["id"].startswith("fc_")
    assert (first["call_id"], first["name"]) == ("tooluse_1", "get_weather")
    assert orjson.loads(first["arguments"]) == {"city": "Paris"}
    assert second["call_id"] == "t2" and doc["status"] == "completed"
    assert doc["tools"] == [WEATHER]
    single = answer(
        [{"toolUse": use}, {"toolUse": use}], "tool_use", {"parallel_tool_calls": False}
    )
    assert len(single["output"]) == 1 and single["parallel_tool_calls"] is False


def test_the_answer_tools_input_is_the_text() -> None:
    text = {"format": {"type": "json_schema", "name": "W", "schema": {"type": "object"}}}
    use = {"toolUseId": "t", "name": "W", "input": {"city": "Paris"}}
    doc = answer([{"toolUse": use}], "tool_use", {"text": text})
    (item,) = doc["output"]
    assert item["type"] == "message"
    assert orjson.loads(item["content"][0]["text"]) == {"city": "Paris"}
    assert doc["text"] == text


def test_reasoning_items_carry_the_signature_or_the_redacted_data() -> None:
    doc = answer(
        [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "c2ln"}}},
            {"reasoningContent": {"redactedContent": "ZGF0YQ=="}},
            {"text": "Done."},
        ]
    )
    thought, redacted, _ = doc["output"]
    assert thought["type"] == "reasoning" and thought["id"].startswith("rs_")
    assert thought["summary"] == []
    assert thought["content"] == [{"type": "reasoning_text", "text": "hmm"}]
    assert thought["encrypted_content"] == "c2ln"
    assert redacted["content"] == [] and redacted["encrypted_content"] == "redacted:ZGF0YQ=="


def test_reasoning_items_round_trip_to_the_same_blocks() -> None:
    blocks = [
        {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "c2ln"}}},
        {"reasoningContent": {"redactedContent": "ZGF0YQ=="}},
        {"text": "Done."},
    ]
    output = answer(blocks)["output"]
    t = responses()
    sent = t.request(
        orjson.dumps({"model": "m", "input": [{"role": "user", "content": "hi"}, *output]})
    )
    assert sent.body is not None
    assert orjson.loads(sent.body)["messages"][1]["content"] == blocks


@pytest.mark.parametrize(
    ("stop", "status", "reason"),
    [
        ("max_tokens", "incomplete", "max_output_tokens"),
        ("model_context_window_exceeded", "incomplete", "max_output_tokens"),
        ("content_filtered", "incomplete", "content_filter"),
        ("guardrail_intervened", "incomplete", "content_filter"),
        ("stop_sequence", "completed", None),
    ],
)
def test_status_from_the_stop_reason(stop: str, status: str, reason: str | None) -> None:
    doc = answer([{"text": "Hel"}], stop)
    assert doc["status"] == status
    assert doc["incomplete_details"] == ({"reason": reason} if reason else None)


def test_an_unreadable_answer_is_a_502_and_bedrocks_error_is_openais() -> None:
    t = translator()
    t.response_headers(200, HEAD)
    with pytest.raises(GatewayError) as raised:
        t.response_body(b'{"output": 1}', True)
    assert raised.value.status == 502
    t = translator()
    head = t.response_headers(429, {"x-amzn-errortype": "ThrottlingException:x"})
    assert head.status is None
    error = orjson.loads(t.response_body(b'{"message": "slow down"}', True))["error"]
    assert (error["type"], error["message"]) == ("rate_limit_error", "slow down")


# --- streams ------------------------------------------------------------------------------------


def frames(*events: tuple[str, Json]) -> bytes:
    return b"".join(event_frame(kind, payload, "pad") for kind, payload in events)


def text_stream(*texts: str, stop: str = "end_turn") -> bytes:
    return frames(
        ("messageStart", {"role": "assistant"}),
        *(("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}}) for t in texts),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": stop}),
        ("metadata", {"usage": USAGE, "metrics": {"latencyMs": 1}}),
    )


def feed(t: BedrockResponses, data: bytes, sizes: Callable[[], int]) -> list[Json]:
    return parse(fed(t, data, sizes))


def parse(raw: bytes) -> list[Json]:
    """The events, each checked: its `event:` line names its type, the SDK reads it."""
    events = []
    for block in raw.decode().removesuffix("\n\n").split("\n\n"):
        head, data = block.split("\n")
        doc = orjson.loads(data.removeprefix("data: "))
        assert head == f"event: {doc['type']}"
        EVENTS.validate_python(doc)
        events.append(doc)
    return events


def _sizes(seed: int) -> Callable[[], int]:
    rng = random.Random(seed)
    return lambda: rng.randint(1, 40)


@pytest.mark.parametrize("sizes", [lambda: 1, lambda: 7, _sizes(1), _sizes(2), lambda: 10**6])
def test_a_text_stream_in_any_split(sizes: Callable[[], int]) -> None:
    t = stream_translator()
    events = feed(t, text_stream("Hel", "lo", " there"), sizes)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[7]["text"] == "Hello there"
    final = events[-1]["response"]
    Response.model_validate(final)
    assert final["status"] == "completed"
    assert final["output"] == [events[-2]["item"]]
    assert final["usage"]["input_tokens"] == 10 and final["usage"]["total_tokens"] == 15
    assert {e["response"]["id"] for e in events if "response" in e} == {"resp_req1"}
    assert t.usage == Usage(input_tokens=10, output_tokens=5, total_tokens=15)
    assert t.complete and t.failure is None


def stream_translator(doc: Json | None = None, model: str | None = None) -> BedrockResponses:
    return translator({"stream": True, **(doc or {})}, model)


def test_a_tool_call_and_reasoning_stream() -> None:
    start = {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather"}}
    data = frames(
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hm"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "m"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2ln"}}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("contentBlockStart", {"contentBlockIndex": 1, "start": start}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city"'}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": ': "Paris"}'}}}),
        ("contentBlockStop", {"contentBlockIndex": 1}),
        ("messageStop", {"stopReason": "tool_use"}),
        ("metadata", {"usage": USAGE}),
    )  # fmt: skip
    events = feed(stream_translator({"tools": [WEATHER]}), data, _sizes(3))
    kinds = [e["type"] for e in events]
    assert kinds[2:14] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    thought, call = events[-1]["response"]["output"]
    assert thought["content"] == [{"type": "reasoning_text", "text": "hmm"}]
    assert thought["encrypted_content"] == "c2ln"
    assert call["call_id"] == "tooluse_1" and call["arguments"] == '{"city": "Paris"}'
    assert events[12]["arguments"] == '{"city": "Paris"}'
    assert events[9]["item"]["arguments"] == "" and events[9]["output_index"] == 1


def test_max_tokens_ends_with_response_incomplete() -> None:
    events = feed(stream_translator(), text_stream("Hel", stop="max_tokens"), _sizes(4))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_an_exception_frame_is_response_failed() -> None:
    data = text_stream("Hel")
    cut = data.index(event_frame("contentBlockStop", {"contentBlockIndex": 0}, "pad"))
    t = stream_translator()
    events = feed(t, data[:cut] + exception_frame("throttlingException", "slow"), _sizes(5))
    last = events[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"] == {
        "code": "rate_limit_exceeded",
        "message": "ThrottlingException: slow",
    }
    assert t.failure == "ThrottlingException" and not t.complete
    assert t.output_tokens("my-model") >= 1


@pytest.mark.parametrize("cut", [10, -40])
def test_a_cut_stream_ends_with_the_error_event(cut: int) -> None:
    t = stream_translator()
    events = feed(t, text_stream("Hel", "lo")[:cut], _sizes(6))
    assert events[-1]["type"] == "error"
    assert events[-1]["code"] == "stream_truncated"
    assert events[-1]["sequence_number"] == len(events) - 1
    assert t.failure == "stream_truncated" and not t.complete


def test_a_stream_that_ends_without_metadata_still_completes() -> None:
    data = text_stream("Hi")
    cut = data.index(event_frame("metadata", {"usage": USAGE, "metrics": {"latencyMs": 1}}, "pad"))
    t = stream_translator()
    events = feed(t, data[:cut], lambda: 5)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"] is None
    assert t.complete and t.usage is None
