"""Every request accounted: a scripted mix through real Envoy + sidecar, read back from a real
OTLP receiver and from Prometheus, checked against what the fake providers reported."""

from __future__ import annotations

import concurrent.futures
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from openai import OpenAI

from extproc.config import Pricing
from extproc.cost import cost_usd
from extproc.usage import Usage
from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.openai import FakeOpenAI, chat_reply, count_tokens
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway
from tests.integration.probes import reported_usage

PRICE = {"input": 0.15, "cached_input": 0.075, "output": 0.60, "per_request": 0.0001}
AZURE_PRICE = {"input": 2.5, "output": 10.0}
BEDROCK_PRICE = {"input": 3.0, "output": 15.0, "cached_input": 0.3}
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CUT_STREAMS = 50


# The whole module runs once per accounting mode (conftest's ``accounting``): in "envoy" mode
# the streams that asked for their usage are accounted from Envoy's access log, everything else
# as in "sidecar" mode.
@pytest.fixture(scope="module")
def fake(accounting: str) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(chunk_delay=0.01) as server:
        yield server


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzure]:
    with FakeAzure(api_key="az-key") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    otlp: OTLPReceiver, fake: FakeOpenAI, azure: FakeAzure, bedrock: FakeBedrock, accounting: str
) -> Iterator[Gateway]:
    one = {"retry": {"attempts": 1}}
    config = {
        "accounting": {"mode": accounting, "flush_interval": "50ms"},
        "telemetry": {"header_attributes": {"x-tenant-id": "tenant"}},
        "backends": {
            "oa": {"schema": "openai", "url": f"{fake.url}/v1"},
            "az": {"schema": "azure_openai", "url": azure.url, "api_key": "${AZ_KEY}"},
            "br": {
                "schema": "aws_bedrock", "url": bedrock.url, "region": bedrock.region,
                "access_key_id": "${AWS_KEY}", "secret_access_key": "${AWS_SECRET}",
            },
        },
        "models": [
            {"name": "m", "backends": [{"backend": "oa"}], "pricing": PRICE, **one},
            {"name": "m-embed", "backends": [{"backend": "oa"}], "pricing": PRICE, **one},
            {"name": "m-err", "backends": [{"backend": "oa"}], **one},
            {"name": "m-cut", "backends": [{"backend": "oa"}], **one},
            {"name": "m-plain", "backends": [{"backend": "oa"}], **one},
            {"name": "az", "backends": [{"backend": "az", "model": "gpt4o", "pricing": AZURE_PRICE}], **one},
            {"name": "claude", "backends": [{"backend": "br", "model": CLAUDE}], "pricing": BEDROCK_PRICE, **one},
            {"name": "titan", "backends": [{"backend": "br", "model": "amazon.titan-embed-text-v2:0"}], **one},
        ],
    }  # fmt: skip
    env = {"AZ_KEY": "az-key", "AWS_KEY": bedrock.access_key, "AWS_SECRET": bedrock.secret_key}
    with Gateway(config, env={**env, **otlp.env()}) as gw:
        yield gw


def _wait(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("telemetry did not arrive in time")
        time.sleep(0.2)


def _messages(i: int, words: int = 4) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(f"w{i}x{j}" for j in range(words))}]


def _chat(client: OpenAI, model: str, i: int, **kw: Any) -> Usage:
    """One chat; the usage the client was told."""
    return reported_usage(
        client.chat.completions.create(model=model, messages=_messages(i), **kw).usage
    )


def _stream(client: OpenAI, model: str, i: int, words: int) -> Usage:
    """One stream asking for its usage; the usage of its last chunk."""
    chunks = list(client.chat.completions.create(
        model=model, messages=_messages(i, words), stream=True, stream_options={"include_usage": True}
    ))  # fmt: skip
    return reported_usage(chunks[-1].usage)


def _usage(body: dict[str, Any]) -> Usage:
    reply = chat_reply(body)
    total = reply.prompt_tokens + reply.completion_tokens
    return Usage(reply.prompt_tokens, reply.completion_tokens, total)


def test_scripted_mix_is_accounted_exactly(
    client: OpenAI, gateway: Gateway, otlp: OTLPReceiver, fake: FakeOpenAI, azure: FakeAzure
) -> None:
    tenant = {"x-tenant-id": "acme"}
    expected = [_chat(client, "m", i, extra_headers=tenant) for i in range(5)]
    expected += [_stream(client, "m", i, 6) for i in range(5)]
    for i in range(5):
        body = {"model": "m", "messages": _messages(i, 8), "stream": True}
        through_gateway = httpx2.post(f"{gateway.url}/v1/chat/completions", json=body).content
        direct = httpx2.post(f"{fake.url}/v1/chat/completions", json=body).content
        assert through_gateway == direct  # the client sees no trace of the usage it did not ask for
        assert b'"usage"' not in through_gateway
        expected.append(_usage(body))
    embed_tokens = 0
    for i in range(3):
        inputs = [f"alpha beta {i}", "gamma"]
        result = client.embeddings.create(model="m-embed", input=inputs)
        embed_tokens += result.usage.prompt_tokens
        assert result.usage.prompt_tokens == sum(count_tokens(t) for t in inputs)
    az_usage = [_chat(client, "az", i) for i in range(2)]
    claude_usage = [_chat(client, "claude", i) for i in range(2)]
    claude_usage += [_stream(client, "claude", i, 5) for i in range(2)]
    titan = client.embeddings.create(model="titan", input=["one two", "three"])
    for _ in range(3):
        fake.fail_next(500, path="/v1/chat/completions")
        with pytest.raises(Exception, match="500"):
            client.chat.completions.create(model="m-err", messages=_messages(0))

    def cut(i: int) -> None:
        stream = client.chat.completions.create(
            model="m-cut", messages=_messages(i, 60), stream=True
        )
        next(iter(stream))
        stream.close()

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(cut, range(CUT_STREAMS)))

    # One record per request, whatever happened to it.
    total = 5 + 5 + 5 + 3 + 2 + 4 + 1 + 3 + CUT_STREAMS
    _wait(lambda: otlp.sum("ai_gateway.requests") == total)
    assert (
        otlp.sum("ai_gateway.requests", **{"gen_ai.request.model": "m-cut", "ai_gateway.cut": True})
        == CUT_STREAMS
    )
    assert (
        otlp.sum("ai_gateway.requests", **{"gen_ai.request.model": "m-err", "error.type": "500"})
        == 3
    )

    # Token counts equal to what the providers reported.
    def tokens(model: str, kind: str) -> float:
        return otlp.sum(
            "gen_ai.client.token.usage",
            **{"gen_ai.request.model": model, "gen_ai.token.type": kind},
        )

    assert tokens("m", "input") == sum(u.input_tokens for u in expected)
    assert tokens("m", "output") == sum(u.output_tokens for u in expected)
    assert tokens("m-embed", "input") == embed_tokens
    assert tokens("az", "output") == sum(u.output_tokens for u in az_usage)
    assert otlp.points("gen_ai.client.token.usage", **{"gen_ai.provider.name": "azure.openai"})
    assert tokens("claude", "input") == sum(u.input_tokens for u in claude_usage)
    assert tokens("claude", "output") == sum(u.output_tokens for u in claude_usage)
    assert tokens("titan", "input") == titan.usage.prompt_tokens
    assert otlp.points("gen_ai.client.token.usage", **{"gen_ai.provider.name": "aws.bedrock"})
    # The cut streams are recorded with the gateway's estimate: each prompt (60 words) counted
    # from the request, the output from what the stream had shown.
    cut_inputs = {"gen_ai.request.model": "m-cut", "gen_ai.token.type": "input"}
    assert otlp.count("gen_ai.client.token.usage", **cut_inputs) == CUT_STREAMS
    assert (
        otlp.count(
            "gen_ai.client.token.usage", **cut_inputs, **{"ai_gateway.usage_source": "estimated"}
        )
        == CUT_STREAMS
    )
    assert tokens("m-cut", "input") >= CUT_STREAMS * 60

    # Costs equal to an independent computation.
    m_cost = sum(cost_usd(u, Pricing(**PRICE)) for u in expected)
    assert otlp.sum("ai_gateway.cost", **{"gen_ai.request.model": "m"}) == pytest.approx(
        m_cost, rel=1e-9
    )
    claude_cost = sum(cost_usd(u, Pricing(**BEDROCK_PRICE)) for u in claude_usage)
    assert otlp.sum("ai_gateway.cost", **{"gen_ai.request.model": "claude"}) == pytest.approx(
        claude_cost, rel=1e-9
    )
    az_cost = sum(cost_usd(u, Pricing(**AZURE_PRICE)) for u in az_usage)
    assert otlp.sum("ai_gateway.cost", **{"gen_ai.request.model": "az"}) == pytest.approx(
        az_cost, rel=1e-9
    )

    # Time to first token for the ten complete streams, and the header attribute.
    assert otlp.count("gen_ai.server.time_to_first_token", **{"gen_ai.request.model": "m"}) == 10
    assert (
        otlp.count(
            "gen_ai.server.request.duration", **{"gen_ai.request.model": "m", "tenant": "acme"}
        )
        == 5
    )

    # Prometheus on the admin port says the same.
    def prometheus() -> str:
        with urllib.request.urlopen(f"{gateway.admin_url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def prom_sum(text: str, name: str, **labels: str) -> float:
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    text = prometheus()
    assert prom_sum(text, "ai_gateway_requests_total") == total
    assert prom_sum(
        text, "gen_ai_client_token_usage_sum", gen_ai_request_model="m", gen_ai_token_type="input"
    ) == tokens("m", "input")
    assert prom_sum(text, "ai_gateway_cost_usd_total", gen_ai_request_model="m") == pytest.approx(
        m_cost, rel=1e-9
    )


def test_trace_context_continues_to_the_provider(
    client: OpenAI, otlp: OTLPReceiver, fake: FakeOpenAI
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    # Unpriced: in envoy accounting mode the span is ended from Envoy's access log by another
    # worker, and keeps the ids the provider got.
    client.chat.completions.create(
        model="m-plain",
        messages=_messages(1),
        extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    sent = fake.requests[-1].headers["traceparent"]
    assert sent.split("-")[1] == trace_id and sent.split("-")[2] != parent
    _wait(lambda: any(s["trace_id"] == trace_id for s in otlp.spans))
    (span,) = [s for s in otlp.spans if s["trace_id"] == trace_id]
    assert span["parent_span_id"] == parent and span["span_id"] == sent.split("-")[2]
    assert span["name"] == "chat m-plain"
    assert span["attributes"]["gen_ai.request.model"] == "m-plain"
    assert span["attributes"]["gen_ai.usage.input_tokens"] > 0


def test_access_log_carries_tokens_and_cost(client: OpenAI, gateway: Gateway) -> None:
    reply = client.chat.completions.with_raw_response.create(model="m", messages=_messages(7))
    usage = reply.parse().usage
    assert usage is not None
    expected = cost_usd(
        Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), Pricing(**PRICE)
    )
    assert float(reply.headers["x-ai-eg-cost-usd"]) == pytest.approx(expected, abs=1e-6)

    def logged() -> bool:
        return any(
            e.get("total_tokens") == usage.total_tokens and e["model"] == "m"
            for e in gateway.access_log()
        )

    _wait(logged, timeout=5)
