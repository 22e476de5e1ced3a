"""The legacy text completions end to end: the official SDK -> Envoy -> sidecar -> fake OpenAI
and fake Azure, in both accounting modes (in envoy mode a pass-through answer is Envoy's to
read, as chat's is)."""

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

from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.openai import FakeOpenAI, count_tokens
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway

UPSTREAM_KEY = "sk-upstream-completions-2b7d"
PRICING = {"input": 0.5, "output": 1.5}
PROMPT = "say something short"
ANSWER = f"Echo: {PROMPT}"


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY, chunk_delay=0.05) as fake:
        yield fake


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzure]:
    with FakeAzure(deployments={"my-instruct"}, chunk_delay=0.0) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    otlp: OTLPReceiver,
    accounting: str,
    openai_fake: FakeOpenAI,
    azure: FakeAzure,
    bedrock: FakeBedrock,
) -> Iterator[Gateway]:
    config = {
        "accounting": {"mode": accounting, "flush_interval": "50ms"},
        "backends": {
            "oa": {"schema": "openai", "url": f"{openai_fake.url}/v1", "api_key": "${UP_KEY}"},
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
            {"name": "instruct", "backends": [{"backend": "oa"}]},
            {"name": "priced", "pricing": PRICING, "backends": [{"backend": "oa", "model": "instruct"}]},
            {"name": "azure-instruct", "backends": [{"backend": "az", "model": "my-instruct"}]},
            {"name": "claude", "backends": [{"backend": "br", "model": "anthropic.claude-3-haiku-20240307-v1:0"}]},
        ],
    }  # fmt: skip
    env = {
        **otlp.env(100),
        "UP_KEY": UPSTREAM_KEY,
        "AZ_KEY": azure.api_key or "",
        "AWS_ID": bedrock.access_key,
        "AWS_SECRET": bedrock.secret_key,
    }
    with Gateway(config, env=env) as gw:
        yield gw


def _traced(client: OpenAI) -> tuple[OpenAI, str]:
    trace_id = os.urandom(16).hex()
    parent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
    return client.with_options(default_headers={"traceparent": parent}), trace_id


def _record(otlp: OTLPReceiver, trace_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = [s for s in list(otlp.spans) if s["trace_id"] == trace_id]
        if spans:
            time.sleep(0.3)
            spans = [s for s in list(otlp.spans) if s["trace_id"] == trace_id]
            assert len(spans) == 1, spans
            return dict(spans[0]["attributes"])
        time.sleep(0.1)
    pytest.fail("no record of the request arrived")


def test_a_completion_is_answered_and_accounted(
    client: OpenAI, otlp: OTLPReceiver, openai_fake: FakeOpenAI
) -> None:
    traced, trace_id = _traced(client)
    raw = traced.completions.with_raw_response.create(model="priced", prompt=PROMPT)
    answer = raw.parse()
    assert answer.choices[0].text == ANSWER
    prompt, output = count_tokens(PROMPT), count_tokens(ANSWER)
    assert answer.usage is not None and answer.usage.completion_tokens == output
    cost = (prompt * PRICING["input"] + output * PRICING["output"]) / 1e6
    assert float(raw.headers["x-ai-eg-cost-usd"]) == pytest.approx(cost, abs=1e-6)
    record = _record(otlp, trace_id)
    assert record["gen_ai.operation.name"] == "text_completion"
    assert (record["gen_ai.usage.input_tokens"], record["gen_ai.usage.output_tokens"]) == (
        prompt,
        output,
    )
    assert record["ai_gateway.cost_usd"] == pytest.approx(cost, rel=1e-12)
    sent = openai_fake.requests[-1]
    assert sent.path == "/v1/completions" and sent.json()["model"] == "instruct"


def test_a_stream_is_accounted_and_its_usage_hidden_from_a_client_that_did_not_ask(
    client: OpenAI, otlp: OTLPReceiver, openai_fake: FakeOpenAI
) -> None:
    traced, trace_id = _traced(client)
    pieces = list(traced.completions.create(model="instruct", prompt=PROMPT, stream=True))
    assert "".join(c.choices[0].text for c in pieces if c.choices) == ANSWER
    assert all(c.usage is None for c in pieces)
    assert all(c.choices for c in pieces)  # no usage chunk: the client did not ask
    # The gateway asked for it upstream, so the stream is accounted.
    assert openai_fake.requests[-1].json()["stream_options"] == {"include_usage": True}
    record = _record(otlp, trace_id)
    assert record["gen_ai.usage.output_tokens"] == count_tokens(ANSWER)
    assert record["ai_gateway.usage_source"] == "provider"


def test_a_client_that_asks_for_usage_gets_it(client: OpenAI) -> None:
    pieces = list(
        client.completions.create(
            model="instruct", prompt=PROMPT, stream=True, stream_options={"include_usage": True}
        )
    )
    (last,) = [c for c in pieces if c.usage is not None]
    assert last.usage is not None and last.usage.completion_tokens == count_tokens(ANSWER)


def test_openais_default_max_tokens_cuts_a_long_answer(client: OpenAI) -> None:
    long = " ".join(["word"] * 40)
    answer = client.completions.create(model="instruct", prompt=long)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 16


def test_a_client_that_leaves_mid_stream_is_charged_an_estimate(
    gateway: Gateway, otlp: OTLPReceiver
) -> None:
    trace_id = os.urandom(16).hex()
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    body = {
        "model": "instruct",
        "prompt": " ".join(["tell"] * 12),
        "stream": True,
        "max_tokens": 64,
    }
    conn.request(
        "POST",
        "/v1/completions",
        orjson.dumps(body),
        {
            "content-type": "application/json",
            "traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01",
        },
    )
    response = conn.getresponse()
    assert response.status == 200
    seen = 0
    while seen < 3:
        line = response.readline()
        assert line, "the stream ended early"
        seen += line.startswith(b"data: ")
    conn.sock.close()
    conn.close()
    record = _record(otlp, trace_id)
    assert record["ai_gateway.usage_source"] == "estimated"
    assert record["error.type"] == "interrupted"
    assert record["gen_ai.usage.input_tokens"] >= 12
    assert 3 <= record["gen_ai.usage.output_tokens"] <= 14


def test_azure_gets_its_deployment_path(client: OpenAI, azure: FakeAzure) -> None:
    answer = client.completions.create(model="azure-instruct", prompt="hi azure")
    assert answer.choices[0].text == "Echo: hi azure"
    sent = azure.requests[-1]
    assert sent.path == "/openai/deployments/my-instruct/completions"
    assert "api-version" in sent.query


def test_a_backend_without_completions_is_a_404_naming_it(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="claude", prompt="hi")
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "unsupported_endpoint"
    assert "text_completion" in error["message"] and "'br'" in error["message"]


def test_the_providers_400_reaches_the_client(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client.completions.create(model="instruct", prompt=[{"not": "a prompt"}])
