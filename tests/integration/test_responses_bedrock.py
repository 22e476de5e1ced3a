"""The Responses API on Bedrock end to end: the official SDK -> Envoy -> sidecar -> the fake
Bedrock (SigV4 and Converse's rules checked), translated both ways and accounted exactly."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from agents import (
    Agent,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from tests.bedrock_cases import PNG
from tests.fakes.bedrock import STREAM_ERROR, THROTTLE, FakeBedrock
from tests.fakes.openai import count_tokens
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway
from tests.integration.records import attempt_spans, leave_mid_stream, traced, traceparent
from tests.integration.test_responses import TEXT, WEATHER

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
THINKER = "us.anthropic.claude-sonnet-4-20250514-v1:0"
PRICING = {"input": 0.25, "cached_input": 0.03, "output": 1.25}


@pytest.fixture(scope="module")
def otlp() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def gateway(otlp: OTLPReceiver, bedrock: FakeBedrock) -> Iterator[Gateway]:
    config = {
        "backends": {
            "br": {
                "schema": "aws_bedrock",
                "url": bedrock.url,
                "region": bedrock.region,
                "access_key_id": "${AWS_ID}",
                "secret_access_key": "${AWS_SECRET}",
            }
        },
        "models": [
            {
                "name": "claude",
                "pricing": PRICING,
                "backends": [{"backend": "br", "model": CLAUDE}],
            },
            {"name": "thinker", "backends": [{"backend": "br", "model": THINKER}]},
        ],
    }
    env = {**otlp.env(100), "AWS_ID": bedrock.access_key, "AWS_SECRET": bedrock.secret_key}
    with Gateway(config, env=env) as gw:
        yield gw


def _cost(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * PRICING["input"] + output_tokens * PRICING["output"]) / 1e6


def test_create_is_translated_to_converse_and_accounted_exactly(
    client: OpenAI, otlp: OTLPReceiver, bedrock: FakeBedrock
) -> None:
    sending, trace_id = traced(client)
    raw = sending.responses.with_raw_response.create(
        model="claude", instructions="Be brief.", input=TEXT, max_output_tokens=50, temperature=0.5
    )
    answer = raw.parse()
    assert answer.id.startswith("resp_") and answer.object == "response"
    assert answer.status == "completed" and answer.model == "claude"
    assert answer.output_text == f"You said: {TEXT}"
    sent = bedrock.requests[-1]
    assert sent.raw_path.endswith("/converse")
    assert sent.json() == {
        "messages": [{"role": "user", "content": [{"text": TEXT}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.5},
    }
    prompt = count_tokens(f"Be brief. {TEXT}")
    output = count_tokens(f"You said: {TEXT}")
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (prompt, output)
    assert answer.usage.total_tokens == prompt + output
    assert answer.usage.input_tokens_details.cached_tokens == 0
    assert answer.usage.output_tokens_details.reasoning_tokens == 0
    assert float(raw.headers["x-ai-eg-cost-usd"]) == pytest.approx(_cost(prompt, output), abs=1e-6)
    (record,) = attempt_spans(otlp, trace_id)
    assert record["ai_gateway.cost_usd"] == pytest.approx(_cost(prompt, output), rel=1e-12)
    assert record["gen_ai.operation.name"] == "responses"
    assert record["gen_ai.provider.name"] == "aws.bedrock"
    assert record["gen_ai.usage.input_tokens"] == prompt
    assert record["gen_ai.usage.output_tokens"] == output
    assert record["ai_gateway.usage_source"] == "provider"


def test_an_inline_image_reaches_converse(client: OpenAI, bedrock: FakeBedrock) -> None:
    content: Any = [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": PNG, "detail": "auto"},
    ]
    answer = client.responses.create(model="claude", input=[{"role": "user", "content": content}])
    assert answer.output_text == "You said: what is this?"
    (_, image) = bedrock.requests[-1].json()["messages"][0]["content"]
    assert image == {"image": {"format": "png", "source": {"bytes": PNG.partition(",")[2]}}}


def test_max_output_tokens_makes_it_incomplete(client: OpenAI) -> None:
    answer = client.responses.create(model="claude", input=TEXT, max_output_tokens=3)
    assert answer.status == "incomplete"
    assert answer.incomplete_details is not None
    assert answer.incomplete_details.reason == "max_output_tokens"
    assert answer.output_text == "You said: hello"


def test_the_sdk_streams_typed_events_and_the_stream_is_accounted(
    client: OpenAI, otlp: OTLPReceiver
) -> None:
    sending, trace_id = traced(client)
    with sending.responses.stream(model="claude", input=TEXT) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert final.output_text == f"You said: {TEXT}"
    prompt, output = count_tokens(TEXT), count_tokens(f"You said: {TEXT}")
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (prompt, output)
    (record,) = attempt_spans(otlp, trace_id)
    assert record["gen_ai.usage.input_tokens"] == prompt
    assert record["gen_ai.usage.output_tokens"] == output
    assert record["ai_gateway.cost_usd"] == pytest.approx(_cost(prompt, output), rel=1e-12)
    assert record["ai_gateway.usage_source"] == "provider"


def _answer(client: OpenAI, stream: bool, **request: Any) -> Any:
    if not stream:
        return client.responses.create(**request)
    with client.responses.stream(**request) as events:
        for _ in events:
            pass
        return events.get_final_response()


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_parse_returns_the_pydantic_model(
    client: OpenAI, bedrock: FakeBedrock, stream: bool
) -> None:
    if stream:
        parsed = _answer(client, True, model="claude", input="weather?", text_format=Weather)
    else:
        parsed = client.responses.parse(model="claude", input="weather?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="fake", celsius=1)
    tool_config = bedrock.requests[-1].json()["toolConfig"]
    assert tool_config["toolChoice"] == {"tool": {"name": "Weather"}}


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_function_calling_over_two_turns(
    client: OpenAI, bedrock: FakeBedrock, stream: bool
) -> None:
    tools: Any = [WEATHER]
    first = _answer(client, stream, model="claude", input="Weather in Paris? [[tool]]", tools=tools)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and orjson.loads(call.arguments) == {"city": "fake"}
    assert call.call_id.startswith("tooluse_")
    second_input: Any = [
        {"role": "user", "content": "Weather in Paris? [[tool]]"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
    ]
    final = _answer(client, stream, model="claude", input=second_input, tools=tools)
    assert final.output_text == "Tool said: sunny, 21C"
    messages = bedrock.requests[-1].json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][0]["toolUse"]["toolUseId"] == call.call_id
    assert messages[2]["content"][0]["toolResult"]["toolUseId"] == call.call_id


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
@pytest.mark.parametrize("marker", ["", " [[redacted]]"], ids=["signed", "redacted"])
def test_claudes_reasoning_makes_the_tool_round_trip(
    client: OpenAI, bedrock: FakeBedrock, stream: bool, marker: str
) -> None:
    # The fake checks that the tool turn sent back starts with its reasoning, signed as issued.
    tools: Any = [WEATHER]
    ask = f"Weather in Paris? [[tool]]{marker}"
    settings: Any = {"model": "thinker", "tools": tools, "reasoning": {"effort": "low"}}
    first = _answer(client, stream, input=ask, **settings)
    kinds = [item.type for item in first.output]
    assert kinds[-1] == "function_call" and "reasoning" in kinds
    thought = first.output[kinds.index("reasoning")]
    assert thought.encrypted_content
    if not marker:
        assert thought.content and thought.content[0].type == "reasoning_text"
    assert bedrock.requests[-1].json()["additionalModelRequestFields"]["thinking"] == {
        "type": "enabled",
        "budget_tokens": 4096,
    }
    call = first.output[-1]
    history: Any = [
        {"role": "user", "content": ask},
        *(item.model_dump(exclude_none=True) for item in first.output),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    final = _answer(client, stream, input=history, **settings)
    assert final.output_text == "Tool said: sunny"
    sent = bedrock.requests[-1].json()["messages"][1]["content"]
    assert "reasoningContent" in sent[0] and "toolUse" in sent[-1]


def test_a_client_that_leaves_mid_stream_is_charged_once(
    gateway: Gateway, otlp: OTLPReceiver, bedrock: FakeBedrock
) -> None:
    trace_id, header = traceparent()
    long_text = " ".join(["word"] * 300)
    body = {"model": "claude", "input": long_text, "stream": True}
    bedrock.chunk_delay = 0.01
    try:
        leave_mid_stream(
            gateway, "/v1/responses", body, header, b"event: response.output_text.delta"
        )
        (record,) = attempt_spans(otlp, trace_id)
    finally:
        bedrock.chunk_delay = 0.0
    assert record["ai_gateway.usage_source"] == "estimated"
    assert record["error.type"] == "interrupted"
    assert record["gen_ai.usage.input_tokens"] >= count_tokens(long_text)
    assert 3 <= record["gen_ai.usage.output_tokens"] <= count_tokens(f"You said: {long_text}") + 1


def test_a_bedrock_error_is_openais_error(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="claude", input=f"hi {THROTTLE}")


def test_an_exception_mid_stream_fails_the_response(client: OpenAI) -> None:
    with client.responses.stream(model="claude", input=f"hi {STREAM_ERROR}") as stream:
        events = list(stream)
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert "ModelStreamErrorException" in failed.error.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": 42}, "input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"type": "bogus"}]}, "input[0].type"),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": "https://x/a.png"}],
                    }
                ]
            },
            "input[0].content[0].image_url",
        ),
        ({"frequency_penalty": 1}, "frequency_penalty"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_input_is_a_400_naming_the_param(
    gateway: Gateway, bedrock: FakeBedrock, extra: dict[str, Any], param: str
) -> None:
    before = len(bedrock.requests)
    body = {"model": "claude", "input": "hi", **extra}
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request("POST", "/v1/responses", orjson.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    doc = orjson.loads(response.read())
    conn.close()
    assert response.status == 400, doc
    assert doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["param"] == param
    assert len(bedrock.requests) == before  # refused before any call


# --- the OpenAI Agents SDK ----------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_an_agent_with_a_function_tool_runs_through_the_gateway(
    gateway: Gateway, bedrock: FakeBedrock, streamed: bool
) -> None:
    set_tracing_disabled(True)  # no trace export: no network
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="c", max_retries=0)
    agent = Agent(
        name="forecaster",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="claude", openai_client=client),
    )
    config = RunConfig(tracing_disabled=True)
    prompt = "Weather in Paris? [[tool]]"

    async def run_streamed() -> Any:
        result = Runner.run_streamed(agent, prompt, run_config=config)
        async for _ in result.stream_events():
            pass
        return result

    result = (
        asyncio.run(run_streamed())
        if streamed
        else Runner.run_sync(agent, prompt, run_config=config)
    )
    assert asked == ["fake"]  # the fake's call: an example of the tool's schema
    assert result.final_output == "Tool said: sunny in fake"
    last = bedrock.requests[-1].json()
    assert last["system"] == [{"text": "Answer with the weather tool."}]
    assert [m["role"] for m in last["messages"]] == ["user", "assistant", "user"]
    (use,) = last["messages"][1]["content"]
    (answer,) = last["messages"][2]["content"]
    assert answer["toolResult"]["toolUseId"] == use["toolUse"]["toolUseId"]
    assert answer["toolResult"]["content"] == [{"text": "sunny in fake"}]
