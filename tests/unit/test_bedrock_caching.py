"""Prompt caching on Bedrock: cache_control marks and a model's cache_points as Converse cache
points, their limits, and the cache usage of answers and streams."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.config import ModelBackend, Pricing
from extproc.cost import cost_usd
from extproc.translate import RequestContext
from extproc.translate.bedrock.chat import BedrockChat
from extproc.usage import Usage
from tests.bedrock_cases import CLAUDE, COSINE_TOOL, PNG, Json, chat, converse, rejected
from tests.unit.test_bedrock_chat_response import converse_response, respond
from tests.unit.test_bedrock_stream import START, STOP, frames, stream, text_delta

EPHEMERAL = {"type": "ephemeral"}
POINT = {"cachePoint": {"type": "default"}}


def auto_chat(*points: str) -> BedrockChat:
    ctx = RequestContext(
        "chat",
        "my-model",
        CLAUDE,
        "my-model",
        "/v1/chat/completions",
        settings=ModelBackend(backend="bedrock", cache_points=list(points)),
    )
    return BedrockChat(ctx)


def test_marked_user_parts_get_a_cache_point_right_after() -> None:
    content = [
        {"type": "text", "text": "A long document.", "cache_control": EPHEMERAL},
        {"type": "image_url", "image_url": {"url": PNG}, "cache_control": EPHEMERAL},
        {"type": "text", "text": "Question?"},
    ]
    body = converse({"messages": [{"role": "user", "content": content}]})
    blocks = body["messages"][0]["content"]
    assert [next(iter(b)) for b in blocks] == ["text", "cachePoint", "image", "cachePoint", "text"]
    assert blocks[1] == POINT


def test_system_string_and_parts_are_marked() -> None:
    messages = [
        {"role": "system", "content": "You are terse.", "cache_control": EPHEMERAL},
        {
            "role": "developer",
            "content": [{"type": "text", "text": "Rules.", "cache_control": EPHEMERAL}],
        },
        {"role": "user", "content": "hi"},
    ]
    assert converse({"messages": messages})["system"] == [
        {"text": "You are terse."},
        POINT,
        {"text": "Rules."},
        POINT,
    ]


def test_assistant_and_tool_messages_are_marked() -> None:
    call = {"id": "t1", "type": "function", "function": {"name": "cosine", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "cos?"},
        {
            "role": "assistant",
            "content": "Calling.",
            "tool_calls": [call],
            "cache_control": EPHEMERAL,
        },
        {
            "role": "tool",
            "tool_call_id": "t1",
            "content": [{"type": "text", "text": "1.0", "cache_control": EPHEMERAL}],
        },
    ]
    body = converse({"messages": messages, "tools": [COSINE_TOOL]})
    assert body["messages"][1]["content"][-1] == POINT
    assert [next(iter(b)) for b in body["messages"][2]["content"]] == ["toolResult", "cachePoint"]


def test_marked_tools_get_a_cache_point_after_them() -> None:
    second = {**COSINE_TOOL, "function": {**COSINE_TOOL["function"], "name": "sine"}}
    tools = [{**COSINE_TOOL, "cache_control": EPHEMERAL}, second]
    listed = converse({"tools": tools})["toolConfig"]["tools"]
    assert [t.get("toolSpec", {}).get("name", "point") for t in listed] == [
        "cosine",
        "point",
        "sine",
    ]
    assert listed[1] == POINT


def test_unmarked_requests_have_no_cache_points() -> None:
    body = converse(
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]}
    )
    assert POINT not in body["system"] and POINT not in body["messages"][0]["content"]


def test_a_model_cache_points_after_system_and_tools() -> None:
    messages = [{"role": "system", "content": "System."}, {"role": "user", "content": "hi"}]
    body = converse({"messages": messages, "tools": [COSINE_TOOL]}, auto_chat("system", "tools"))
    assert body["system"] == [{"text": "System."}, POINT]
    assert body["toolConfig"]["tools"][-1] == POINT
    only_tools = converse({"messages": messages, "tools": [COSINE_TOOL]}, auto_chat("tools"))
    assert only_tools["system"] == [{"text": "System."}]
    # Nothing to cache: no system prompt, no tools.
    bare = converse({}, auto_chat("system", "tools"))
    assert "system" not in bare and "toolConfig" not in bare


def test_a_model_cache_point_is_not_doubled_after_a_client_mark() -> None:
    messages = [
        {"role": "system", "content": "System.", "cache_control": EPHEMERAL},
        {"role": "user", "content": "hi"},
    ]
    tools = [{**COSINE_TOOL, "cache_control": EPHEMERAL}]
    body = converse({"messages": messages, "tools": tools}, auto_chat("system", "tools"))
    assert body["system"] == [{"text": "System."}, POINT]
    assert body["toolConfig"]["tools"] == [
        {"toolSpec": body["toolConfig"]["tools"][0]["toolSpec"]},
        POINT,
    ]


def test_more_than_four_cache_points_is_a_400() -> None:
    content = [{"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL} for i in range(5)]
    error = rejected({"messages": [{"role": "user", "content": content}]})
    assert error.param == "cache_control"
    assert "5 cache points" in error.message
    four = [{"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL} for i in range(4)]
    assert converse({"messages": [{"role": "user", "content": four}]})
    # The model's own points count too.
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": four}]
    assert rejected({"messages": messages}, auto_chat("system")).param == "cache_control"


@pytest.mark.parametrize(
    ("control", "param"),
    [
        ({"type": "persistent"}, "messages[0].content[0].cache_control.type"),
        ("ephemeral", "messages[0].content[0].cache_control.type"),
        ({"type": "ephemeral", "ttl": "1h"}, "messages[0].content[0].cache_control.ttl"),
        ({"type": "ephemeral", "scope": "x"}, "messages[0].content[0].cache_control.scope"),
    ],
)
def test_bad_cache_control_is_named(control: Any, param: str) -> None:
    content = [{"type": "text", "text": "x", "cache_control": control}]
    assert rejected({"messages": [{"role": "user", "content": content}]}).param == param


def test_ttl_5m_is_the_default_and_passes() -> None:
    content = [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "5m"}}]
    assert converse({"messages": [{"role": "user", "content": content}]})["messages"][0][
        "content"
    ] == [{"text": "x"}, POINT]


def test_a_mark_on_nothing_is_a_400() -> None:
    content = [
        {"type": "text", "text": "  ", "cache_control": EPHEMERAL},
        {"type": "text", "text": "x"},
    ]
    error = rejected({"messages": [{"role": "user", "content": content}]})
    assert error.param == "messages[0].content[0].cache_control"


# --- cache usage ---------------------------------------------------------------------------------

CACHE_USAGE = {
    "inputTokens": 10,
    "outputTokens": 5,
    "totalTokens": 1215,
    "cacheReadInputTokens": 800,
    "cacheWriteInputTokens": 400,
}
EXPECTED = Usage(
    input_tokens=1210,
    output_tokens=5,
    total_tokens=1215,
    cached_input_tokens=800,
    cache_write_input_tokens=400,
)
PRICES = Pricing(input=3, cached_input=0.3, cache_write=3.75, output=15)


def test_answer_reports_cache_reads_and_writes_and_prices_them() -> None:
    t = chat()
    converse({}, t)
    doc = respond(t, converse_response({"text": "hi"}, usage=CACHE_USAGE))
    assert doc["usage"]["prompt_tokens"] == 1210
    assert doc["usage"]["prompt_tokens_details"] == {"cached_tokens": 800}
    assert t.usage == EXPECTED
    # (10 x 3 + 800 x 0.3 + 400 x 3.75 + 5 x 15) / 1M
    assert cost_usd(EXPECTED, PRICES) == pytest.approx(0.001845)


def test_stream_reads_cache_usage_the_same_way() -> None:
    t = chat()
    converse({"stream": True, "stream_options": {"include_usage": True}}, t)
    metadata = ("metadata", {"usage": CACHE_USAGE, "metrics": {"latencyMs": 1}})
    events = stream(t, frames(START, text_delta("hi"), STOP, metadata), lambda: 11)
    assert t.usage == EXPECTED
    last: Json = events[-2]
    assert last["usage"]["prompt_tokens_details"] == {"cached_tokens": 800}
