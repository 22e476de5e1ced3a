"""Where rate-limit counters live: this process's memory, or Redis shared by gateway replicas.

A store knows nothing about rules or windows. It keeps integer counters with a time to live and
offers two operations: an all-or-nothing check-and-add over several counters (admission) and an
unconditional add (debiting usage after a response). Counters are integers everywhere: costs
are counted in micro-USD, so repeated debits never drift the way float sums do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Annotated, NamedTuple, Protocol

import redis.asyncio as aioredis
from pydantic import AfterValidator
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

MEMORY = "memory"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# Admission waits on the store, so a slow Redis must fail fast into the failure policy rather
# than hold every request for the client library's default of 5 seconds.
DEFAULT_REDIS_TIMEOUT = 0.5


class Counter(NamedTuple):
    key: str
    amount: int
    ttl: int
    """Seconds the counter must live after this update (it is refreshed on every update)."""


class StoreUnavailable(Exception):
    """The store could not be reached or failed; the message names no key or credential."""


class LimitStore(Protocol):
    async def acquire(
        self, counters: Sequence[Counter], limits: Sequence[int]
    ) -> tuple[bool, list[int]]:
        """Add every amount if every counter has room, else add nothing; one atomic step.

        A counter has room (:func:`has_room`) when ``value + max(amount, 1) <= limit``: an
        amount of 0 (a token or cost budget checked at admission) still needs the counter to be
        below its limit.
        Keys must be distinct. Returns whether the amounts were added and each counter's value
        afterwards (unchanged when refused).
        """
        ...

    async def add(self, counters: Sequence[Counter]) -> None:
        """Add the amounts unconditionally (debits may take a counter past its limit)."""
        ...

    async def aclose(self) -> None: ...


def has_room(value: int, amount: int, limit: int) -> bool:
    """The admission rule; the Lua script below applies the same one."""
    return value + max(amount, 1) <= limit


class MemoryStore:
    """Counters of this process only.

    The gateway runs one sidecar process per core and each has its own MemoryStore, so a limit
    is enforced per process; use Redis to share counters between processes and replicas.
    ``acquire`` never awaits, so on one event loop it is atomic without a lock.
    """

    _SWEEP_EVERY = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counters: dict[str, tuple[int, float]] = {}
        self._next_sweep = clock() + self._SWEEP_EVERY

    async def acquire(
        self, counters: Sequence[Counter], limits: Sequence[int]
    ) -> tuple[bool, list[int]]:
        now = self._now()
        values = [self._value(c.key, now) for c in counters]
        if not all(map(has_room, values, (c.amount for c in counters), limits)):
            return False, values
        return True, [self._add(c, v, now) for c, v in zip(counters, values, strict=True)]

    async def add(self, counters: Sequence[Counter]) -> None:
        now = self._now()
        for c in counters:
            self._add(c, self._value(c.key, now), now)

    async def aclose(self) -> None:
        self._counters.clear()

    def __len__(self) -> int:
        return len(self._counters)

    def _now(self) -> float:
        # Header-value buckets are created by clients, so expired ones must be dropped even if
        # never read again; one pass a minute keeps that O(live counters).
        now = self._clock()
        if now >= self._next_sweep:
            self._counters = {k: e for k, e in self._counters.items() if e[1] > now}
            self._next_sweep = now + self._SWEEP_EVERY
        return now

    def _value(self, key: str, now: float) -> int:
        entry = self._counters.get(key)
        return entry[0] if entry is not None and entry[1] > now else 0

    def _add(self, counter: Counter, value: int, now: float) -> int:
        if counter.amount:
            value += counter.amount
            self._counters[counter.key] = (value, now + counter.ttl)
        return value


# KEYS: the counters. ARGV: amount, limit, ttl for each key in turn.
# Returns {admitted (0 or 1), value of each key afterwards}.
_ACQUIRE = """
local values = {}
local admitted = 1
for i, key in ipairs(KEYS) do
  local value = tonumber(redis.call('GET', key) or '0')
  values[i] = value
  if value + math.max(tonumber(ARGV[3 * i - 2]), 1) > tonumber(ARGV[3 * i - 1]) then
    admitted = 0
  end
end
if admitted == 1 then
  for i, key in ipairs(KEYS) do
    if tonumber(ARGV[3 * i - 2]) > 0 then
      values[i] = redis.call('INCRBY', key, ARGV[3 * i - 2])
      redis.call('EXPIRE', key, ARGV[3 * i])
    end
  end
end
table.insert(values, 1, admitted)
return values
"""


class RedisStore:
    """Counters in Redis, shared by every process and replica pointing at it.

    Admission is one Lua script, so concurrent gateways can never admit past a limit. The client
    does not retry: a retried INCRBY whose first reply was lost would count a request twice, and
    a retry would only delay the failure policy. Values stay below 2**53 (Lua numbers are
    doubles): 9e15 tokens or 9e9 USD per window.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_REDIS_TIMEOUT) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._acquire = self._redis.register_script(_ACQUIRE)

    async def acquire(
        self, counters: Sequence[Counter], limits: Sequence[int]
    ) -> tuple[bool, list[int]]:
        args: list[int] = []
        for c, limit in zip(counters, limits, strict=True):
            args += (c.amount, limit, c.ttl)
        try:
            reply = await self._acquire(keys=[c.key for c in counters], args=args)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return bool(reply[0]), [int(v) for v in reply[1:]]

    async def add(self, counters: Sequence[Counter]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for c in counters:
            pipe.incrby(c.key, c.amount)
            pipe.expire(c.key, c.ttl)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        await self._redis.aclose()


def _unavailable(exc: BaseException) -> StoreUnavailable:
    # Redis error texts name the host and port but never the URL's password.
    return StoreUnavailable(f"{type(exc).__name__}: {exc}")


def _check_spec(spec: str) -> str:
    if spec != MEMORY and not spec.startswith(_REDIS_SCHEMES):
        raise ValueError("must be 'memory' or a redis://, rediss:// or unix:// URL")
    return spec


StoreSpec = Annotated[str, AfterValidator(_check_spec)]
"""The ``ratelimit_store`` config value: ``memory`` or a Redis URL."""


def open_store(spec: str) -> LimitStore:
    if _check_spec(spec) == MEMORY:
        return MemoryStore()
    return RedisStore(spec)
