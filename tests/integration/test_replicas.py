"""Three complete gateways (Envoy + sidecar each, as three pods would run) sharing one real
redis-server, a load spread over them: limits hold across replicas, a replica stopped with
SIGTERM mid-traffic loses no stream and no usage, one killed with SIGKILL loses only its own
in-flight requests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from extproc.clients import hash_key
from extproc.config import parse_config
from extproc.limits import Limiter
from extproc.limitstore import open_store
from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway

TEAMS = ("requests", "usage", "stop", "kill", "killed", "budget")
KEYS = {team: f"gw-key-{team}-replicas" for team in TEAMS}
REQUEST_LIMIT = 60
TOKEN_LIMIT = 100_000
COST_LIMIT = 50.0
PRICE = 0.01  # per request, so a cost is a count of requests
STREAM_WORDS = 40  # a slow stream: one chunk a word, STREAM_DELAY apart
STREAM_DELAY = 0.05
BUDGET_REQUESTS = 30  # of 5 words: 5 tokens in, 6 out ("Echo: word word word word word")


def _config(fast: FakeOpenAI, slow: FakeOpenAI, redis_url: str) -> dict[str, Any]:
    return {
        "backends": {
            "fast": {"schema": "openai", "url": f"{fast.url}/v1"},
            "slow": {"schema": "openai", "url": f"{slow.url}/v1"},
        },
        "models": [
            {"name": "gpt-4o-mini", "backends": [{"backend": "fast"}], "pricing": {"per_request": PRICE}},
            {"name": "slow", "backends": [{"backend": "slow"}], "pricing": {"per_request": PRICE}},
        ],
        "clients": [{"name": t, "key_sha256": hash_key(k)} for t, k in KEYS.items()],
        "limits": [
            {"match": {"client": "requests"}, "requests": REQUEST_LIMIT, "per": "day"},
            *(
                rule
                for team in ("usage", "stop", "kill", "killed")
                for rule in (
                    {"match": {"client": team}, "tokens": TOKEN_LIMIT, "per": "day"},
                    {"match": {"client": team}, "cost_usd": COST_LIMIT, "per": "month"},
                )
            ),
            # Spent exactly by BUDGET_REQUESTS requests.
            {"match": {"client": "budget"}, "tokens": BUDGET_REQUESTS * 11, "per": "day"},
            {"match": {"client": "budget"}, "cost_usd": BUDGET_REQUESTS * PRICE, "per": "month"},
        ],
        "ratelimit_store": redis_url,
    }  # fmt: skip


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with FakeOpenAI(chunk_delay=0) as fast, FakeOpenAI(chunk_delay=STREAM_DELAY) as slow:
        yield fast, slow


@pytest.fixture(scope="module")
def config(fakes: tuple[FakeOpenAI, FakeOpenAI], redis_url: str) -> dict[str, Any]:
    return _config(*fakes, redis_url)


@pytest.fixture(scope="module")
def pair(config: dict[str, Any]) -> Iterator[tuple[Gateway, Gateway]]:
    """Two replicas that stay up; each test adds the third."""
    with Gateway(config, workers=1) as one, Gateway(config, workers=1) as two:
        yield one, two


@pytest.fixture
def third(config: dict[str, Any]) -> Iterator[Gateway]:
    with Gateway(config, workers=1) as gw:
        yield gw


def _client(gw: Gateway, team: str) -> OpenAI:
    return OpenAI(base_url=f"{gw.url}/v1", api_key=KEYS[team], max_retries=0)


def _words(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(["word"] * n)}]


def _chat(client: OpenAI, words: int = 3) -> int:
    """One answered request's total tokens."""
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=_words(words))
    assert reply.usage is not None
    return int(reply.usage.total_tokens)


def _stream(client: OpenAI, started: threading.Event | None = None) -> int:
    """A whole slow stream, checked complete; its total tokens."""
    stream = client.chat.completions.create(
        model="slow",
        messages=_words(STREAM_WORDS),
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if started is not None:
            started.set()
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert text == "Echo: " + " ".join(["word"] * STREAM_WORDS)
    assert finish == "stop" and usage is not None
    return int(usage.total_tokens)


def _remaining(config: dict[str, Any], team: str) -> tuple[int, float]:
    """The team's tokens and dollars left, as any replica's admission reads them in the shared
    store (the team has no request limit, so reading counts nothing)."""
    gateway = parse_config(config)

    async def read() -> dict[str, str]:
        store = open_store(gateway.ratelimit_store)
        try:
            admission = await Limiter(gateway.limits, store).admit(team, "gpt-4o-mini", {})
        finally:
            await store.aclose()
        return admission.error.headers if admission.error else admission.headers

    headers = asyncio.run(read())
    return int(headers["x-ratelimit-remaining-tokens"]), float(
        headers["x-ratelimit-remaining-cost-usd"]
    )


def _spent(
    config: dict[str, Any],
    team: str,
    tokens: int,
    requests: int,
    limits: tuple[int, float] = (TOKEN_LIMIT, COST_LIMIT),
) -> None:
    """Until exactly ``tokens`` and ``requests`` (at PRICE each) were debited: debits land just
    after a response ends. Too many is as wrong as too few."""
    expected = (limits[0] - tokens, round(limits[1] - PRICE * requests, 6))
    for _ in range(200):
        seen = _remaining(config, team)
        if seen == expected:
            return
        time.sleep(0.05)
    assert seen == expected, "debited (tokens, dollars) left differ"


def _spread(gateways: list[Gateway], n: int, work: Any) -> list[Any]:
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        return list(pool.map(lambda i: work(gateways[i % len(gateways)]), range(n)))


def test_request_limit_exact_across_three_replicas(
    pair: tuple[Gateway, Gateway], third: Gateway
) -> None:
    replicas = [*pair, third]

    def one(gw: Gateway) -> int:
        try:
            _chat(_client(gw, "requests"))
        except openai.RateLimitError as err:
            assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
            return 0
        return 1

    assert sum(_spread(replicas, 3 * REQUEST_LIMIT // 2, one)) == REQUEST_LIMIT
    # And every replica refuses from now on.
    for gw in replicas:
        with pytest.raises(openai.RateLimitError):
            _chat(_client(gw, "requests"))


def test_token_and_cost_debits_exact_across_three_replicas(
    pair: tuple[Gateway, Gateway], third: Gateway, config: dict[str, Any]
) -> None:
    replicas = [*pair, third]
    tokens = _spread(replicas, 45, lambda gw: _chat(_client(gw, "usage"), words=5))
    streamed = _spread(replicas, 6, lambda gw: _stream(_client(gw, "usage")))
    _spent(config, "usage", sum(tokens) + sum(streamed), len(tokens) + len(streamed))


def test_token_and_cost_budgets_trip_on_every_replica_once_spent(
    pair: tuple[Gateway, Gateway], third: Gateway, config: dict[str, Any]
) -> None:
    replicas = [*pair, third]
    tokens = _spread(replicas, BUDGET_REQUESTS, lambda gw: _chat(_client(gw, "budget"), words=5))
    assert tokens == [11] * BUDGET_REQUESTS
    budget = (BUDGET_REQUESTS * 11, BUDGET_REQUESTS * PRICE)
    _spent(config, "budget", sum(tokens), BUDGET_REQUESTS, budget)  # both left at zero
    for gw in replicas:
        with pytest.raises(openai.RateLimitError) as info:
            _chat(_client(gw, "budget"))
        headers = info.value.response.headers
        assert headers["x-ratelimit-remaining-tokens"] == "0"
        assert headers["x-ratelimit-remaining-cost-usd"] == "0"


def _stream_until_ended(client: OpenAI, started: threading.Event) -> int | None:
    """A slow stream's tokens, or None when it broke off."""
    try:
        return _stream(client, started)
    except Exception:  # the SDK's error, or the check of a stream that broke off
        return None


Futures = list[list[concurrent.futures.Future[int | None]]]


def _in_flight(
    gateways: list[Gateway], teams: list[str], per_gateway: int
) -> tuple[concurrent.futures.ThreadPoolExecutor, Futures]:
    """Slow streams on each gateway, returned once every one of them has its first chunk."""
    pool = concurrent.futures.ThreadPoolExecutor(len(gateways) * per_gateway)
    futures: Futures = []
    events = []
    for gw, team in zip(gateways, teams, strict=True):
        mine = []
        for _ in range(per_gateway):
            started = threading.Event()
            events.append(started)
            mine.append(pool.submit(_stream_until_ended, _client(gw, team), started))
        futures.append(mine)
    for started in events:
        assert started.wait(30), "a stream never started"
    return pool, futures


def _access_lines(gw: Gateway, model: str) -> list[dict[str, Any]]:
    return [line for line in gw.access_log() if line.get("model") == model]


def test_sigterm_mid_traffic_loses_no_stream_and_no_usage(
    pair: tuple[Gateway, Gateway], third: Gateway, config: dict[str, Any]
) -> None:
    replicas = [*pair, third]
    pool, futures = _in_flight(replicas, ["stop"] * 3, per_gateway=4)
    with pool:
        third.__exit__(None, None, None)  # SIGTERM, and wait for the exit: it drains first
        results = [f.result() for mine in futures for f in mine]
    kept = [r for r in results if r is not None]
    assert len(kept) == len(results), "a stream was cut"
    # The stopped replica's Envoy logged each of its streams, answered in full.
    stopped = _access_lines(third, "slow")
    assert len(stopped) == 4 and {line["status"] for line in stopped} == {200}
    # Its usage reached the shared store before it exited: every token and request counted.
    _spent(config, "stop", sum(kept), len(kept))
    with pytest.raises(openai.APIConnectionError):
        _chat(_client(third, "stop"))


def _process_tree(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid, *(p for c in children for p in _process_tree(c))]


def test_sigkill_affects_only_the_killed_replicas_requests(
    pair: tuple[Gateway, Gateway], third: Gateway, config: dict[str, Any]
) -> None:
    replicas = [*pair, third]
    # The killed replica's streams under a key of their own: a stream cut by the kill may or
    # may not have been debited, as the processes die.
    pool, futures = _in_flight(replicas, ["kill", "kill", "killed"], per_gateway=4)
    with pool:
        assert third._proc is not None
        for pid in _process_tree(third._proc.pid):  # the pod's every process, at once
            os.kill(pid, signal.SIGKILL)
        results = [f.result() for mine in futures[:2] for f in mine]
        lost = [f.result() for f in futures[2]]
    kept = [r for r in results if r is not None]
    assert len(kept) == len(results), "a stream on a surviving replica was cut"
    assert lost == [None] * 4, "a stream of the killed replica went on"
    # The survivors serve on, and count exactly what they served (the cut streams were never
    # answered in full, so never debited).
    served = [_chat(_client(gw, "kill")) for gw in pair]
    _spent(config, "kill", sum(kept) + sum(served), len(kept) + len(served))
