"""The fake Bedrock is as rude as Converse about thinking and cache points."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.bedrock import FakeBedrock, check_converse
from tests.fakes.bedrock_rules import PromptCache, sign
from tests.fakes.server import Reject

Json = dict[str, Any]

THINKING = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
TOOL = {"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}
POINT = {"cachePoint": {"type": "default"}}


def body(**extra: object) -> Json:
    return {"messages": [{"role": "user", "content": [{"text": "hi"}]}], **extra}


def refused(doc: Json) -> str:
    with pytest.raises(Reject) as raised:
        check_converse(doc)
    assert raised.value.status == 400
    return str(raised.value.body)


def test_thinking_budget_rules() -> None:
    check_converse(body(additionalModelRequestFields=THINKING, inferenceConfig={"maxTokens": 2000}))
    low = {"thinking": {"type": "enabled", "budget_tokens": 1000}}
    assert "1024" in refused(
        body(additionalModelRequestFields=low, inferenceConfig={"maxTokens": 2000})
    )
    assert "max_tokens" in refused(body(additionalModelRequestFields=THINKING))
    over = {"maxTokens": 1024}
    assert "max_tokens" in refused(
        body(additionalModelRequestFields=THINKING, inferenceConfig=over)
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"inferenceConfig": {"maxTokens": 2000, "temperature": 0.5}},
        {"inferenceConfig": {"maxTokens": 2000, "topP": 0.5}},
        {
            "inferenceConfig": {"maxTokens": 2000},
            "toolConfig": {"tools": [TOOL], "toolChoice": {"any": {}}},
        },
    ],
)
def test_thinking_refuses_sampling_and_forced_tools(extra: Json) -> None:
    refused(body(additionalModelRequestFields=THINKING, **extra))


def _tool_conversation(assistant: list[Json]) -> Json:
    return {
        "messages": [
            {"role": "user", "content": [{"text": "go"}]},
            {"role": "assistant", "content": assistant},
            {
                "role": "user",
                "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "1"}]}}],
            },
        ],
        "toolConfig": {"tools": [TOOL]},
        "additionalModelRequestFields": THINKING,
        "inferenceConfig": {"maxTokens": 2000},
    }


def test_a_tool_turn_must_keep_its_signed_thinking() -> None:
    use = {"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}
    assert "thinking" in refused(_tool_conversation([use]))
    signed = {"reasoningContent": {"reasoningText": {"text": "hm", "signature": sign("hm")}}}
    check_converse(_tool_conversation([signed, use]))
    forged = {"reasoningContent": {"reasoningText": {"text": "hm!", "signature": sign("hm")}}}
    assert "signature" in refused(_tool_conversation([forged, use]))
    assert "redacted" in refused(
        _tool_conversation([{"reasoningContent": {"redactedContent": "eA=="}}, use])
    )


def test_cache_point_rules() -> None:
    check_converse(body(system=[{"text": "s"}, POINT], toolConfig={"tools": [TOOL, POINT]}))
    assert "first" in refused(body(system=[POINT, {"text": "s"}]))
    assert "first" in refused(body(toolConfig={"tools": [POINT, TOOL]}))
    content = [{"text": "a"}, POINT] * 5
    assert "at most 4" in refused({"messages": [{"role": "user", "content": content}]})
    bad = {"cachePoint": {"type": "forever"}}
    assert "default" in refused(body(system=[{"text": "s"}, bad]))


def test_prompt_cache_writes_then_reads_a_prefix() -> None:
    cache = PromptCache()
    doc = body(system=[{"text": "one two three"}, POINT])
    assert cache.usage(doc) == (0, 3)
    assert cache.usage(doc) == (3, 0)
    other = body(system=[{"text": "one two four"}, POINT])
    assert cache.usage(other) == (0, 3)


def test_answers_reason_when_thinking_is_on() -> None:
    fake = FakeBedrock()
    doc = body(additionalModelRequestFields=THINKING, inferenceConfig={"maxTokens": 2000})
    reply = fake.converse_reply(doc)
    said = reply.blocks[0]["reasoningContent"]["reasoningText"]
    assert said["signature"] == sign(said["text"])
    assert "text" in reply.blocks[1]
    assert "reasoningContent" not in fake.converse_reply(body()).blocks[0]
