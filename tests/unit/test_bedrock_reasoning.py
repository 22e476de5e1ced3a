"""Reasoning on Bedrock: reasoning_effort and thinking per model family, Claude's constraints,
thinking blocks sent back and returned (whole answers and streams)."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.translate.bedrock.reasoning import ANSWER_ROOM, CLAUDE_BUDGETS, family
from tests.bedrock_cases import (
    COSINE_TOOL,
    SCHEMA_FORMAT,
    Json,
    accumulate,
    chat,
    converse,
    rejected,
)
from tests.unit.test_bedrock_chat_response import converse_response, respond
from tests.unit.test_bedrock_stream import METADATA, START, STOP, frames, stream

SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
SONNET_37_PROFILE = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
NOVA_2 = "us.amazon.nova-2-lite-v1:0"
GPT_OSS = "openai.gpt-oss-120b-1:0"
DEEPSEEK_R1 = "us.deepseek.r1-v1:0"
NOVA_PRO = "amazon.nova-pro-v1:0"


def extra(doc: Json, model: str) -> Json | None:
    """The additionalModelRequestFields the request gets."""
    body = converse(doc, chat(model))
    fields: Json | None = body.get("additionalModelRequestFields")
    return fields


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        (SONNET_4, "claude"),
        (SONNET_37_PROFILE, "claude"),
        (NOVA_2, "nova2"),
        (GPT_OSS, "gpt-oss"),
        (DEEPSEEK_R1, "deepseek-r1"),
        (NOVA_PRO, "other"),
        ("arn:aws:bedrock:us-east-1:123:provisioned-model/abc", "other"),
    ],
)
def test_families(model: str, kind: str) -> None:
    assert family(model) == kind


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high"])
def test_claude_effort_is_a_thinking_budget_with_room_for_the_answer(effort: str) -> None:
    body = converse({"reasoning_effort": effort}, chat(SONNET_4))
    budget = CLAUDE_BUDGETS[effort]
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": budget}
    }
    assert body["inferenceConfig"]["maxTokens"] == budget + ANSWER_ROOM
    assert CLAUDE_BUDGETS["minimal"] == 1024  # Anthropic's minimum


def test_claude_effort_keeps_a_client_limit_above_the_budget() -> None:
    body = converse({"reasoning_effort": "low", "max_completion_tokens": 5000}, chat(SONNET_4))
    assert body["inferenceConfig"]["maxTokens"] == 5000


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens"])
def test_claude_limit_at_or_below_the_budget_is_refused_by_name(field: str) -> None:
    error = rejected({"reasoning_effort": "low", field: 4096}, chat(SONNET_4))
    assert error.param == field
    assert "4096" in error.message


@pytest.mark.parametrize(
    ("doc", "param"),
    [
        ({"temperature": 0.2}, "temperature"),
        ({"top_p": 0.5}, "top_p"),
        ({"tool_choice": "required", "tools": [COSINE_TOOL]}, "tool_choice"),
        (
            {
                "tool_choice": {"type": "function", "function": {"name": "cosine"}},
                "tools": [COSINE_TOOL],
            },
            "tool_choice",
        ),
        ({"response_format": SCHEMA_FORMAT}, "response_format"),
    ],
)
def test_claude_thinking_refuses_what_anthropic_forbids(doc: Json, param: str) -> None:
    for thinking in ({"reasoning_effort": "low"}, {"thinking": {"type": "adaptive"}}):
        error = rejected({**thinking, **doc}, chat(SONNET_4))
        assert error.param == param


def test_claude_thinking_accepts_what_anthropic_allows() -> None:
    doc = {"reasoning_effort": "low", "temperature": 1, "top_p": 0.95, "tool_choice": "auto"}
    body = converse({**doc, "tools": [COSINE_TOOL]}, chat(SONNET_4))
    assert body["inferenceConfig"]["temperature"] == 1
    assert body["toolConfig"]["toolChoice"] == {"auto": {}}
    # Without thinking the same fields are free.
    assert converse({"temperature": 0.2}, chat(SONNET_4))["inferenceConfig"]["temperature"] == 0.2


def test_explicit_thinking_object_for_claude() -> None:
    thinking = {"type": "enabled", "budget_tokens": 2000}
    body = converse({"thinking": thinking, "max_tokens": 3000}, chat(SONNET_4))
    assert body["additionalModelRequestFields"] == {"thinking": thinking}
    assert body["inferenceConfig"]["maxTokens"] == 3000
    assert extra({"thinking": {"type": "adaptive"}}, SONNET_4) == {"thinking": {"type": "adaptive"}}
    disabled = {"thinking": {"type": "disabled"}, "temperature": 0.3}
    assert extra(disabled, SONNET_4) == {"thinking": {"type": "disabled"}}


@pytest.mark.parametrize(
    ("thinking", "param"),
    [
        ({"type": "enabled", "budget_tokens": 1023}, "thinking.budget_tokens"),
        ({"type": "enabled"}, "thinking.budget_tokens"),
        ({"type": "sometimes"}, "thinking.type"),
        ("on", "thinking.type"),
        ({"type": "adaptive", "budget_tokens": 2000}, "thinking.budget_tokens"),
    ],
)
def test_bad_thinking_objects_are_named(thinking: Any, param: str) -> None:
    assert rejected({"thinking": thinking}, chat(SONNET_4)).param == param


def test_thinking_is_for_claude_only_and_not_with_an_effort() -> None:
    error = rejected({"thinking": {"type": "adaptive"}}, chat(NOVA_2))
    assert error.param == "thinking"
    assert error.code == "unsupported_parameter"
    both = {"thinking": {"type": "adaptive"}, "reasoning_effort": "low"}
    assert rejected(both, chat(SONNET_4)).param == "reasoning_effort"


def test_claude_that_does_not_think_refuses_an_effort() -> None:
    error = rejected({"reasoning_effort": "low"})  # Claude 3.5 Sonnet
    assert error.param == "reasoning_effort"
    assert "does not think" in error.message


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_nova_2_reasoning_config(effort: str) -> None:
    assert extra({"reasoning_effort": effort}, NOVA_2) == {
        "reasoningConfig": {"type": "enabled", "maxReasoningEffort": effort}
    }


@pytest.mark.parametrize(
    ("doc", "param"),
    [
        ({"temperature": 0.5}, "temperature"),
        ({"top_p": 0.9}, "top_p"),
        ({"max_tokens": 100}, "max_tokens"),
    ],
)
def test_nova_2_high_effort_takes_no_sampling_or_limit(doc: Json, param: str) -> None:
    assert rejected({"reasoning_effort": "high", **doc}, chat(NOVA_2)).param == param
    assert extra({"reasoning_effort": "medium", **doc}, NOVA_2) is not None


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_gpt_oss_reasoning_effort(effort: str) -> None:
    assert extra({"reasoning_effort": effort}, GPT_OSS) == {"reasoning_effort": effort}


@pytest.mark.parametrize(
    ("model", "effort"),
    [
        (NOVA_2, "minimal"),
        (GPT_OSS, "minimal"),
        (DEEPSEEK_R1, "high"),
        (DEEPSEEK_R1, "none"),
        (NOVA_PRO, "low"),
    ],
)
def test_efforts_a_model_cannot_take_are_named(model: str, effort: str) -> None:
    error = rejected({"reasoning_effort": effort}, chat(model))
    assert error.param == "reasoning_effort"
    assert error.code == "unsupported_parameter"


def test_unknown_effort_is_a_400() -> None:
    assert rejected({"reasoning_effort": "max"}, chat(SONNET_4)).param == "reasoning_effort"


def test_none_sends_nothing() -> None:
    for model in (SONNET_4, NOVA_2, GPT_OSS, NOVA_PRO):
        assert extra({"reasoning_effort": "none"}, model) is None


# --- thinking blocks sent back -------------------------------------------------------------------

THINKING = {"type": "thinking", "thinking": "Let me think.", "signature": "sig=="}
REDACTED = {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"}
CALL = {"id": "tu1", "type": "function", "function": {"name": "cosine", "arguments": '{"x": 1}'}}


def test_thinking_blocks_go_back_first_and_unchanged() -> None:
    messages = [
        {"role": "user", "content": "cos 1?"},
        {
            "role": "assistant",
            "content": "Calling.",
            "tool_calls": [CALL],
            "thinking_blocks": [THINKING, REDACTED],
            "reasoning_content": "Let me think.",
        },
        {"role": "tool", "tool_call_id": "tu1", "content": "0.54"},
    ]
    body = converse(
        {"messages": messages, "tools": [COSINE_TOOL], "reasoning_effort": "low"}, chat(SONNET_4)
    )
    assert body["messages"][1]["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "Let me think.", "signature": "sig=="}}},
        {"reasoningContent": {"redactedContent": "ZW5jcnlwdGVk"}},
        {"text": "Calling."},
        {"toolUse": {"toolUseId": "tu1", "name": "cosine", "input": {"x": 1}}},
    ]


@pytest.mark.parametrize(
    ("blocks", "param"),
    [
        ("x", "messages[1].thinking_blocks"),
        ([{"type": "thought"}], "messages[1].thinking_blocks[0].type"),
        ([{"type": "thinking"}], "messages[1].thinking_blocks[0].thinking"),
        (
            [{"type": "thinking", "thinking": "t", "signature": 1}],
            "messages[1].thinking_blocks[0].signature",
        ),
        ([{"type": "redacted_thinking", "data": ""}], "messages[1].thinking_blocks[0].data"),
    ],
)
def test_bad_thinking_blocks_are_named(blocks: Any, param: str) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "x", "thinking_blocks": blocks},
        {"role": "user", "content": "again"},
    ]
    assert rejected({"messages": messages}).param == param


# --- thinking blocks returned --------------------------------------------------------------------


def test_answer_carries_thinking_blocks_with_signature_and_redacted() -> None:
    t = chat(SONNET_4)
    converse({"reasoning_effort": "low"}, t)
    doc = respond(
        t,
        converse_response(
            {"reasoningContent": {"reasoningText": {"text": "Hmm.", "signature": "s1"}}},
            {"reasoningContent": {"redactedContent": "cmVk"}},
            {"text": "42"},
        ),
    )
    message = doc["choices"][0]["message"]
    assert message["reasoning_content"] == "Hmm."
    assert message["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Hmm.", "signature": "s1"},
        {"type": "redacted_thinking", "data": "cmVk"},
    ]
    assert message["content"] == "42"


def test_answer_without_reasoning_has_no_thinking_blocks() -> None:
    t = chat()
    converse({}, t)
    message = respond(t, converse_response({"text": "42"}))["choices"][0]["message"]
    assert "thinking_blocks" not in message and "reasoning_content" not in message


def _delta(index: int, reasoning: Json) -> tuple[str, Json]:
    return (
        "contentBlockDelta",
        {"contentBlockIndex": index, "delta": {"reasoningContent": reasoning}},
    )


def _stop(index: int) -> tuple[str, Json]:
    return ("contentBlockStop", {"contentBlockIndex": index})


def test_stream_sends_each_thinking_block_whole_when_it_ends() -> None:
    t = chat(SONNET_4)
    converse({"stream": True, "reasoning_effort": "low"}, t)
    text = ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"text": "42"}})
    data = frames(
        START,
        _delta(0, {"text": "Let me "}),
        _delta(0, {"text": "think."}),
        _delta(0, {"signature": "sig"}),
        _delta(0, {"signature": "=="}),
        _stop(0),
        _delta(1, {"redactedContent": "cmVk"}),
        _stop(1),
        text,
        _stop(2),
        STOP,
        METADATA,
    )
    events = stream(t, data, lambda: 5)
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Let me "},
        {"reasoning_content": "think."},
        {
            "thinking_blocks": [
                {"type": "thinking", "thinking": "Let me think.", "signature": "sig=="}
            ]
        },
        {"thinking_blocks": [{"type": "redacted_thinking", "data": "cmVk"}]},
        {"content": "42"},
        {},
    ]
    assert accumulate(events[:-1])["content"] == "42"
