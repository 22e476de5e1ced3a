"""Rate-limit counters in Redis, shared by every gateway process and replica pointing at it.

Imported only when ``ratelimit_store`` names a Redis URL (see :func:`extproc.limitstore.open_store`).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from extproc.limitstore import Counter, StoreUnavailable

# Admission waits on the store, so a slow Redis must fail fast into the failure policy rather
# than hold every request for the client library's default of 5 seconds.
DEFAULT_REDIS_TIMEOUT = 0.5


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
