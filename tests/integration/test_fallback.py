"""Fallback and load balancing, done by Envoy, across heterogeneous backends.

Every case runs 20 concurrent clients through real Envoy + sidecar with the official SDK; the
fakes stand in for providers that refuse, fail, throttle, stall or die.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionChunk

from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.faulty import FIRST_CHUNK, FaultyUpstream
from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway, free_port

REQUESTS = 1000
CLIENTS = 20
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def _openai(fake: FakeOpenAI | FaultyUpstream) -> dict[str, Any]:
    return {"schema": "openai", "url": f"{fake.url}/v1"}


class Fleet:
    """All the fakes of this module, and the gateway in front of them."""

    def __init__(self) -> None:
        self.fallback = FakeOpenAI()
        self.primary_500 = FakeOpenAI()
        self.primary_429 = FakeOpenAI()
        self.victim = FakeOpenAI()
        self.flaky = FakeOpenAI()
        self.heavy = FakeOpenAI()
        self.light = FakeOpenAI()
        self.openai_500 = FakeOpenAI()
        self.once = FakeOpenAI()
        self.azure = FakeAzure(api_key="az-key", api_versions={"2024-10-21"})
        self.bedrock = FakeBedrock()
        self.stall = FaultyUpstream("stall")
        self.cut = FaultyUpstream("cut")
        self.reset = FaultyUpstream("reset")
        self.servers = [
            self.fallback, self.primary_500, self.primary_429, self.victim, self.flaky,
            self.heavy, self.light, self.openai_500, self.once, self.azure, self.bedrock,
        ]  # fmt: skip
        self.sockets = [self.stall, self.cut, self.reset]

    def config(self) -> dict[str, Any]:
        dead = {"schema": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"}
        dead2 = {"schema": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"}
        backends = {
            "fallback": _openai(self.fallback),
            "dead": dead,
            "dead2": dead2,
            "p500": _openai(self.primary_500),
            "p429": _openai(self.primary_429),
            "stall": _openai(self.stall),
            "victim": _openai(self.victim),
            "flaky": _openai(self.flaky),
            "heavy": _openai(self.heavy),
            "light": _openai(self.light),
            "oa500": _openai(self.openai_500),
            "once": _openai(self.once),
            "cut": _openai(self.cut),
            "reset": _openai(self.reset),
            "azure": {"schema": "azure_openai", "url": self.azure.url, "api_key": "${AZ_KEY}"},
            "bedrock": {
                "schema": "aws_bedrock",
                "url": self.bedrock.url,
                "region": self.bedrock.region,
                "access_key_id": "${AWS_KEY}",
                "secret_access_key": "${AWS_SECRET}",
            },
        }

        def tiers(primary: str, fallback: str = "fallback", **extra: Any) -> dict[str, Any]:
            return {
                "backends": [{"backend": primary}, {"backend": fallback, "priority": 1}],
                **extra,
            }

        models = {
            "refused": tiers("dead"),
            "errors": tiers("p500"),
            "limited": tiers("p429"),
            "stalled": tiers("stall", retry={"per_try_timeout": "300ms"}),
            "killed": tiers("victim"),
            "ejecting": tiers("flaky", outlier={"consecutive_failures": 3, "eject_for": "2s", "interval": "500ms"}),
            "logged": tiers("once"),
            "split": {"backends": [{"backend": "heavy", "weight": 80}, {"backend": "light", "weight": 20}]},
            "down": {"backends": [{"backend": "dead"}, {"backend": "dead2", "priority": 1}]},
            "oa-to-bedrock": {"backends": [{"backend": "oa500"}, {"backend": "bedrock", "priority": 1, "model": CLAUDE}]},
            "az-to-oa": {"backends": [{"backend": "azure", "model": "broken-deployment"}, {"backend": "fallback", "priority": 1}]},
            "cut": {"backends": [{"backend": "cut"}], "retry": {"attempts": 1}},
            "reset": {"backends": [{"backend": "reset"}], "retry": {"attempts": 1}},
        }  # fmt: skip
        return {
            "http": {"expose_backend": True},
            "backends": backends,
            "models": [{"name": name, **spec} for name, spec in models.items()],
        }


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    fleet = Fleet()
    for server in fleet.servers:
        server.start()
    for sock in fleet.sockets:
        sock.__enter__()
    # Providers that are down for the whole module: every request fails the same way.
    fleet.primary_500.fail_next(500, count=10**9)
    fleet.openai_500.fail_next(500, count=10**9)
    fleet.primary_429.fail_next(429, count=10**9, headers={"retry-after": "1"})
    # Azure: the deployment does not exist, so every request 404s... which must not fail over;
    # a 503 from Azure must. The fake answers 503 for every request here.
    fleet.azure.fail_next(503, count=10**9)
    try:
        yield fleet
    finally:
        for server in fleet.servers:
            server.stop()
        for sock in fleet.sockets:
            sock.__exit__(None, None, None)


@pytest.fixture(scope="module")
def gateway(fleet: Fleet) -> Iterator[Gateway]:
    env = {
        "AZ_KEY": "az-key",
        "AWS_KEY": fleet.bedrock.access_key,
        "AWS_SECRET": fleet.bedrock.secret_key,
    }
    with Gateway(fleet.config(), env=env) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="c", max_retries=0, timeout=30)


def _hammer(
    client: OpenAI, model: str, n: int = REQUESTS, during: Callable[[int], None] | None = None
) -> list[str]:
    """``n`` chats from CLIENTS threads; every one must succeed. Returns the serving backends."""

    def one(i: int) -> str:
        if during is not None:
            during(i)
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"hello {i}"}]
        )
        assert raw.parse().choices[0].message.content == f"Echo: hello {i}"
        return raw.headers["x-ai-eg-backend"]

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("model", ["refused", "errors", "stalled"])
def test_no_client_visible_failure(client: OpenAI, fleet: Fleet, model: str) -> None:
    served = _hammer(client, model)
    assert served.count("fallback") >= REQUESTS * 0.9


def test_429_with_retry_after_is_honoured_then_failed_over(client: OpenAI, fleet: Fleet) -> None:
    # Every request waits the provider's Retry-After (1 s) before its retry to the fallback:
    # 1,000 requests from 20 clients take at least 50 s.
    started = time.monotonic()
    served = _hammer(client, "limited")
    assert set(served) == {"fallback"}
    assert time.monotonic() - started >= REQUESTS / CLIENTS * 0.9


def test_primary_killed_mid_run(client: OpenAI, fleet: Fleet) -> None:
    def kill_halfway(i: int) -> None:
        if i == REQUESTS // 2:
            fleet.victim.stop()

    served = _hammer(client, "killed", during=kill_halfway)
    assert "victim" in served and "fallback" in served


def test_weights_split_traffic(client: OpenAI) -> None:
    served = _hammer(client, "split", n=2000)
    share = served.count("heavy") / len(served)
    assert 0.75 <= share <= 0.85


def test_ejected_backend_gets_traffic_again(client: OpenAI, fleet: Fleet) -> None:
    fleet.flaky.fail_next(500, count=3)  # = consecutive_failures: ejected, then healthy
    first = _hammer(client, "ejecting", n=200)
    assert "fallback" in first
    time.sleep(3)  # past eject_for
    later = _hammer(client, "ejecting", n=100)
    assert later.count("flaky") >= 90


def test_all_backends_down_is_a_quick_503_naming_the_model(client: OpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="down", messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - started < 5
    assert info.value.status_code == 503
    assert "down" in info.value.response.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_falls_back_to_signed_bedrock(client: OpenAI, fleet: Fleet, stream: bool) -> None:
    before = len(fleet.bedrock.requests)
    messages = [{"role": "user", "content": "fall back please"}]
    if stream:
        chunks: list[ChatCompletionChunk] = list(
            client.chat.completions.create(model="oa-to-bedrock", messages=messages, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[0].model == "oa-to-bedrock"
    else:
        reply = client.chat.completions.create(model="oa-to-bedrock", messages=messages)
        text = reply.choices[0].message.content or ""
        assert reply.object == "chat.completion" and reply.model == "oa-to-bedrock"
    assert text == "You said: fall back please"
    # The fake verified the SigV4 signature of the fallback attempt (it answers 403 otherwise).
    seen = fleet.bedrock.requests[-1]
    assert len(fleet.bedrock.requests) == before + 1
    assert seen.raw_path.startswith("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse")
    assert seen.headers["authorization"].startswith("AWS4-HMAC-SHA256")


@pytest.mark.parametrize("stream", [False, True])
def test_azure_falls_back_to_openai(client: OpenAI, fleet: Fleet, stream: bool) -> None:
    messages = [{"role": "user", "content": "from azure"}]
    if stream:
        chunks: list[ChatCompletionChunk] = list(
            client.chat.completions.create(model="az-to-oa", messages=messages, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = (
            client.chat.completions.create(model="az-to-oa", messages=messages)
            .choices[0]
            .message.content
            or ""
        )
    assert text == "Echo: from azure"
    assert fleet.azure.requests[-1].path.startswith("/openai/deployments/broken-deployment/")
    seen = fleet.fallback.requests[-1]
    assert seen.path == "/v1/chat/completions" and "api-key" not in seen.headers


def test_stream_cut_after_first_chunk_ends_with_an_error_event(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="cut", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError, match="ended the stream"):
        for chunk in stream:
            received.append(chunk)
    assert received and received[0].choices[0].delta.content == "Hel"


def test_stream_reset_after_first_chunk_is_never_silent(gateway: Gateway) -> None:
    import httpx2

    body = {"model": "reset", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx2.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10
    ) as response:
        assert response.status_code == 200
        got = b""
        with pytest.raises(httpx2.HTTPError):
            for part in response.iter_raw():
                got += part
    assert got.startswith(FIRST_CHUNK[:20])


def test_access_log_records_backend_and_attempts(
    client: OpenAI, gateway: Gateway, fleet: Fleet
) -> None:
    fleet.once.fail_next(500)
    client.chat.completions.create(model="logged", messages=[{"role": "user", "content": "log"}])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        entries = [
            e for e in gateway.access_log() if e.get("model") == "logged" and e["status"] == 200
        ]
        if entries:
            assert entries[-1]["backend"] == "fallback" and entries[-1]["attempts"] >= 2
            return
        time.sleep(0.2)
    pytest.fail("no access log line")
