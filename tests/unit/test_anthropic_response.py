"""Anthropic's answers -> OpenAI's: a whole Message, its usage and finish reason, its errors."""

from __future__ import annotations

import orjson
import pytest

from extproc.errors import GatewayError
from extproc.translate.anthropic.chat import AnthropicChat
from extproc.usage import Usage
from tests.anthropic_cases import HEAD, SONNET, Json, chat, message, messages
from tests.bedrock_cases import SCHEMA_FORMAT


def answer(t: AnthropicChat, status: int, doc: Json | bytes) -> tuple[int, Json]:
    """(status the client gets, body) for Anthropic's answer ``doc``."""
    assert t.response_body_mode(status, HEAD) == "buffered"
    head = t.response_headers(status, HEAD)
    assert head.set["content-type"] == "application/json"
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    half = len(body) // 2
    out = t.response_body(body[:half], False) + t.response_body(body[half:], True)
    return head.status or status, orjson.loads(out)


def test_text_thinking_and_usage() -> None:
    t = chat()
    messages({}, t)
    doc = message(
        [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "text", "text": "Hello"},
            {"type": "text", "text": " there"},
        ],
        cache_read_input_tokens=20,
        cache_creation_input_tokens=30,
    )
    status, completion = answer(t, 200, doc)
    assert status == 200
    assert completion["object"] == "chat.completion" and completion["model"] == "my-claude"
    choice = completion["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Hello there",
        "refusal": None,
        "reasoning_content": "Let me think.",
    }
    assert choice["finish_reason"] == "stop"
    assert completion["usage"] == {
        "prompt_tokens": 60,
        "completion_tokens": 5,
        "total_tokens": 65,
        "prompt_tokens_details": {"cached_tokens": 20},
    }
    assert t.usage == Usage(60, 5, 65, cached_input_tokens=20, cache_write_input_tokens=30)
    assert t.response_model == SONNET and t.complete and t.failure is None


def test_tool_use_and_the_answer_tool() -> None:
    t = chat()
    messages({}, t)
    use = {"type": "tool_use", "id": "toolu_1", "name": "cosine", "input": {"x": 1}}
    _, completion = answer(t, 200, message([use], "tool_use"))
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "cosine", "arguments": '{"x":1}'},
        }
    ]
    t = chat()
    messages({"response_format": SCHEMA_FORMAT}, t)
    weather = {"type": "tool_use", "id": "toolu_2", "name": "Weather", "input": {"city": "Oslo"}}
    _, completion = answer(t, 200, message([weather], "tool_use"))
    choice = completion["choices"][0]
    assert choice["message"]["content"] == '{"city":"Oslo"}'
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
    ],
)
def test_stop_reasons(stop_reason: str | None, finish: str) -> None:
    t = chat()
    messages({}, t)
    doc = message([{"type": "text", "text": "x"}])
    doc["stop_reason"] = stop_reason
    assert answer(t, 200, doc)[1]["choices"][0]["finish_reason"] == finish


def test_an_unreadable_2xx_answer_is_a_502() -> None:
    for body in (b"not json", b"[]", orjson.dumps({"type": "message"})):
        t = chat()
        messages({}, t)
        t.response_body_mode(200, HEAD)
        with pytest.raises(GatewayError) as caught:
            t.response_body(body, True)
        assert caught.value.status == 502 and t.failure == "bad_upstream_response"


@pytest.mark.parametrize(
    ("status", "kind", "client_status", "openai_type"),
    [
        (400, "invalid_request_error", 400, "invalid_request_error"),
        (401, "authentication_error", 401, "authentication_error"),
        (403, "permission_error", 403, "permission_error"),
        (404, "not_found_error", 404, "not_found_error"),
        (413, "request_too_large", 413, "invalid_request_error"),
        (429, "rate_limit_error", 429, "rate_limit_error"),
        (500, "api_error", 500, "server_error"),
        (529, "overloaded_error", 503, "server_error"),
    ],
)
def test_errors_in_openai_shape(
    status: int, kind: str, client_status: int, openai_type: str
) -> None:
    t = chat()
    messages({}, t)
    doc = {"type": "error", "error": {"type": kind, "message": f"it went {kind}"}}
    got, body = answer(t, status, doc)
    assert got == client_status
    assert body["error"]["type"] == openai_type
    assert body["error"]["code"] == kind
    assert body["error"]["message"] == f"it went {kind}"
    assert t.usage is None and t.failure is None


def test_an_error_body_that_is_not_anthropic_s_keeps_its_text() -> None:
    t = chat()
    messages({}, t)
    got, body = answer(t, 502, b"<html>bad gateway</html>")
    assert got == 502
    assert body["error"] == {
        "message": "<html>bad gateway</html>",
        "type": "server_error",
        "param": None,
        "code": None,
    }
