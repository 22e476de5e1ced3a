"""Rate limits and budgets, against the memory store and a real redis-server."""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import orjson
import pytest
import redis
import yaml
from pydantic import TypeAdapter, ValidationError

from extproc.limits import MAX_DEBIT, Admission, Limiter, LimitRule, Window, rule_errors
from extproc.limitstore import (
    Counter,
    LimitStore,
    MemoryStore,
    StoreSpec,
    StoreUnavailable,
    open_store,
)
from extproc.redisstore import RedisStore
from tests.conftest import REDIS_SERVER
from tests.harness import free_port

needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server not installed (Debian: apt-get install -y redis-server)",
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second)))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url=redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


class Stores:
    """Makes the stores of one test, and closes them inside the test's event loop."""

    def __init__(self, make: Callable[[], LimitStore]) -> None:
        self._make = make
        self._made: list[LimitStore] = []

    def __call__(self) -> LimitStore:
        self._made.append(self._make())
        return self._made[-1]

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            try:
                await scenario()
            finally:
                for store in self._made:
                    await store.aclose()

        asyncio.run(main())


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
def new_store(request: pytest.FixtureRequest) -> Stores:
    """Memory stores are separate from each other; Redis stores share one flushed server."""
    if request.param == "memory":
        return Stores(MemoryStore)
    request.getfixturevalue("redis_db")
    url: str = request.getfixturevalue("redis_url")
    return Stores(lambda: RedisStore(url))


def rules(*docs: dict[str, Any]) -> list[LimitRule]:
    return [LimitRule.model_validate(d) for d in docs]


def error_of(admission: Admission) -> dict[str, Any]:
    assert admission.error is not None
    body: dict[str, Any] = orjson.loads(admission.error.body())["error"]
    return body


async def admitted_count(
    limiter: Limiter,
    attempts: int,
    client: str | None = None,
    model: str = "m",
    headers: dict[str, str] | None = None,
) -> int:
    admitted = 0
    for _ in range(attempts):
        admitted += (await limiter.admit(client, model, headers or {})).allowed
    return admitted


# --- config ---------------------------------------------------------------------------------

ISSUE_YAML = """
limits:
  - {match: {client: team-a},            requests: 600, per: minute}
  - {match: {client: team-a},            tokens: 2_000_000, per: day}
  - {match: {client: "*", model: gpt-4o}, cost_usd: 500, per: month}
  - {match: {header: {X-Tenant-ID: "*"}}, tokens: 100_000, per: hour}
"""


def test_the_issue_example_parses() -> None:
    parsed = rules(*yaml.safe_load(ISSUE_YAML)["limits"])
    assert [(r.kind, r.limit, r.per) for r in parsed] == [
        ("requests", 600, Window.MINUTE),
        ("tokens", 2_000_000, Window.DAY),
        ("cost-usd", 500_000_000, Window.MONTH),
        ("tokens", 100_000, Window.HOUR),
    ]
    assert parsed[3].match.header == {"x-tenant-id": "*"}


@pytest.mark.parametrize(
    "doc",
    [
        {"per": "minute"},
        {"requests": 1, "tokens": 1, "per": "minute"},
        {"requests": 0, "per": "minute"},
        {"cost_usd": 0.0000001, "per": "month"},
        {"requests": 1, "per": "week"},
        {"requests": 1, "per": "minute", "burst": 2},
        {"requests": 1, "per": "minute", "match": {"user": "x"}},
    ],
)
def test_invalid_rules_are_rejected(doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        LimitRule.model_validate(doc)


def test_rules_must_name_configured_clients() -> None:
    parsed = rules(
        {"match": {"client": "team-a"}, "requests": 1, "per": "minute"},
        {"match": {"client": "*"}, "requests": 1, "per": "minute"},
        {"match": {"client": "team-z"}, "requests": 1, "per": "minute"},
        {"match": {"model": "m"}, "requests": 1, "per": "minute"},
    )
    assert rule_errors(parsed, {"team-a"}) == ["limits[2].match.client: unknown client 'team-z'"]
    assert rule_errors(parsed, set()) == [
        f"limits[{i}].match.client: no `clients` are configured" for i in range(3)
    ]


def test_store_spec() -> None:
    adapter = TypeAdapter(StoreSpec)
    for spec in ("memory", "redis://127.0.0.1:6379/0", "rediss://h:6380", "unix:///r.sock"):
        assert adapter.validate_python(spec) == spec
    with pytest.raises(ValidationError, match="must be 'memory' or a redis://"):
        adapter.validate_python("memcached://x")
    assert isinstance(open_store("memory"), MemoryStore)
    assert isinstance(open_store("redis://127.0.0.1:1/0"), RedisStore)


# --- windows --------------------------------------------------------------------------------


def test_fixed_windows_align_to_utc() -> None:
    now = utc(2025, 3, 14, 15, 9, 26) + 0.5
    assert Window.SECOND.bounds(now) == (now - 0.5, now + 0.5)
    assert Window.MINUTE.bounds(now) == (utc(2025, 3, 14, 15, 9), utc(2025, 3, 14, 15, 10))
    assert Window.HOUR.bounds(now) == (utc(2025, 3, 14, 15), utc(2025, 3, 14, 16))
    assert Window.DAY.bounds(now) == (utc(2025, 3, 14), utc(2025, 3, 15))
    assert Window.MONTH.bounds(now) == (utc(2025, 3, 1), utc(2025, 4, 1))


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (utc(2024, 12, 31, 23, 59, 59), utc(2024, 12, 1), utc(2025, 1, 1)),
        (utc(2025, 1, 1), utc(2025, 1, 1), utc(2025, 2, 1)),
        (utc(2024, 2, 29, 12), utc(2024, 2, 1), utc(2024, 3, 1)),  # leap year: 29 days
        (utc(2023, 2, 28, 23, 59, 59), utc(2023, 2, 1), utc(2023, 3, 1)),  # 28 days
        (utc(2100, 2, 15), utc(2100, 2, 1), utc(2100, 3, 1)),  # not a leap year
    ],
)
def test_calendar_month_windows(now: float, start: float, end: float) -> None:
    assert Window.MONTH.bounds(now) == (start, end)


def test_leap_february_is_29_days() -> None:
    start, end = Window.MONTH.bounds(utc(2024, 2, 10))
    assert end - start == 29 * 86400
    start, end = Window.MONTH.bounds(utc(2025, 2, 10))
    assert end - start == 28 * 86400


# --- admission and debits, on both stores ----------------------------------------------------


def test_requests_limit_admits_exactly_the_limit_then_429(new_store: Stores) -> None:
    async def scenario() -> None:
        clock = Clock(utc(2025, 6, 1, 12, 0, 15))
        limiter = Limiter(rules({"requests": 3, "per": "minute"}), new_store(), clock=clock)
        first = await limiter.admit(None, "m", {})
        assert first.allowed and first.debit_buckets == ()
        assert first.headers == {
            "x-ratelimit-limit-requests": "3",
            "x-ratelimit-remaining-requests": "2",
            "x-ratelimit-reset-requests": "45s",
        }
        assert await admitted_count(limiter, 2) == 2
        refused = await limiter.admit(None, "m", {})
        assert not refused.allowed and refused.error is not None
        assert refused.error.status == 429
        assert refused.error.headers == {
            "x-ratelimit-limit-requests": "3",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "45s",
            "retry-after": "45",
        }
        assert error_of(refused) == {
            "message": "Rate limit reached on requests per minute: limit 3, used 3."
            " Please try again in 45s.",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }

    new_store.run(scenario)


def test_window_rollover_admits_again(new_store: Stores) -> None:
    async def scenario() -> None:
        clock = Clock(utc(2025, 6, 1) + 0.25)
        limiter = Limiter(rules({"requests": 2, "per": "second"}), new_store(), clock=clock)
        assert await admitted_count(limiter, 3) == 2
        refused = await limiter.admit(None, "m", {})
        assert refused.error is not None
        assert refused.error.headers["x-ratelimit-reset-requests"] == "750ms"
        assert refused.error.headers["retry-after"] == "1"
        clock.now += 0.75
        assert await admitted_count(limiter, 3) == 2

    new_store.run(scenario)


def test_refused_request_counts_in_no_bucket(new_store: Stores) -> None:
    async def scenario() -> None:
        limiter = Limiter(
            rules(
                {"requests": 5, "per": "hour"},
                {"match": {"client": "team-a"}, "requests": 2, "per": "hour"},
            ),
            new_store(),
            clock=Clock(utc(2025, 6, 1)),
        )
        assert await admitted_count(limiter, 4, client="team-a") == 2
        # Had the two refusals been counted globally, team-b would get only one request.
        assert await admitted_count(limiter, 4, client="team-b") == 3

    new_store.run(scenario)


def test_tightest_rule_wins_and_identical_buckets_share_a_counter(
    new_store: Stores,
) -> None:
    async def scenario() -> None:
        limiter = Limiter(
            rules(
                {"match": {"client": "team-a"}, "requests": 10, "per": "minute"},
                {"match": {"client": "*"}, "requests": 4, "per": "minute"},
                {"match": {"client": "team-a"}, "requests": 100, "per": "hour"},
            ),
            new_store(),
            clock=Clock(utc(2025, 6, 1, 8, 30)),
        )
        first = await limiter.admit("team-a", "m", {})
        assert first.headers["x-ratelimit-limit-requests"] == "4"
        assert first.headers["x-ratelimit-remaining-requests"] == "3"
        assert await admitted_count(limiter, 5, client="team-a") == 3
        # "*" keeps one bucket per client.
        assert await admitted_count(limiter, 5, client="team-b") == 4

    new_store.run(scenario)


def test_header_value_buckets(new_store: Stores) -> None:
    async def scenario() -> None:
        limiter = Limiter(
            rules({"match": {"header": {"X-Tenant-ID": "*"}}, "requests": 2, "per": "day"}),
            new_store(),
            clock=Clock(utc(2025, 6, 1)),
        )
        acme = {"x-tenant-id": "acme"}
        assert await admitted_count(limiter, 3, headers=acme) == 2
        assert await admitted_count(limiter, 3, headers={"x-tenant-id": "globex"}) == 2
        # Without the header (or with an empty one) the rule does not apply.
        assert await admitted_count(limiter, 5, headers={}) == 5
        assert await admitted_count(limiter, 5, headers={"x-tenant-id": ""}) == 5
        refused = await limiter.admit(None, "m", acme)
        assert "for header x-tenant-id:" in error_of(refused)["message"]
        assert "acme" not in error_of(refused)["message"]

    new_store.run(scenario)


def test_exact_header_value_and_model_match(new_store: Stores) -> None:
    async def scenario() -> None:
        limiter = Limiter(
            rules(
                {
                    "match": {"model": "gpt-4o", "header": {"x-tier": "free"}},
                    "requests": 1,
                    "per": "day",
                }
            ),
            new_store(),
            clock=Clock(utc(2025, 6, 1)),
        )
        free = {"x-tier": "free"}
        assert await admitted_count(limiter, 3, model="gpt-4o", headers=free) == 1
        assert await admitted_count(limiter, 3, model="gpt-4o", headers={"x-tier": "pro"}) == 3
        assert await admitted_count(limiter, 3, model="gpt-4o-mini", headers=free) == 3

    new_store.run(scenario)


def test_tokens_are_debited_after_the_response_then_refused(new_store: Stores) -> None:
    async def scenario() -> None:
        clock = Clock(utc(2025, 6, 1, 10, 0, 0))
        limiter = Limiter(
            rules({"match": {"client": "*"}, "tokens": 100, "per": "hour"}),
            new_store(),
            clock=clock,
        )
        first = await limiter.admit("team-a", "m", {})
        assert first.headers["x-ratelimit-remaining-tokens"] == "100"
        assert first.headers["x-ratelimit-reset-tokens"] == "1h0m0s"
        # Tokens are not taken at admission: a second request is admitted before any debit.
        second = await limiter.admit("team-a", "m", {})
        assert second.allowed and second.debit_buckets == first.debit_buckets
        await limiter.debit(first.debit_buckets, tokens=60, cost_usd=0.0)
        clock.now += 1
        third = await limiter.admit("team-a", "m", {})
        assert third.headers["x-ratelimit-remaining-tokens"] == "40"
        assert third.headers["x-ratelimit-reset-tokens"] == "59m59s"
        await limiter.debit(second.debit_buckets, tokens=60, cost_usd=0.0)
        refused = await limiter.admit("team-a", "m", {})
        assert error_of(refused)["message"] == (
            "Rate limit reached on tokens per hour for client team-a: limit 100, used 120."
            " Please try again in 59m59s."
        )
        assert refused.error is not None
        assert refused.error.headers["x-ratelimit-remaining-tokens"] == "0"
        assert refused.error.headers["retry-after"] == "3599"
        assert (await limiter.admit("team-b", "m", {})).allowed
        clock.now = utc(2025, 6, 1, 11)
        assert (await limiter.admit("team-a", "m", {})).allowed

    new_store.run(scenario)


@pytest.mark.parametrize("tokens", [2**63, 2**64 + 5, 10**30])
def test_absurd_usage_is_debited_clamped_and_refuses_the_next(
    new_store: Stores, tokens: int
) -> None:
    async def scenario() -> None:
        clock = Clock(utc(2025, 6, 1, 10, 0, 0))
        limiter = Limiter(
            rules(
                {"match": {"client": "*"}, "tokens": 1000, "per": "hour"},
                {"match": {"client": "*"}, "cost_usd": 5, "per": "day"},
            ),
            new_store(),
            clock=clock,
        )
        first = await limiter.admit("team-a", "m", {})
        # Twice, the second onto a counter already at the bound; then an infinite cost.
        for cost in (float(tokens), float(tokens), math.inf):
            await limiter.debit(first.debit_buckets, tokens=tokens, cost_usd=cost)
        # Refused: the debits landed (a failed one would be logged and leave the counter at 0).
        refused = await limiter.admit("team-a", "m", {})
        assert refused.error is not None and refused.error.status == 429
        assert "Budget reached on cost (USD)" in error_of(refused)["message"]
        assert refused.error.headers["x-ratelimit-remaining-tokens"] == "0"
        assert f"used {3 * MAX_DEBIT / 1e6:f}".rstrip("0") in error_of(refused)["message"]

    new_store.run(scenario)


def test_monthly_cost_budget_trips_at_the_right_cent(new_store: Stores) -> None:
    async def scenario() -> None:
        clock = Clock(utc(2025, 1, 31, 23, 59, 58))
        limiter = Limiter(
            rules({"match": {"client": "*", "model": "gpt-4o"}, "cost_usd": 1.00, "per": "month"}),
            new_store(),
            clock=clock,
        )
        for _ in range(3):
            admission = await limiter.admit("team-a", "gpt-4o", {})
            assert admission.allowed
            await limiter.debit(admission.debit_buckets, tokens=1000, cost_usd=0.30)
        fourth = await limiter.admit("team-a", "gpt-4o", {})  # 0.90 < 1.00
        assert fourth.headers["x-ratelimit-remaining-cost-usd"] == "0.1"
        await limiter.debit(fourth.debit_buckets, tokens=1000, cost_usd=0.30)
        fifth = await limiter.admit("team-a", "gpt-4o", {})
        assert error_of(fifth) == {
            "message": "Budget reached on cost (USD) per month for client team-a, model gpt-4o:"
            " limit 1, used 1.2. Please try again in 2s.",
            "type": "rate_limit_error",
            "param": None,
            "code": "insufficient_quota",
        }
        assert fifth.error is not None
        assert fifth.error.headers["x-ratelimit-limit-cost-usd"] == "1"
        assert fifth.error.headers["x-ratelimit-remaining-cost-usd"] == "0"
        assert (await limiter.admit("team-a", "gpt-4o-mini", {})).allowed
        clock.now = utc(2025, 2, 1)  # the calendar month rolls over
        assert (await limiter.admit("team-a", "gpt-4o", {})).allowed

    new_store.run(scenario)


def test_cost_is_counted_without_float_drift(new_store: Stores) -> None:
    async def scenario() -> None:
        assert sum([0.1] * 10) < 1.0  # what a float counter would compare
        limiter = Limiter(
            rules({"cost_usd": 1, "per": "day"}), new_store(), clock=Clock(utc(2025, 6, 1))
        )
        buckets = (await limiter.admit(None, "m", {})).debit_buckets
        for _ in range(9):
            await limiter.debit(buckets, tokens=0, cost_usd=0.1)
        last = await limiter.admit(None, "m", {})
        assert last.headers["x-ratelimit-remaining-cost-usd"] == "0.1"
        await limiter.debit(buckets, tokens=0, cost_usd=0.09)
        assert (await limiter.admit(None, "m", {})).headers[
            "x-ratelimit-remaining-cost-usd"
        ] == "0.01"
        await limiter.debit(buckets, tokens=0, cost_usd=0.01)  # exactly 1.00: at the limit
        assert not (await limiter.admit(None, "m", {})).allowed

    new_store.run(scenario)


def test_debit_lands_in_the_window_current_when_the_response_ends(
    new_store: Stores,
) -> None:
    async def scenario() -> None:
        clock = Clock(utc(2025, 6, 1, 9, 59, 59))
        limiter = Limiter(rules({"tokens": 10, "per": "hour"}), new_store(), clock=clock)
        admission = await limiter.admit(None, "m", {})
        clock.now = utc(2025, 6, 1, 10, 0, 5)  # a stream that ended after the hour turned
        await limiter.debit(admission.debit_buckets, tokens=10, cost_usd=0.0)
        assert not (await limiter.admit(None, "m", {})).allowed

    new_store.run(scenario)


def test_debit_ignores_zero_usage_and_foreign_bucket_ids(new_store: Stores) -> None:
    async def scenario() -> None:
        limiter = Limiter(
            rules({"tokens": 10, "per": "day"}, {"requests": 100, "per": "day"}),
            new_store(),
            clock=Clock(utc(2025, 6, 1)),
        )
        admission = await limiter.admit(None, "m", {})
        (bucket,) = admission.debit_buckets
        kind, window, digest = bucket.split(":")
        await limiter.debit(admission.debit_buckets, tokens=0, cost_usd=0.0)
        await limiter.debit(
            [
                "",
                "junk",
                f"{kind}:week:{digest}",
                f"{kind}:{window}:{digest[:-1]}",
                f"x:{window}:{digest}",
            ],
            tokens=50,
            cost_usd=1.0,
        )
        after = await limiter.admit(None, "m", {})
        assert after.headers["x-ratelimit-remaining-tokens"] == "10"
        assert after.headers["x-ratelimit-remaining-requests"] == "98"

    new_store.run(scenario)


def test_no_matching_rule_needs_no_store() -> None:
    class NoStore(MemoryStore):
        async def acquire(
            self, counters: Sequence[Counter], limits: Sequence[int]
        ) -> tuple[bool, list[int]]:
            raise AssertionError("the store was asked")

    async def scenario() -> None:
        limiter = Limiter(
            rules({"match": {"client": "vip"}, "requests": 1, "per": "day"}), NoStore()
        )
        assert await limiter.admit("team-a", "m", {}) == Admission()
        assert await limiter.admit(None, "m", {}) == Admission()

    asyncio.run(scenario())


# --- store failures -------------------------------------------------------------------------


class FlakyStore(MemoryStore):
    down = False

    async def acquire(
        self, counters: Sequence[Counter], limits: Sequence[int]
    ) -> tuple[bool, list[int]]:
        if self.down:
            raise StoreUnavailable("ConnectionError: Error 111 connecting to 10.0.0.1:6379.")
        return await super().acquire(counters, limits)

    async def add(self, counters: Sequence[Counter]) -> None:
        if self.down:
            raise StoreUnavailable("ConnectionError: Error 111 connecting to 10.0.0.1:6379.")
        await super().add(counters)


@pytest.mark.parametrize("fail_open", [True, False])
def test_store_outage_fails_open_or_closed_and_logs_once(
    fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        store = FlakyStore()
        limiter = Limiter(
            rules({"tokens": 1, "per": "minute"}), store, fail_open=fail_open, clock=Clock(0.0)
        )
        store.down = True
        outcomes = [await limiter.admit(None, "m", {}) for _ in range(3)]
        assert all(a.allowed is fail_open for a in outcomes)
        if fail_open:
            assert outcomes[0].headers == {} and len(outcomes[0].debit_buckets) == 1
            await limiter.debit(outcomes[0].debit_buckets, tokens=5, cost_usd=0.0)  # no raise
        else:
            err = outcomes[0].error
            assert err is not None and err.status == 503
            assert err.headers == {"retry-after": "1"}
            assert error_of(outcomes[0])["type"] == "server_error"
            assert error_of(outcomes[0])["code"] == "rate_limit_unavailable"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        policy = "admitting" if fail_open else "refusing"
        assert "rate-limit store unavailable (ConnectionError: " in errors[0].getMessage()
        assert policy in errors[0].getMessage()
        store.down = False
        assert (await limiter.admit(None, "m", {})).allowed
        assert "store available again" in caplog.records[-1].getMessage()

    caplog.set_level(logging.WARNING)
    asyncio.run(scenario())


@needs_redis
@pytest.mark.parametrize("fail_open", [True, False])
def test_unreachable_redis(fail_open: bool, caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    stores = Stores(lambda: RedisStore(url, timeout=0.5))

    async def scenario() -> None:
        store = stores()
        limiter = Limiter(
            rules({"requests": 1, "per": "minute"}, {"tokens": 1, "per": "minute"}),
            store,
            fail_open=fail_open,
        )
        started = time.monotonic()
        admission = await limiter.admit(None, "m", {})
        assert time.monotonic() - started < 2
        assert admission.allowed is fail_open
        assert (admission.error is None) is fail_open
        await limiter.debit(admission.debit_buckets, tokens=10, cost_usd=0.0)
        with pytest.raises(StoreUnavailable):
            await store.add([Counter("k", 1, 10)])

    caplog.set_level(logging.DEBUG)
    stores.run(scenario)
    assert "rate-limit store unavailable" in caplog.text
    assert "hunter2" not in caplog.text


# --- Redis specifics ------------------------------------------------------------------------


@needs_redis
def test_two_replicas_sharing_redis_admit_exactly_the_limit(
    redis_url: str, redis_db: redis.Redis
) -> None:
    stores = Stores(lambda: RedisStore(redis_url))
    admitted: list[bool] = []

    async def scenario() -> None:
        clock = Clock(time.time())  # fixed: a minute boundary must not split the run
        replicas = [
            Limiter(rules({"requests": 100, "per": "minute"}), stores(), clock=clock)
            for _ in range(2)
        ]
        gate = asyncio.Semaphore(50)

        async def attempt(i: int) -> bool:
            async with gate:
                return (await replicas[i % 2].admit(None, "m", {})).allowed

        admitted.extend(await asyncio.gather(*(attempt(i) for i in range(150))))

    stores.run(scenario)
    assert sum(admitted) == 100
    (key,) = redis_db.keys("*")
    assert redis_db.get(key) == "100"


@needs_redis
def test_redis_key_format_and_expiry(redis_url: str, redis_db: redis.Redis) -> None:
    stores = Stores(lambda: RedisStore(redis_url))

    async def scenario() -> None:
        now = time.time()
        limiter = Limiter(
            rules(
                {"match": {"header": {"x-tenant-id": "*"}}, "requests": 5, "per": "hour"},
                {"match": {"client": "*"}, "tokens": 500, "per": "day"},
            ),
            stores(),
            clock=Clock(now),
        )
        admission = await limiter.admit("team-a", "m", {"x-tenant-id": "tenant-secret-value"})
        await limiter.debit(admission.debit_buckets, tokens=7, cost_usd=0.0)
        hour_start, hour_end = Window.HOUR.bounds(now)
        day_start, day_end = Window.DAY.bounds(now)
        keys = sorted(redis_db.keys("*"))
        assert len(keys) == 2
        expected = {
            "requests": ("hour", hour_start, hour_end, "1"),
            "tokens": ("day", day_start, day_end, "7"),
        }
        for key in keys:
            prefix, kind, window, digest, start = key.rsplit(":", 4)
            assert prefix == "aigw:rl" and len(digest) == 32 and int(digest, 16) >= 0
            w, s, e, value = expected[kind]
            assert (window, int(start)) == (w, s)
            assert redis_db.get(key) == value
            ttl = int(redis_db.ttl(key))  # window end + 60 s of slack
            assert e - now + 60 - 2 <= ttl <= e - now + 60 + 1
            assert "tenant-secret-value" not in key and "team-a" not in key

    stores.run(scenario)


def test_memory_store_drops_expired_counters() -> None:
    async def scenario() -> None:
        clock = Clock(1000.0)
        store = MemoryStore(clock=clock)
        assert await store.acquire([Counter("a", 1, 5), Counter("b", 0, 5)], [1, 1]) == (
            True,
            [1, 0],
        )
        assert await store.acquire([Counter("a", 1, 5)], [1]) == (False, [1])
        await store.add([Counter("c", 3, 100)])
        assert len(store) == 2
        clock.now += 6  # "a" has expired: it counts as 0 before any sweep
        assert await store.acquire([Counter("a", 1, 5)], [1]) == (True, [1])
        clock.now += 60  # the sweep drops everything expired
        await store.add([])
        assert len(store) == 1
        await store.aclose()
        assert len(store) == 0

    asyncio.run(scenario())
