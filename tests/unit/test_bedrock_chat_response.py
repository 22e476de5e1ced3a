"""Converse's answer (one JSON document) -> OpenAI's chat completion."""

from __future__ import annotations

import orjson
import pytest

from extproc.translate.bedrock.chat import BedrockChat
from extproc.usage import Usage
from tests.bedrock_cases import COSINE_TOOL, HEAD, SCHEMA_FORMAT, Json, Weather, chat, converse

# --- chat responses -----------------------------------------------------------------------------


def respond(t: BedrockChat, doc: Json, status: int = 200, head: Json = HEAD) -> Json:
    assert t.response_body_mode(status, head) == "buffered"
    t.response_headers(status, head)
    result: Json = orjson.loads(t.response_body(orjson.dumps(doc), True))
    return result


def converse_response(*blocks: Json, stop: str = "end_turn", usage: Json | None = None) -> Json:
    return {
        "output": {"message": {"role": "assistant", "content": list(blocks)}},
        "stopReason": stop,
        "usage": usage or {"inputTokens": 10, "outputTokens": 3, "totalTokens": 13},
        "metrics": {"latencyMs": 5},
    }


def test_text_response() -> None:
    t = chat()
    converse({}, t)
    head = t.response_headers(200, HEAD)
    assert head.set == {"content-type": "application/json"}
    assert head.remove == ["content-length"]
    assert head.status is None
    doc = respond(t, converse_response({"text": "Hello "}, {"text": "there."}))
    assert doc["id"] == "chatcmpl-req-1"
    assert doc["object"] == "chat.completion"
    assert doc["model"] == "my-model"
    assert isinstance(doc["created"], int)
    assert doc["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert doc["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert t.usage == Usage(input_tokens=10, output_tokens=3, total_tokens=13)
    assert t.response_model is None
    assert t.output_tokens("model") == 3  # "Hello there." at 4 characters per token


def test_id_is_generated_without_a_request_id() -> None:
    t = chat()
    converse({}, t)
    doc = respond(t, converse_response({"text": "x"}), head={"content-type": "application/json"})
    assert doc["id"].startswith("chatcmpl-")
    assert len(doc["id"]) > len("chatcmpl-")


def test_cached_tokens_count_as_prompt_tokens() -> None:
    t = chat()
    converse({}, t)
    usage = {
        "inputTokens": 4,
        "outputTokens": 6,
        "cacheReadInputTokens": 100,
        "cacheWriteInputTokens": 20,
        "totalTokens": 130,
    }
    doc = respond(t, converse_response({"text": "x"}, usage=usage))
    assert doc["usage"] == {
        "prompt_tokens": 124,
        "completion_tokens": 6,
        "total_tokens": 130,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_tool_calls_response() -> None:
    t = chat()
    converse({"tools": [COSINE_TOOL]}, t)
    doc = respond(
        t,
        converse_response(
            {"text": "Calling."},
            {"toolUse": {"toolUseId": "tu1", "name": "cosine", "input": {"x": 7}}},
            {"toolUse": {"toolUseId": "tu2", "name": "cosine", "input": {"x": 8}}},
            stop="tool_use",
        ),
    )
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Calling."
    assert choice["message"]["tool_calls"] == [
        {"id": "tu1", "type": "function", "function": {"name": "cosine", "arguments": '{"x":7}'}},
        {"id": "tu2", "type": "function", "function": {"name": "cosine", "arguments": '{"x":8}'}},
    ]


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    t = chat()
    converse({"tools": [COSINE_TOOL], "parallel_tool_calls": False}, t)
    doc = respond(
        t,
        converse_response(
            {"toolUse": {"toolUseId": "tu1", "name": "cosine", "input": {"x": 7}}},
            {"toolUse": {"toolUseId": "tu2", "name": "cosine", "input": {"x": 8}}},
            stop="tool_use",
        ),
    )
    message = doc["choices"][0]["message"]
    assert [c["id"] for c in message["tool_calls"]] == ["tu1"]
    assert message["content"] is None


def test_answer_tool_input_is_the_content() -> None:
    t = chat()
    converse({"response_format": SCHEMA_FORMAT}, t)
    answer = {
        "toolUse": {
            "toolUseId": "tu",
            "name": "Weather",
            "input": {"city": "Paris", "celsius": 21.5},
        }
    }
    doc = respond(t, converse_response(answer, stop="tool_use"))
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    assert Weather.model_validate_json(choice["message"]["content"]) == Weather(
        city="Paris", celsius=21.5
    )


def test_reasoning_is_passed_on() -> None:
    t = chat()
    converse({}, t)
    thought = {"reasoningContent": {"reasoningText": {"text": "Hmm.", "signature": "s"}}}
    doc = respond(t, converse_response(thought, {"text": "42"}))
    assert doc["choices"][0]["message"]["reasoning_content"] == "Hmm."
    assert doc["choices"][0]["message"]["content"] == "42"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
        ("tool_use", "stop"),  # no tool call reached the client
        ("something_new", "stop"),
    ],
)
def test_finish_reasons(stop: str, finish: str) -> None:
    t = chat()
    converse({}, t)
    doc = respond(t, converse_response({"text": "x"}, stop=stop))
    assert doc["choices"][0]["finish_reason"] == finish


def test_a_readable_answer_is_complete_and_no_failure() -> None:
    t = chat()
    converse({}, t)
    assert not t.complete
    respond(t, converse_response({"text": "hi"}))
    assert t.complete and t.failure is None
