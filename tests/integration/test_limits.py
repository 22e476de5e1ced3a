"""Gateway keys, rate limits and budgets: two gateway replicas sharing a real Redis."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from extproc.clients import hash_key
from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway

KEYS = {name: f"gw-key-{name}-canary" for name in ("team-a", "team-b", "team-c", "team-d")}
REQUEST_LIMIT = 100


def _config(fake: FakeOpenAI, redis_url: str) -> dict[str, Any]:
    return {
        "backends": {"oa": {"schema": "openai", "url": f"{fake.url}/v1"}},
        "models": [
            {"name": "gpt-4o-mini", "backends": [{"backend": "oa"}]},
            {"name": "gpt-4o", "backends": [{"backend": "oa"}], "pricing": {"per_request": 0.30}},
            {"name": "secret-model", "backends": [{"backend": "oa"}]},
        ],
        "clients": [
            {"name": "team-a", "key_sha256": hash_key(KEYS["team-a"]), "models": ["gpt-4o-mini"]},
            {"name": "team-b", "key_sha256": hash_key(KEYS["team-b"])},
            {"name": "team-c", "key_sha256": hash_key(KEYS["team-c"])},
            {"name": "team-d", "key_sha256": hash_key(KEYS["team-d"])},
        ],
        "limits": [
            # Per day, so no window boundary falls inside the test (short of midnight UTC).
            {"match": {"client": "team-a"}, "requests": REQUEST_LIMIT, "per": "day"},
            {"match": {"client": "team-b"}, "tokens": 40, "per": "day"},
            {"match": {"client": "*", "model": "gpt-4o"}, "cost_usd": 1.00, "per": "month"},
            {"match": {"client": "team-d"}, "requests": 3, "per": "second"},
        ],
        "ratelimit_store": redis_url,
    }


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(chunk_delay=0) as server:
        yield server


@pytest.fixture(scope="module")
def replicas(fake: FakeOpenAI, redis_url: str) -> Iterator[tuple[Gateway, Gateway]]:
    config = _config(fake, redis_url)
    with Gateway(config) as one, Gateway(config) as two:
        yield one, two


def _client(gw: Gateway, team: str | None) -> OpenAI:
    key = KEYS[team] if team else "not-a-gateway-key"
    return OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


def _chat(client: OpenAI, model: str = "gpt-4o-mini", words: int = 3, **kw: Any) -> Any:
    content = " ".join(["word"] * words)
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )


def test_unknown_key_is_401(replicas: tuple[Gateway, Gateway]) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        _chat(_client(replicas[0], None))
    body = info.value.response.json()["error"]
    assert body["type"] == "authentication_error"
    assert "not-a-gateway-key" not in str(body)


def test_model_outside_allow_list_is_403_and_hidden(replicas: tuple[Gateway, Gateway]) -> None:
    client = _client(replicas[0], "team-a")
    with pytest.raises(openai.PermissionDeniedError):
        _chat(client, model="secret-model")
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    assert {m.id for m in _client(replicas[0], "team-b").models.list()} == {
        "gpt-4o-mini",
        "gpt-4o",
        "secret-model",
    }


def test_exact_admission_across_two_replicas(replicas: tuple[Gateway, Gateway]) -> None:
    clients = [_client(gw, "team-a") for gw in replicas]

    def one(i: int) -> int:
        try:
            _chat(clients[i % 2])
        except openai.RateLimitError as err:
            assert err.response.headers["x-ratelimit-limit-requests"] == str(REQUEST_LIMIT)
            assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
            assert int(err.response.headers["retry-after"]) > 0
            assert err.response.json()["error"]["type"] == "rate_limit_error"
            return 0
        return 1

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        admitted = sum(pool.map(one, range(150)))
    assert admitted == REQUEST_LIMIT


def test_token_limit_debited_by_streamed_usage(replicas: tuple[Gateway, Gateway]) -> None:
    client = _client(replicas[0], "team-b")
    used = 0
    while True:
        try:
            chunks = list(_chat(client, words=5, stream=True))  # no include_usage asked
        except openai.RateLimitError as err:
            assert err.response.headers["x-ratelimit-limit-tokens"] == "40"
            break
        assert chunks and all(c.usage is None for c in chunks)
        used += 5 + 6  # "word" x5 in, "Echo: word x5" out, one token a word
        time.sleep(0.3)  # the debit lands when the response ends
        assert used < 40 + 11, "the token limit never tripped"
    assert used >= 40  # refused only once the bucket was full, not before


def test_monthly_cost_budget_trips_at_the_right_cent(replicas: tuple[Gateway, Gateway]) -> None:
    client = _client(replicas[1], "team-c")
    for _ in range(4):  # $0.00, $0.30, $0.60, $0.90 spent before each: all under $1.00
        _chat(client, model="gpt-4o")
        time.sleep(0.3)
    with pytest.raises(openai.RateLimitError) as info:  # $1.20 spent
        _chat(client, model="gpt-4o")
    assert info.value.response.json()["error"]["code"] == "insufficient_quota"
    # Another client has a budget of its own.
    _chat(_client(replicas[1], "team-d"), model="gpt-4o")


def test_window_rollover(replicas: tuple[Gateway, Gateway]) -> None:
    client = _client(replicas[0], "team-d")
    # Start right after a second boundary so the three requests share one window.
    time.sleep(1 - time.time() % 1 + 0.05)
    for _ in range(3):
        _chat(client)
    with pytest.raises(openai.RateLimitError):
        _chat(client)
    time.sleep(1 - time.time() % 1 + 0.05)
    _chat(client)


def test_gateway_429_is_not_retried_upstream(
    replicas: tuple[Gateway, Gateway], fake: FakeOpenAI
) -> None:
    before = len(fake.requests)
    with pytest.raises(openai.RateLimitError):
        _chat(_client(replicas[0], "team-a"))
    assert len(fake.requests) == before


def test_keys_never_in_output(replicas: tuple[Gateway, Gateway], fake: FakeOpenAI) -> None:
    output = "".join(replicas[0].output + replicas[1].output)
    for key in KEYS.values():
        assert key not in output
        assert all(key not in str(r.headers) for r in fake.requests)
