"""OpenAI chat requests -> Anthropic Messages requests: one test (at least) per mapped row of
the field table, and the request line the translator writes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc.translate.anthropic.fields import CHAT_RULES, THINKING_BUDGETS
from tests.anthropic_cases import DEFAULT_MAX_TOKENS, SONNET, Json, chat, messages, rejected
from tests.bedrock_cases import COSINE_TOOL, PNG, SCHEMA_FORMAT, Weather

MAPPED = {name for name, rule in CHAT_RULES.items() if rule.disposition == "mapped"}


def user(content: Any) -> Json:
    return {"role": "user", "content": content}


def test_the_mapped_rows_are_the_ones_tested_here() -> None:
    assert {
        "messages",
        "model",
        "stream",
        "stream_options",
        "max_completion_tokens",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "user",
        "safety_identifier",
    } == MAPPED


def test_the_request_line_and_headers() -> None:
    t = chat()
    upstream = t.request(orjson.dumps({"model": "my-claude", "messages": [user("hi")]}))
    assert upstream.path == "/v1/messages"
    assert upstream.headers == {"content-type": "application/json", "accept": "application/json"}


# --- messages -----------------------------------------------------------------------------------


def test_messages_system_and_developer_become_system_blocks() -> None:
    body = messages(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                user("hi"),
            ]
        }
    )
    assert body["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Be kind."},
    ]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_messages_images_data_urls_and_https_urls() -> None:
    parts = [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.webp"}},
    ]
    blocks = messages({"messages": [user(parts)]})["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG.partition(",")[2]},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/a.webp"},
    }
    error = rejected(
        {"messages": [user([{"type": "image_url", "image_url": {"url": "http://x/a.png"}}])]}
    )
    assert error.param == "messages[0].content[0].image_url.url"
    audio = rejected({"messages": [user([{"type": "input_audio", "input_audio": {}}])]})
    assert audio.param == "messages[0].content[0].type"


def test_messages_tool_calls_and_results_alternate_with_results_first() -> None:
    call = {
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "cosine", "arguments": '{"x": 1}'},
    }
    body = messages(
        {
            "messages": [
                user("cos 1?"),
                {"role": "assistant", "content": "Let me see.", "tool_calls": [call]},
                user("quickly"),
                {"role": "tool", "tool_call_id": "toolu_1", "content": "0.54"},
            ],
            "tools": [COSINE_TOOL],
        }
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "cos 1?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me see."},
                {"type": "tool_use", "id": "toolu_1", "name": "cosine", "input": {"x": 1}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "0.54"}]},
                {"type": "text", "text": "quickly"},
            ],
        },
    ]  # fmt: skip


def test_messages_blank_text_is_dropped_and_system_alone_is_a_400() -> None:
    body = messages(
        {"messages": [user("hi"), {"role": "assistant", "content": "  "}, user("there")]}
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}],
        }
    ]
    error = rejected({"messages": [{"role": "system", "content": "alone"}]})
    assert error.param == "messages"
    assert (
        rejected({"messages": [{"role": "narrator", "content": "x"}]}).param == "messages[0].role"
    )


def test_messages_cache_control_on_parts_system_and_tools_passes_on() -> None:
    ephemeral = {"type": "ephemeral"}
    tool = {**COSINE_TOOL, "cache_control": ephemeral}
    body = messages(
        {
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "rules", "cache_control": ephemeral}]},
                user([{"type": "text", "text": "doc", "cache_control": ephemeral}]),
            ],
            "tools": [tool],
        }
    )  # fmt: skip
    assert body["system"] == [{"type": "text", "text": "rules", "cache_control": ephemeral}]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "doc", "cache_control": ephemeral}
    ]
    assert body["tools"][0]["cache_control"] == ephemeral
    bad = rejected({"messages": [user([{"type": "text", "text": "d", "cache_control": "yes"}])]})
    assert bad.param == "messages[0].content[0].cache_control"


# --- model, stream, limits, sampling ------------------------------------------------------------


def test_model_is_the_upstream_model() -> None:
    assert messages({})["model"] == SONNET


def test_stream_and_stream_options() -> None:
    assert "stream" not in messages({})
    t = chat(stream=True, include_usage=True)
    body = messages({"stream": True, "stream_options": {"include_usage": True}}, t)
    assert body["stream"] is True
    assert (
        t.request(orjson.dumps({"model": "m", "messages": [user("x")], "stream": True})).headers[
            "accept"
        ]
        == "text/event-stream"
    )
    assert rejected({"stream": "yes"}).param == "stream"


def test_max_tokens_is_required_by_anthropic_so_it_defaults() -> None:
    assert messages({})["max_tokens"] == DEFAULT_MAX_TOKENS
    assert messages({"max_tokens": 20})["max_tokens"] == 20
    assert messages({"max_completion_tokens": 30, "max_tokens": 20})["max_tokens"] == 30
    assert rejected({"max_completion_tokens": 0}).param == "max_completion_tokens"


def test_temperature_top_p_stop_user() -> None:
    body = messages({"temperature": 0.3, "top_p": 0.9, "stop": "END", "user": "u-1"})
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.3, 0.9, ["END"])
    assert body["metadata"] == {"user_id": "u-1"}
    assert messages({"stop": ["a", "b"]})["stop_sequences"] == ["a", "b"]
    assert messages({"safety_identifier": "s-1"})["metadata"] == {"user_id": "s-1"}
    assert messages({"user": "u", "safety_identifier": "s"})["metadata"] == {"user_id": "u"}
    assert rejected({"temperature": "hot"}).param == "temperature"
    assert rejected({"stop": [1]}).param == "stop"


# --- tools --------------------------------------------------------------------------------------


def test_tools_become_input_schemas() -> None:
    body = messages({"tools": [COSINE_TOOL]})
    function = COSINE_TOOL["function"]
    assert body["tools"] == [
        {
            "name": "cosine",
            "input_schema": function.get("parameters"),
            "description": "Cosine of x",
        }
    ]
    assert "tool_choice" not in body
    assert rejected({"tools": [{"type": "custom", "custom": {}}]}).param == "tools[0].type"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "cosine"}}, {"type": "tool", "name": "cosine"}),
    ],
)
def test_tool_choice(choice: Any, expected: Json) -> None:
    body = messages({"tools": [COSINE_TOOL], "tool_choice": choice})
    assert body["tool_choice"] == expected
    assert [tool["name"] for tool in body["tools"]] == ["cosine"]  # `none` keeps the history valid


def test_tool_choice_without_tools() -> None:
    assert "tool_choice" not in messages({"tool_choice": "none"})
    assert rejected({"tool_choice": "required"}).param == "tool_choice"


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    body = messages({"tools": [COSINE_TOOL], "parallel_tool_calls": False})
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    named = {"type": "function", "function": {"name": "cosine"}}
    body = messages({"tools": [COSINE_TOOL], "tool_choice": named, "parallel_tool_calls": False})
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "cosine",
        "disable_parallel_tool_use": True,
    }
    assert "tool_choice" not in messages({"parallel_tool_calls": False})


# --- response_format ----------------------------------------------------------------------------


def test_response_format_json_schema_is_a_forced_tool() -> None:
    body = messages({"response_format": SCHEMA_FORMAT})
    assert body["tools"] == [
        {
            "name": "Weather",
            "input_schema": Weather.model_json_schema(),
            "description": body["tools"][0]["description"],
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "Weather"}
    with_tools = messages({"response_format": SCHEMA_FORMAT, "tools": [COSINE_TOOL]})
    assert with_tools["tool_choice"] == {"type": "any"}
    assert [tool["name"] for tool in with_tools["tools"]] == ["cosine", "Weather"]


def test_response_format_json_object_and_text() -> None:
    body = messages({"response_format": {"type": "json_object"}})
    assert body["tools"][0]["input_schema"] == {"type": "object"}
    assert messages({"response_format": {"type": "text"}}) == messages({})
    assert rejected({"response_format": {"type": "xml"}}).param == "response_format.type"


# --- reasoning_effort ---------------------------------------------------------------------------


@pytest.mark.parametrize(("effort", "budget"), THINKING_BUDGETS.items())
def test_reasoning_effort_is_a_thinking_budget(effort: str, budget: int) -> None:
    body = messages({"reasoning_effort": effort, "max_completion_tokens": 32000})
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] == 32000


def test_reasoning_budget_stays_below_max_tokens() -> None:
    assert (
        messages({"reasoning_effort": "high", "max_tokens": 2000})["thinking"]["budget_tokens"]
        == 1999
    )
    # No client limit: the default is raised over the budget.
    body = messages({"reasoning_effort": "high"})
    assert body["max_tokens"] == THINKING_BUDGETS["high"] + DEFAULT_MAX_TOKENS
    assert messages({"reasoning_effort": "low"})["max_tokens"] == DEFAULT_MAX_TOKENS
    assert rejected({"reasoning_effort": "low", "max_tokens": 1024}).param == "max_tokens"
    assert "thinking" not in messages({"reasoning_effort": "none"})
    assert rejected({"reasoning_effort": "extreme"}).param == "reasoning_effort"


def test_thinking_refuses_forced_tools_and_temperature() -> None:
    forced = rejected({"reasoning_effort": "low", "response_format": SCHEMA_FORMAT})
    assert forced.param == "reasoning_effort"
    assert (
        rejected(
            {"reasoning_effort": "low", "tools": [COSINE_TOOL], "tool_choice": "required"}
        ).param
        == "reasoning_effort"
    )
    assert rejected({"reasoning_effort": "low", "temperature": 0.5}).param == "temperature"
    assert messages({"reasoning_effort": "low", "temperature": 1})["temperature"] == 1
