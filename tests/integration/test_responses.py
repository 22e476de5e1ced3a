"""The OpenAI Responses API end to end: the official SDK -> Envoy -> sidecar -> fake OpenAI and
fake Azure, passed through byte for byte and accounted from the answer's own usage."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.openai import FakeOpenAI, count_tokens
from tests.fakes.otlp import OTLPReceiver
from tests.fakes.responses import events, response, responses_reply
from tests.harness import Gateway
from tests.integration.records import (
    attempt_spans,
    leave_mid_stream,
    open_stream,
    traced,
    traceparent,
)

UPSTREAM_KEY = "sk-upstream-responses-5c1e"
PRICING = {"input": 0.15, "cached_input": 0.075, "output": 0.60}
TEXT = " ".join(["hello"] * 12)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY, chunk_delay=0.02) as fake:
        yield fake


@pytest.fixture(scope="module")
def spare() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY, chunk_delay=0.0) as fake:
        yield fake


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzure]:
    with FakeAzure(deployments={"my-gpt"}, chunk_delay=0.0) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    otlp: OTLPReceiver,
    accounting: str,
    openai_fake: FakeOpenAI,
    spare: FakeOpenAI,
    azure: FakeAzure,
    bedrock: FakeBedrock,
) -> Iterator[Gateway]:
    config = {
        "accounting": {"mode": accounting, "flush_interval": "50ms"},
        "responses": {"default_model": "gpt-4o-mini"},
        "backends": {
            "oa": {"schema": "openai", "url": f"{openai_fake.url}/v1", "api_key": "${UP_KEY}"},
            "spare": {"schema": "openai", "url": f"{spare.url}/v1", "api_key": "${UP_KEY}"},
            "az": {"schema": "azure_openai", "url": azure.url, "api_key": "${AZ_KEY}"},
            "br": {
                "schema": "aws_bedrock",
                "url": bedrock.url,
                "region": "us-east-1",
                "access_key_id": "${AWS_ID}",
                "secret_access_key": "${AWS_SECRET}",
            },
        },
        "models": [
            {"name": "gpt-4o-mini", "pricing": PRICING, "backends": [{"backend": "oa"}]},
            {
                "name": "pair",
                "pricing": PRICING,
                "backends": [
                    {"backend": "oa", "model": "gpt-4o-mini"},
                    {"backend": "spare", "model": "gpt-4o-mini", "priority": 1},
                ],
            },
            {"name": "azure-gpt", "backends": [{"backend": "az", "model": "my-gpt"}]},
            {
                "name": "claude",
                "backends": [{"backend": "br", "model": "anthropic.claude-3-haiku-20240307-v1:0"}],
            },
        ],
    }
    env = {
        **otlp.env(100),
        "UP_KEY": UPSTREAM_KEY,
        "AZ_KEY": azure.api_key or "",
        "AWS_ID": bedrock.access_key,
        "AWS_SECRET": bedrock.secret_key,
    }
    with Gateway(config, env=env) as gw:
        yield gw


def _cost(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * PRICING["input"] + output_tokens * PRICING["output"]) / 1e6


def test_create_is_answered_and_accounted_from_the_answers_usage(
    client: OpenAI, otlp: OTLPReceiver, openai_fake: FakeOpenAI
) -> None:
    sending, trace_id = traced(client)
    raw = sending.responses.with_raw_response.create(model="gpt-4o-mini", input=TEXT)
    answer = raw.parse()
    assert answer.output_text == f"Echo: {TEXT}"
    prompt, output = count_tokens(TEXT), count_tokens(f"Echo: {TEXT}")
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (prompt, output)
    # The header in micro-dollars, the record exact.
    assert float(raw.headers["x-ai-eg-cost-usd"]) == pytest.approx(_cost(prompt, output), abs=1e-6)
    (record,) = attempt_spans(otlp, trace_id)
    assert record["ai_gateway.cost_usd"] == pytest.approx(_cost(prompt, output), rel=1e-12)
    assert record["gen_ai.operation.name"] == "responses"
    assert record["gen_ai.usage.input_tokens"] == prompt
    assert record["gen_ai.usage.output_tokens"] == output
    assert record["ai_gateway.usage_source"] == "provider"
    sent = openai_fake.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_a_stream_passes_unchanged_and_is_accounted_from_its_last_event(
    gateway: Gateway, otlp: OTLPReceiver
) -> None:
    body = {"model": "gpt-4o-mini", "input": TEXT, "stream": True}
    trace_id, header = traceparent()
    conn, response = open_stream(gateway, "/v1/responses", body, header)
    got = response.read()
    conn.close()
    # Byte for byte what the provider sent: no usage asked for, nothing taken out.
    assert got == b"".join(events(responses_reply(body), body))
    (record,) = attempt_spans(otlp, trace_id)
    assert record["gen_ai.usage.input_tokens"] == count_tokens(TEXT)
    assert record["gen_ai.usage.output_tokens"] == count_tokens(f"Echo: {TEXT}")
    assert record["ai_gateway.usage_source"] == "provider"


def test_the_sdk_streams_typed_events_in_order(client: OpenAI) -> None:
    with client.responses.stream(model="gpt-4o-mini", input="stream me") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text == "Echo: stream me"


class Weather(BaseModel):
    city: str
    celsius: int


def test_parse_returns_the_pydantic_model(client: OpenAI) -> None:
    parsed = client.responses.parse(model="gpt-4o-mini", input="weather?", text_format=Weather)
    assert isinstance(parsed.output_parsed, Weather)


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_function_calling_over_two_turns(client: OpenAI, stream: bool) -> None:
    first = client.responses.create(
        model="gpt-4o-mini",
        input="Weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and orjson.loads(call.arguments)["city"]
    second_input: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
    ]
    if not stream:
        final = client.responses.create(model="gpt-4o-mini", input=second_input, tools=[WEATHER])  # type: ignore[list-item]
        assert final.output_text == "Echo: sunny, 21C"
        return
    with client.responses.stream(model="gpt-4o-mini", input=second_input, tools=[WEATHER]) as s:  # type: ignore[list-item]
        for _ in s:
            pass
        assert s.get_final_response().output_text == "Echo: sunny, 21C"


def test_a_failed_attempt_falls_back_and_each_attempt_is_recorded(
    client: OpenAI, otlp: OTLPReceiver, openai_fake: FakeOpenAI, spare: FakeOpenAI
) -> None:
    openai_fake.fail_next(503, path="/v1/responses")
    sending, trace_id = traced(client)
    with sending.responses.stream(model="pair", input=TEXT) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == f"Echo: {TEXT}"
    assert spare.requests[-1].json()["model"] == "gpt-4o-mini"
    # In the order the spans arrived, which is not the attempts' order.
    served, failed = sorted(
        attempt_spans(otlp, trace_id, attempts=2), key=lambda r: r["http.response.status_code"]
    )
    assert failed["http.response.status_code"] == 503
    assert served["gen_ai.usage.output_tokens"] == count_tokens(f"Echo: {TEXT}")


def test_azure_gets_its_v1_responses_path_with_the_deployment_as_model(
    client: OpenAI, azure: FakeAzure
) -> None:
    answer = client.responses.create(model="azure-gpt", input="hi azure")
    assert answer.output_text == "Echo: hi azure"
    sent = azure.requests[-1]
    assert sent.path == "/openai/v1/responses"
    assert "api-version" not in sent.query
    assert sent.json()["model"] == "my-gpt"


def test_bedrock_serves_it_translated(client: OpenAI, bedrock: FakeBedrock) -> None:
    # The 404 of a backend without the endpoint: tests/unit/test_registry.py; Bedrock's
    # translation: tests/integration/test_responses_bedrock.py.
    answer = client.responses.create(model="claude", input="hi")
    assert answer.output_text == "You said: hi"
    assert bedrock.requests[-1].raw_path.endswith("/converse")


def test_a_client_that_leaves_mid_stream_is_charged_once(
    gateway: Gateway, otlp: OTLPReceiver
) -> None:
    trace_id, header = traceparent()
    body = {"model": "gpt-4o-mini", "input": TEXT, "stream": True}
    leave_mid_stream(gateway, "/v1/responses", body, header, b"event: response.output_text.delta")
    (record,) = attempt_spans(otlp, trace_id)
    assert record["ai_gateway.usage_source"] == "estimated"
    assert record["error.type"] == "interrupted"
    assert record["gen_ai.usage.input_tokens"] >= count_tokens(TEXT)
    assert 3 <= record["gen_ai.usage.output_tokens"] <= count_tokens(f"Echo: {TEXT}") + 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'{"input": "hi"}', "model"),
        (b'{"model": "gpt-4o-mini", "input": "hi", "stream": "yes"}', "stream"),
    ],
    ids=["bad-json", "no-model", "stream-not-boolean"],
)
def test_bad_input_is_a_400_in_openais_shape(gateway: Gateway, body: bytes, param: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request("POST", "/v1/responses", body, {"content-type": "application/json"})
    response = conn.getresponse()
    doc = orjson.loads(response.read())
    conn.close()
    assert response.status == 400
    assert doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["param"] == param


def test_the_providers_own_400_reaches_the_client(client: OpenAI) -> None:
    bad: Any = [{"type": "function_call_output", "call_id": "call_nowhere", "output": "x"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o-mini", input=bad)
    assert "No tool call found" in str(caught.value)


# --- stored responses: retrieved, listed, deleted on the backend that made them ------------------


def test_a_stored_response_is_retrieved_listed_and_deleted_at_no_charge(
    client: OpenAI, otlp: OTLPReceiver, openai_fake: FakeOpenAI
) -> None:
    made = client.responses.create(model="gpt-4o-mini", input="keep me")
    # No model named: the gateway's responses.default_model chooses the backend.
    sending, trace_id = traced(client)
    again = sending.responses.retrieve(made.id)
    assert again.output_text == "Echo: keep me" and again.id == made.id
    (record,) = attempt_spans(otlp, trace_id)
    assert record["gen_ai.operation.name"] == "stored_responses"
    # The stored answer's usage was charged when it was made: a relay has none, costs nothing.
    assert not [key for key in record if key.startswith("gen_ai.usage.")]
    assert "ai_gateway.cost_usd" not in record and "ai_gateway.usage_source" not in record
    named = client.with_options(default_headers={"x-ai-eg-model": "gpt-4o-mini"})
    items = named.responses.input_items.list(made.id, limit=5, order="asc")
    assert [item.type for item in items.data] == ["message"]
    assert openai_fake.requests[-1].query == {"limit": "5", "order": "asc"}
    with pytest.raises(openai.BadRequestError, match="background"):
        named.responses.cancel(made.id)
    named.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        named.responses.retrieve(made.id)


def test_a_stored_response_is_found_on_whichever_backend_holds_it(
    client: OpenAI, spare: FakeOpenAI, openai_fake: FakeOpenAI
) -> None:
    body = {"model": "gpt-4o-mini", "input": "on the spare"}
    spare.stored["resp_on_spare"] = (
        {**response(responses_reply(body), body), "id": "resp_on_spare"},
        body,
    )
    pair = client.with_options(default_headers={"x-ai-eg-model": "pair"})
    found = pair.responses.retrieve("resp_on_spare")
    assert found.output_text == "Echo: on the spare"
    # The first backend said 404, Envoy asked the next.
    assert openai_fake.requests[-1].path == "/v1/responses/resp_on_spare"


def test_input_tokens_are_counted_by_the_backend_the_body_names(client: OpenAI) -> None:
    counted = client.responses.input_tokens.count(model="gpt-4o-mini", input="one two three")
    assert counted.input_tokens == 3


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/responses/resp_1?evil=1", 400, "unknown_parameter"),
        ("/v1/responses/%2e%2e", 404, None),
        ("/v1/responses/a/b/c", 404, "unsupported_endpoint"),
    ],
    ids=["unknown-query", "encoded-dot-segment", "deeper-path"],
)
def test_odd_stored_response_paths_are_refused(
    gateway: Gateway, path: str, status: int, code: str | None
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request("GET", path)
    response_ = conn.getresponse()
    doc = orjson.loads(response_.read())
    conn.close()
    assert response_.status == status
    assert "error" in doc
    if code is not None:
        assert doc["error"]["code"] == code


def test_stored_responses_of_a_backend_that_keeps_none_are_a_404_naming_it(
    client: OpenAI,
) -> None:
    claude = client.with_options(default_headers={"x-ai-eg-model": "claude"})
    with pytest.raises(openai.NotFoundError) as caught:
        claude.responses.retrieve("resp_1")
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "unsupported_endpoint"
