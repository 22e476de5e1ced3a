"""Anthropic's Messages API through real Envoy + sidecar: the official OpenAI SDK talks to Claude
as if it were OpenAI.

The fake Anthropic checks what the real API checks (``x-api-key``, ``anthropic-version``,
``max_tokens``, alternating roles, tool results answering tool uses, thinking budgets) and
streams real SSE in random splits, gzipped for the backend that always compresses.
"""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from openai import OpenAI
from pydantic import BaseModel

from extproc.config import Pricing
from extproc.cost import cost_usd
from extproc.usage import Usage
from tests.fakes.anthropic import (
    CACHE_READ,
    CACHE_WRITE,
    CACHED,
    INVALID,
    OVERLOADED,
    RATE_LIMIT,
    REFUSAL,
    SIGNATURE,
    STREAM_ERROR,
    FakeAnthropic,
)
from tests.fakes.openai import count_tokens
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway

SONNET = "claude-sonnet-4-5"
PRICE = {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75}
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


class Weather(BaseModel):
    city: str
    celsius: float


@pytest.fixture(scope="module")
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(anthropic: FakeAnthropic, otlp: OTLPReceiver, accounting: str) -> Iterator[Gateway]:
    with FakeAnthropic(compress="always", chunk_delay=0.05) as gzipped:
        one = {"retry": {"attempts": 1}}
        backend = {**anthropic.backend(), "api_key": "${AN_KEY}"}
        config = {
            # Translated answers are the sidecar's to account in both modes.
            "accounting": {"mode": accounting, "flush_interval": "50ms"},
            "backends": {
                "anthropic": {**backend, "model_max_tokens": {"claude-big": 8000}},
                "beta": {**backend, "anthropic_beta": ["prompt-caching-2024-07-31"]},
                "wrong-key": {**backend, "api_key": "${AN_WRONG_KEY}"},
                "gzipped": {**gzipped.backend(), "api_key": "${AN_KEY}"},
            },
            "models": [
                {"name": "claude", "backends": [{"backend": "anthropic", "model": SONNET}], "pricing": PRICE, **one},
                {"name": "claude-big", "backends": [{"backend": "anthropic"}], **one},
                {"name": "claude-beta", "backends": [{"backend": "beta", "model": SONNET}], **one},
                {"name": "wrong-key", "backends": [{"backend": "wrong-key", "model": SONNET}], **one},
                {"name": "gzipped", "backends": [{"backend": "gzipped", "model": SONNET}], **one},
            ],
        }  # fmt: skip
        env = {"AN_KEY": anthropic.api_key, "AN_WRONG_KEY": "sk-ant-wrong", **otlp.env(100)}
        with Gateway(config, env=env) as gw:
            yield gw


@pytest.fixture
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="client-key", max_retries=0)


def _traced(client: OpenAI) -> tuple[OpenAI, str]:
    trace_id = os.urandom(16).hex()
    parent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
    return client.with_options(default_headers={"traceparent": parent}), trace_id


def _record(otlp: OTLPReceiver, trace_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """The attributes of the one attempt span of the request with this trace id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = [s for s in list(otlp.spans) if s["trace_id"] == trace_id]
        if spans:
            time.sleep(0.3)  # a second record would arrive with the first
            spans = [s for s in list(otlp.spans) if s["trace_id"] == trace_id]
            assert len(spans) == 1, spans
            return dict(spans[0]["attributes"])
        time.sleep(0.1)
    pytest.fail("no record of the request arrived")


# --- chat ---------------------------------------------------------------------------------------


def test_chat_reaches_messages_with_the_key_and_version(
    client: OpenAI, anthropic: FakeAnthropic
) -> None:
    reply = client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "how are you"},
        ],
        temperature=0.2,
        max_tokens=50,
        stop=["zzz"],
        user="user-7",
    )
    assert reply.choices[0].message.content == "You said: how are you"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "claude"
    seen = anthropic.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == anthropic.api_key
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in seen.headers
    assert "authorization" not in seen.headers  # the client's key stays at the gateway
    body = seen.json()
    assert body["model"] == SONNET
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert (body["max_tokens"], body["temperature"], body["stop_sequences"]) == (50, 0.2, ["zzz"])
    assert body["metadata"] == {"user_id": "user-7"}
    prompt = count_tokens("Be brief. hello hi how are you")
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, 5)


def test_max_tokens_defaults_per_model_and_beta_headers(
    client: OpenAI, anthropic: FakeAnthropic
) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="claude", messages=messages)
    assert anthropic.requests[-1].json()["max_tokens"] == 4096
    client.chat.completions.create(model="claude-big", messages=messages)
    assert anthropic.requests[-1].json()["max_tokens"] == 8000
    client.chat.completions.create(model="claude-beta", messages=messages)
    assert anthropic.requests[-1].headers["anthropic-beta"] == "prompt-caching-2024-07-31"


def test_limits_stop_sequences_and_refusals_map_to_finish_reasons(client: OpenAI) -> None:
    def finish(text: str, **extra: Any) -> str:
        messages: Any = [{"role": "user", "content": text}]
        reply = client.chat.completions.create(model="claude", messages=messages, **extra)
        return str(reply.choices[0].finish_reason)

    assert finish("one two three four", max_completion_tokens=2) == "length"
    assert finish("one two three", stop="two") == "stop"
    assert finish(f"please {REFUSAL}") == "content_filter"


def test_stream_with_usage_gzipped_or_not(client: OpenAI) -> None:
    for model in ("claude", "gzipped"):
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "tell me a story"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "You said: tell me a story", model
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == count_tokens(text)


def test_stream_without_include_usage_has_no_usage_chunk_but_is_accounted(
    client: OpenAI, otlp: OTLPReceiver
) -> None:
    traced, trace_id = _traced(client)
    stream = traced.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hello there"}], stream=True
    )
    chunks = list(stream)
    assert all(c.choices and c.usage is None for c in chunks)
    record = _record(otlp, trace_id)
    assert record["ai_gateway.usage_source"] == "provider"
    assert record["gen_ai.usage.output_tokens"] == count_tokens("You said: hello there")


# --- tools, structured output, reasoning, images ------------------------------------------------


def test_tools_over_two_turns(client: OpenAI, anthropic: FakeAnthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris? [[tool]]"}]
    first = client.chat.completions.create(
        model="claude", messages=messages, tools=TOOLS, parallel_tool_calls=False
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "fake"}
    sent = anthropic.requests[-1].json()
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert sent["tools"][0]["input_schema"] == TOOLS[0]["function"]["parameters"]
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"},
    ]
    second = client.chat.completions.create(model="claude", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "Tool said: 18 degrees"
    turns = anthropic.requests[-1].json()["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][-1]["type"] == "tool_use"
    assert turns[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": call.id,
            "content": [{"type": "text", "text": "18 degrees"}],
        }
    ]


def test_a_streamed_tool_call_arrives_in_pieces(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    arguments, names, finish = "", [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            names += [call.function.name] if call.function and call.function.name else []
            arguments += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"] and orjson.loads(arguments) == {"city": "fake"}
    assert finish == "tool_calls"


def test_json_schema_is_a_forced_tool_returned_as_content(
    client: OpenAI, anthropic: FakeAnthropic
) -> None:
    parsed = client.beta.chat.completions.parse(
        model="claude",
        messages=[{"role": "user", "content": "Weather in Oslo as JSON"}],
        response_format=Weather,
    )
    assert parsed.choices[0].message.parsed == Weather(city="fake", celsius=1.5)
    assert parsed.choices[0].finish_reason == "stop"
    sent = anthropic.requests[-1].json()
    assert sent["tool_choice"] == {"type": "tool", "name": "Weather"}
    assert [tool["name"] for tool in sent["tools"]] == ["Weather"]


def test_reasoning_effort_is_a_thinking_budget_returned_as_reasoning_content(
    client: OpenAI, anthropic: FakeAnthropic
) -> None:
    messages: Any = [{"role": "user", "content": "think hard"}]
    reply = client.chat.completions.create(
        model="claude", messages=messages, reasoning_effort="low"
    )
    assert anthropic.requests[-1].json()["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    message = reply.choices[0].message
    assert message.content == "You said: think hard"
    assert (message.model_extra or {})["reasoning_content"] == "Thinking about: think hard"
    stream = client.chat.completions.create(
        model="claude", messages=messages, reasoning_effort="low", stream=True
    )
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in stream
    )
    assert reasoning == "Thinking about: think hard"
    assert SIGNATURE not in reasoning


def test_images_and_cache_control_are_passed_on(client: OpenAI, anthropic: FakeAnthropic) -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    content: Any = [
        {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": png}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    client.chat.completions.create(model="claude", messages=[{"role": "user", "content": content}])
    blocks = anthropic.requests[-1].json()["messages"][0]["content"]
    assert blocks == [
        {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]  # fmt: skip


# --- accounting ---------------------------------------------------------------------------------


def test_cache_reads_and_writes_are_counted_and_priced(client: OpenAI, otlp: OTLPReceiver) -> None:
    traced, trace_id = _traced(client)
    reply = traced.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": f"cached {CACHED}"}]
    )
    base = count_tokens(f"cached {CACHED}")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == base + CACHE_READ + CACHE_WRITE
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == CACHE_READ
    record = _record(otlp, trace_id)
    assert record["gen_ai.usage.cached_input_tokens"] == CACHE_READ
    assert record["gen_ai.usage.cache_write_tokens"] == CACHE_WRITE
    usage = Usage(
        input_tokens=reply.usage.prompt_tokens,
        output_tokens=reply.usage.completion_tokens,
        total_tokens=reply.usage.total_tokens,
        cached_input_tokens=CACHE_READ,
        cache_write_input_tokens=CACHE_WRITE,
    )
    assert record["ai_gateway.cost_usd"] == pytest.approx(cost_usd(usage, Pricing(**PRICE)))


def test_a_client_that_leaves_mid_stream_is_accounted_once_estimated(
    gateway: Gateway, otlp: OTLPReceiver
) -> None:
    trace_id = os.urandom(16).hex()
    body = {
        "model": "gzipped",  # 50 ms between events: the client leaves before the end
        "messages": [{"role": "user", "content": " ".join(["word"] * 40)}],
        "stream": True,
    }
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    headers = {
        "content-type": "application/json",
        "traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01",
    }
    conn.request("POST", "/v1/chat/completions", orjson.dumps(body), headers)
    response = conn.getresponse()
    assert response.status == 200
    seen = 0
    while seen < 4:
        line = response.readline()
        assert line
        seen += line.startswith(b"data: ")
    conn.sock.close()
    conn.close()
    record = _record(otlp, trace_id)
    assert record["ai_gateway.usage_source"] == "estimated"
    assert record["ai_gateway.cut"] is True
    assert record["error.type"] == "interrupted"
    assert record["gen_ai.usage.input_tokens"] >= 40
    assert 1 <= record["gen_ai.usage.output_tokens"] <= 45


# --- errors -------------------------------------------------------------------------------------


def _chat(client: OpenAI, text: str, model: str = "claude", **extra: Any) -> Any:
    messages: Any = [{"role": "user", "content": text}]
    return client.chat.completions.create(model=model, messages=messages, **extra)


def test_anthropic_errors_in_openai_shape(client: OpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as auth:
        _chat(client, "hi", model="wrong-key")
    assert auth.value.status_code == 401
    assert auth.value.body["code"] == "authentication_error"
    assert "invalid x-api-key" in auth.value.message
    with pytest.raises(openai.BadRequestError) as invalid:
        _chat(client, f"bad {INVALID}")
    assert invalid.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.RateLimitError):
        _chat(client, f"busy {RATE_LIMIT}")
    with pytest.raises(openai.InternalServerError) as overloaded:
        _chat(client, f"busy {OVERLOADED}")
    assert overloaded.value.status_code == 503
    assert overloaded.value.body["code"] == "overloaded_error"


def test_an_error_event_mid_stream_ends_the_stream_with_an_error(client: OpenAI) -> None:
    stream = _chat(client, f"go {STREAM_ERROR}", stream=True)
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert "Overloaded" in caught.value.message


def test_the_gateway_refuses_what_anthropic_cannot_do_by_name(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as seed:
        _chat(client, "hi", seed=1)
    assert seed.value.body["param"] == "seed"
    with pytest.raises(openai.BadRequestError) as forced:
        _chat(client, "hi", tools=TOOLS, tool_choice="required", reasoning_effort="high")
    assert forced.value.body["param"] == "reasoning_effort"
    with pytest.raises(openai.NotFoundError) as embeddings:
        client.embeddings.create(model="claude", input="x")
    assert embeddings.value.body["code"] == "unsupported_endpoint"
