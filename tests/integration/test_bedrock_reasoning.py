"""Claude's thinking and prompt caching on Bedrock through real Envoy + sidecar, with the official
SDK: a tool conversation whose thinking blocks go back signed (the fake refuses a tool turn
without them), and a cached prompt whose second call reads the cache and costs less."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from extproc.config import Pricing
from extproc.cost import cost_usd
from extproc.usage import Usage
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.bedrock_rules import sign
from tests.harness import Gateway

SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
PRICES = {"input": 3, "cached_input": 0.3, "cache_write": 3.75, "output": 15}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
SYSTEM = " ".join(f"rule{i}" for i in range(300))  # a long, stable system prompt


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(bedrock: FakeBedrock) -> Iterator[Gateway]:
    def model(name: str, **entry: Any) -> dict[str, Any]:
        backend = {"backend": "bedrock", "model": SONNET_4, **entry}
        return {"name": name, "backends": [backend], "retry": {"attempts": 1}, "pricing": PRICES}

    backend = {
        **bedrock.backend(),
        "access_key_id": "${AWS_KEY}",
        "secret_access_key": "${AWS_SECRET}",
    }
    config = {
        "backends": {"bedrock": backend},
        "models": [
            model("claude-thinking"),
            model("claude-cached", cache_points=["system", "tools"]),
        ],
    }
    env = {"AWS_KEY": bedrock.access_key, "AWS_SECRET": bedrock.secret_key}
    with Gateway(config, env=env) as gw:
        yield gw


@pytest.fixture
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="client", max_retries=0)


def _first_turn(client: OpenAI, stream: bool, messages: list[Any]) -> dict[str, Any]:
    """The assistant message of the first turn, as a client keeps it to send back."""
    if not stream:
        reply = client.chat.completions.create(
            model="claude-thinking", messages=messages, tools=TOOLS, reasoning_effort="low"
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        message = reply.choices[0].message
        extra = message.model_extra or {}
        call = message.tool_calls[0] if message.tool_calls else None
        assert call is not None and call.type == "function"
        called = call.function.model_dump()
        return {
            "reasoning": extra["reasoning_content"],
            "blocks": extra["thinking_blocks"],
            "calls": [{"id": call.id, "type": "function", "function": called}],
        }
    reasoning = ""
    blocks: list[Any] = []
    streamed: dict[int, Any] = {}
    chunks = client.chat.completions.create(
        model="claude-thinking", messages=messages, tools=TOOLS, reasoning_effort="low", stream=True
    )
    for chunk in chunks:
        delta = chunk.choices[0].delta
        extra = delta.model_extra or {}
        reasoning += extra.get("reasoning_content") or ""
        blocks += extra.get("thinking_blocks") or []
        for tc in delta.tool_calls or []:
            function = tc.function
            assert function is not None
            if tc.id:
                streamed[tc.index] = {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": function.name, "arguments": ""},
                }
            streamed[tc.index]["function"]["arguments"] += function.arguments or ""
    return {"reasoning": reasoning, "blocks": blocks, "calls": list(streamed.values())}


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_tool_conversation_round_trips(
    client: OpenAI, bedrock: FakeBedrock, stream: bool
) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris? [[tool]]"}]
    turn = _first_turn(client, stream, messages)
    sent = bedrock.requests[-1].json()
    assert sent["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 4096}
    }
    assert sent["inferenceConfig"]["maxTokens"] > 4096
    text = "Thinking about: weather in Paris? [[tool]]"
    assert turn["reasoning"] == text
    assert turn["blocks"] == [{"type": "thinking", "thinking": text, "signature": sign(text)}]
    assert json.loads(turn["calls"][0]["function"]["arguments"])["city"]

    call_id = turn["calls"][0]["id"]
    result = {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"}
    # Without its thinking blocks the tool turn is refused, as Claude refuses it.
    bare = {"role": "assistant", "content": None, "tool_calls": turn["calls"]}
    with pytest.raises(openai.BadRequestError, match="thinking"):
        client.chat.completions.create(
            model="claude-thinking",
            messages=[*messages, bare, result],
            tools=TOOLS,
            reasoning_effort="low",
        )
    assistant = {**bare, "thinking_blocks": turn["blocks"], "reasoning_content": turn["reasoning"]}
    final = client.chat.completions.create(
        model="claude-thinking",
        messages=[*messages, assistant, result],
        tools=TOOLS,
        reasoning_effort="low",
    )
    assert final.choices[0].message.content == "Tool said: sunny, 21C"
    back = bedrock.requests[-1].json()["messages"][1]["content"]
    assert back[0] == {
        "reasoningContent": {"reasoningText": {"text": text, "signature": sign(text)}}
    }


def test_redacted_thinking_round_trips(client: OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "secret [[redacted]] [[tool]]"}]
    reply = client.chat.completions.create(
        model="claude-thinking", messages=messages, tools=TOOLS, reasoning_effort="minimal"
    )
    message = reply.choices[0].message
    blocks = (message.model_extra or {})["thinking_blocks"]
    assert [b["type"] for b in blocks] == ["thinking", "redacted_thinking"]
    assert message.tool_calls
    call = message.tool_calls[0]
    assert call.type == "function"
    assistant = {
        "role": "assistant",
        "tool_calls": [{"id": call.id, "type": "function", "function": call.function.model_dump()}],
        "thinking_blocks": blocks,
    }
    result = {"role": "tool", "tool_call_id": call.id, "content": "ok"}
    final = client.chat.completions.create(
        model="claude-thinking",
        messages=[*messages, assistant, result],
        tools=TOOLS,
        reasoning_effort="minimal",
    )
    assert final.choices[0].message.content == "Tool said: ok"


def test_thinking_refuses_a_temperature_before_any_call(
    client: OpenAI, bedrock: FakeBedrock
) -> None:
    seen = len(bedrock.requests)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="claude-thinking",
            messages=[{"role": "user", "content": "hi"}],
            reasoning_effort="high",
            temperature=0.2,
        )
    assert raised.value.param == "temperature"
    assert len(bedrock.requests) == seen


def _cost(usage: Usage) -> float:
    return cost_usd(usage, Pricing(**PRICES))


@pytest.mark.parametrize("marked", [False, True], ids=["model-cache-points", "cache-control"])
def test_a_cached_prompt_reads_the_cache_and_costs_less(
    client: OpenAI, bedrock: FakeBedrock, marked: bool
) -> None:
    # Each case its own prompt, so that the first call writes the cache.
    system: dict[str, Any] = {"role": "system", "content": f"{SYSTEM} {marked}"}
    model = "claude-thinking" if marked else "claude-cached"
    if marked:
        system["content"] = [
            {"type": "text", "text": system["content"], "cache_control": {"type": "ephemeral"}}
        ]
    words = len(f"{SYSTEM} {marked}".split())

    def ask(question: str) -> tuple[Any, float]:
        messages: list[Any] = [system, {"role": "user", "content": question}]
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, tools=TOOLS
        )
        return raw.parse(), float(raw.headers["x-ai-eg-cost-usd"])

    first, first_cost = ask("first question")
    assert bedrock.requests[-1].json()["system"][-1] == {"cachePoint": {"type": "default"}}
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    second, second_cost = ask("second question")
    assert second.usage.prompt_tokens_details.cached_tokens == words
    assert first.usage.prompt_tokens == second.usage.prompt_tokens
    written = Usage(
        input_tokens=first.usage.prompt_tokens,
        output_tokens=first.usage.completion_tokens,
        cache_write_input_tokens=words,
    )
    read = Usage(
        input_tokens=second.usage.prompt_tokens,
        output_tokens=second.usage.completion_tokens,
        cached_input_tokens=words,
    )
    assert first_cost == pytest.approx(_cost(written), abs=1e-6)
    assert second_cost == pytest.approx(_cost(read), abs=1e-6)
    assert second_cost < first_cost


def test_a_streamed_cached_prompt_reports_cached_tokens(client: OpenAI) -> None:
    messages: list[Any] = [
        {"role": "system", "content": f"{SYSTEM} streamed"},
        {"role": "user", "content": "q"},
    ]
    for _ in range(2):
        chunks = list(
            client.chat.completions.create(
                model="claude-cached",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == len(f"{SYSTEM} streamed".split())


def test_an_anthropic_thinking_object_through_the_sdk(client: OpenAI, bedrock: FakeBedrock) -> None:
    thinking = {"type": "enabled", "budget_tokens": 2000}
    reply = client.chat.completions.create(
        model="claude-thinking",
        messages=[{"role": "user", "content": "why?"}],
        max_tokens=3000,
        extra_body={"thinking": thinking},
    )
    sent = bedrock.requests[-1].json()
    assert sent["additionalModelRequestFields"] == {"thinking": thinking}
    assert sent["inferenceConfig"]["maxTokens"] == 3000
    blocks = (reply.choices[0].message.model_extra or {})["thinking_blocks"]
    assert blocks[0]["signature"] == sign(blocks[0]["thinking"])
    assert reply.choices[0].message.content == "You said: why?"
