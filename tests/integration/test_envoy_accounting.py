"""``accounting.mode: envoy``: answers the gateway passes on unchanged are read by Envoy's
own filters, and their records reach the sidecar over Envoy's access-log service. Every request
is still accounted exactly (checked against what the providers reported, through a real OTLP
receiver), with half the ext_proc messages; requests the sidecar must still answer for are
served as in the default mode."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from openai import OpenAI

from extproc.config import Pricing
from extproc.cost import cost_usd
from extproc.usage import Usage
from tests.fakes.azure import FakeAzure
from tests.fakes.faulty import FaultyUpstream
from tests.fakes.openai import FakeOpenAI, chat_reply
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway
from tests.integration.probes import envoy_stat, metric, reported_usage, tracebacks, wait_for

PRICE = {"input": 0.15, "cached_input": 0.075, "output": 0.60, "per_request": 0.0001}
MSGS_SENT = "http.ai_gateway.ext_proc.stream_msgs_sent"


@pytest.fixture(scope="module")
def otlp() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(chunk_delay=0.005) as server:
        yield server


@pytest.fixture(scope="module")
def faulty() -> Iterator[dict[str, FaultyUpstream]]:
    with (
        FaultyUpstream("truncated_json") as truncated,
        FaultyUpstream("cut") as cut,
        FaultyUpstream("reset") as reset,
    ):
        yield {"truncated_json": truncated, "cut": cut, "reset": reset}


@pytest.fixture(scope="module")
def gateway(
    otlp: OTLPReceiver, fake: FakeOpenAI, faulty: dict[str, FaultyUpstream]
) -> Iterator[Gateway]:
    with FakeAzure(api_key="az-key") as azure:
        one = {"retry": {"attempts": 1}}
        backends: dict[str, Any] = {
            "oa": {"schema": "openai", "url": f"{fake.url}/v1"},
            "az": {"schema": "azure_openai", "url": azure.url, "api_key": "${AZ_KEY}"},
        }
        models: list[dict[str, Any]] = [
            {"name": "free", "backends": [{"backend": "oa"}], **one},
            {"name": "priced", "backends": [{"backend": "oa"}], "pricing": PRICE, **one},
            {"name": "az", "backends": [{"backend": "az", "model": "gpt4o"}], **one},
        ]
        for kind, upstream in faulty.items():
            backends[kind] = {"schema": "openai", "url": f"{upstream.url}/v1"}
            models.append({"name": kind, "backends": [{"backend": kind}], **one})
        config = {
            "accounting": {"mode": "envoy", "flush_interval": "50ms"},
            "telemetry": {"header_attributes": {"x-tenant-id": "tenant"}},
            "backends": backends,
            "models": models,
        }
        with Gateway(config, env={"AZ_KEY": "az-key", **otlp.env(interval_ms=200)}) as gw:
            yield gw


def _messages(i: int, words: int = 4) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(f"v{i}x{j}" for j in range(words))}]


def _stream(client: OpenAI, model: str, i: int) -> Usage:
    chunks = list(client.chat.completions.create(
        model=model, messages=_messages(i, 6), stream=True, stream_options={"include_usage": True}
    ))  # fmt: skip
    return reported_usage(chunks[-1].usage)


def _messages_sent(gateway: Gateway) -> int:
    return envoy_stat(gateway, MSGS_SENT)


def _requests(otlp: OTLPReceiver, model: str, **match: Any) -> float:
    return otlp.sum("ai_gateway.requests", **{"gen_ai.request.model": model, **match})


def _tokens(otlp: OTLPReceiver, model: str, kind: str) -> float:
    return otlp.sum(
        "gen_ai.client.token.usage", **{"gen_ai.request.model": model, "gen_ai.token.type": kind}
    )


def test_handed_off_requests_take_two_messages_and_are_accounted_exactly(
    client: OpenAI, gateway: Gateway, otlp: OTLPReceiver
) -> None:
    before = _messages_sent(gateway)
    tenant = {"x-tenant-id": "acme"}
    chats = [
        reported_usage(
            client.chat.completions.create(
                model="free", messages=_messages(i), extra_headers=tenant
            ).usage
        )
        for i in range(4)
    ]
    streams = [_stream(client, "free", i) for i in range(4)]
    azure = [
        reported_usage(client.chat.completions.create(model="az", messages=_messages(7)).usage)
    ]
    handed_off = len(chats) + len(streams) + len(azure)
    # Request headers and body, nothing of the answer (the default mode sends at least four).
    # At times the answer's head reaches the ext_proc filter before the sidecar's end of the
    # stream does, and is sent too: Envoy then goes on without waiting for a reply.
    assert 2 * handed_off <= _messages_sent(gateway) - before < 3 * handed_off
    # Embeddings are not handed off: their (large) answers are read by the sidecar.
    before = _messages_sent(gateway)
    embeddings = client.embeddings.create(model="free", input=["alpha beta", "gamma"])
    assert _messages_sent(gateway) - before == 4

    wait_for(lambda: _requests(otlp, "free") == 9, timeout=20, what="nine records for 'free'")
    wait_for(lambda: _requests(otlp, "az") == 1, timeout=20, what="the Azure record")
    chat_usage = chats + streams
    assert (
        _tokens(otlp, "free", "input")
        == sum(u.input_tokens for u in chat_usage) + embeddings.usage.prompt_tokens
    )
    assert _tokens(otlp, "free", "output") == sum(u.output_tokens for u in chat_usage)
    assert _tokens(otlp, "az", "output") == azure[0].output_tokens
    assert otlp.points("gen_ai.client.token.usage", **{"gen_ai.provider.name": "azure.openai"})
    records = otlp.points("ai_gateway.requests", **{"gen_ai.request.model": "free"})
    assert all("error.type" not in dict(p.attributes) for p in records)
    # Header attributes and time to first token, as in the default mode.
    assert (
        otlp.count(
            "gen_ai.server.request.duration", **{"gen_ai.request.model": "free", "tenant": "acme"}
        )
        == 4
    )
    assert otlp.count("gen_ai.server.time_to_first_token", **{"gen_ai.request.model": "free"}) == 4


def test_priced_streams_are_handed_off_and_priced_answers_keep_their_cost_header(
    client: OpenAI, gateway: Gateway, otlp: OTLPReceiver
) -> None:
    before = _messages_sent(gateway)
    streamed = [_stream(client, "priced", i) for i in range(3)]
    assert 2 * 3 <= _messages_sent(gateway) - before < 3 * 3
    # A buffered answer of a priced model carries its cost header: the sidecar reads that one.
    reply = client.chat.completions.with_raw_response.create(model="priced", messages=_messages(9))
    usage = reported_usage(reply.parse().usage)
    assert float(reply.headers["x-ai-eg-cost-usd"]) == pytest.approx(
        cost_usd(usage, Pricing(**PRICE)), abs=1e-6
    )
    expected = sum(cost_usd(u, Pricing(**PRICE)) for u in [*streamed, usage])
    wait_for(lambda: _requests(otlp, "priced") == 4, timeout=20, what="four priced records")
    assert otlp.sum("ai_gateway.cost", **{"gen_ai.request.model": "priced"}) == pytest.approx(
        expected, rel=1e-9
    )


def test_a_stream_without_usage_asked_still_has_it_removed_by_the_sidecar(
    gateway: Gateway, otlp: OTLPReceiver
) -> None:
    body = {"model": "az", "messages": _messages(3, 8), "stream": True}
    wait_for(lambda: _requests(otlp, "az") >= 1, timeout=20, what="earlier records")
    before_records, before_tokens = _requests(otlp, "az"), _tokens(otlp, "az", "output")
    sent = _messages_sent(gateway)
    through_gateway = httpx2.post(f"{gateway.url}/v1/chat/completions", json=body).content
    assert _messages_sent(gateway) - sent > 2  # the answer went through the sidecar
    assert b"data: [DONE]" in through_gateway
    assert b'"usage"' not in through_gateway
    wait_for(lambda: _requests(otlp, "az") == before_records + 1, timeout=20, what="its record")
    assert _tokens(otlp, "az", "output") - before_tokens == chat_reply(body).completion_tokens


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        # The client gets the provider's answer as it came (Envoy cannot replace it): the
        # record says what was wrong with it.
        ("truncated_json", "bad_upstream_response"),
        ("reset", "interrupted"),
        # Envoy's SSE reader does not report [DONE]: a stream the provider ends cleanly but
        # early looks like a complete one from a provider that does not report usage.
        ("cut", ""),
    ],
)
def test_a_broken_answer_is_recorded_as_failed(
    gateway: Gateway, kind: str, error_type: str
) -> None:
    stream = kind != "truncated_json"
    body: dict[str, Any] = {"model": kind, "messages": _messages(0), "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}

    def named() -> float:
        labels = {"gen_ai_request_model": kind, "error_type": error_type}
        return metric(gateway, "ai_gateway_requests_total", **labels)

    before = named()
    try:
        with httpx2.stream(
            "POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10
        ) as response:
            b"".join(response.iter_raw())
    except httpx2.TransportError:
        pass
    wait_for(lambda: named() > before, timeout=10, what=f"a {error_type} record")
    assert not tracebacks(gateway)


def test_records_of_the_last_requests_reach_the_sidecar_before_a_shutdown() -> None:
    with OTLPReceiver() as otlp, FakeOpenAI(chunk_delay=0.001) as fake:
        config = {
            # A long flush interval: without the drain's wait these records would be lost.
            "accounting": {"mode": "envoy", "flush_interval": "1s"},
            "backends": {"oa": {"schema": "openai", "url": f"{fake.url}/v1"}},
            "models": [{"name": "m", "backends": [{"backend": "oa"}]}],
        }
        # Metrics are exported only at exit: what arrives proves the flush.
        with Gateway(config, env=otlp.env(interval_ms=600_000)) as gw:
            client = OpenAI(base_url=f"{gw.url}/v1", api_key="c", max_retries=0)
            for i in range(5):
                client.chat.completions.create(model="m", messages=_messages(i))
            proc = gw._proc
            assert proc is not None
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            assert proc.returncode == 0
        assert otlp.sum("ai_gateway.requests", **{"gen_ai.request.model": "m"}) == 5
