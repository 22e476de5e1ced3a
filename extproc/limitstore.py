"""Where rate-limit counters live: this process's memory, or Redis shared by gateway replicas.

A store knows nothing about rules or windows. It keeps integer counters with a time to live and
offers two operations: an all-or-nothing check-and-add over several counters (admission) and an
unconditional add (debiting usage after a response). Counters are integers everywhere: costs
are counted in micro-USD, so repeated debits never drift the way float sums do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, NamedTuple, Protocol

import orjson
from pydantic import AfterValidator

log = logging.getLogger(__name__)

MEMORY = "memory"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


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
    """The admission rule; RedisStore's Lua script (extproc/redisstore.py) applies the same."""
    return value + max(amount, 1) <= limit


class MemoryStore:
    """Counters of this process only.

    With limits counted here the gateway runs a single sidecar worker, whatever
    ``sidecar.workers`` says (``GatewayConfig.worker_count``), so a limit is exact for one
    gateway; replicas, which would each count on their own, need Redis.
    ``acquire`` never awaits, so on one event loop it is atomic without a lock.

    With a ``snapshot`` file the counters outlive the process: they are written there (to a
    temporary file, then renamed: a reader never sees half a file) at most ``SAVE_EVERY``
    seconds after a change, and read back when the worker that replaces it starts. A worker
    killed outright loses at most the last ``SAVE_EVERY`` seconds of counting.
    """

    _SWEEP_EVERY = 60.0
    SAVE_EVERY = 0.5

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        snapshot: Path | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._counters: dict[str, tuple[int, float]] = {}
        self._next_sweep = clock() + self._SWEEP_EVERY
        self._snapshot = snapshot
        self._save_pending = False
        if snapshot is not None:
            self._load(snapshot)

    def _load(self, path: Path) -> None:
        try:
            saved = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("rate-limit counters not restored from %s: %s", path, exc)
            return
        # Saved with wall-clock expiries: the monotonic clock of another process means nothing.
        offset = self._clock() - self._wall_clock()
        now = self._clock()
        for key, (value, expires) in saved.items():
            if expires + offset > now:
                self._counters[key] = (int(value), expires + offset)

    def save(self) -> None:
        """Write the live counters to the snapshot file now."""
        self._save_pending = False
        if self._snapshot is None:
            return
        offset = self._wall_clock() - self._clock()
        now = self._clock()
        live = {k: (v, e + offset) for k, (v, e) in self._counters.items() if e > now}
        tmp = self._snapshot.with_name(self._snapshot.name + ".tmp")
        try:
            tmp.write_bytes(orjson.dumps(live))
            os.replace(tmp, self._snapshot)
        except OSError as exc:
            log.warning("rate-limit counters not saved to %s: %s", self._snapshot, exc)

    def _changed(self) -> None:
        if self._snapshot is not None and not self._save_pending:
            self._save_pending = True
            asyncio.get_running_loop().call_later(self.SAVE_EVERY, self.save)

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
        if self._save_pending:
            self.save()
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
            self._changed()
        return value


def _check_spec(spec: str) -> str:
    if spec != MEMORY and not spec.startswith(_REDIS_SCHEMES):
        raise ValueError("must be 'memory' or a redis://, rediss:// or unix:// URL")
    return spec


StoreSpec = Annotated[str, AfterValidator(_check_spec)]
"""The ``ratelimit_store`` config value: ``memory`` or a Redis URL."""


def open_store(spec: str, snapshot: Path | None = None) -> LimitStore:
    """``snapshot``: where a memory store keeps its counters across a restart of its process."""
    if _check_spec(spec) == MEMORY:
        return MemoryStore(snapshot=snapshot)
    # Imported here: the Redis client (and what it pulls in) costs every process ~19 MB of
    # memory, which only a gateway configured with Redis should pay.
    from extproc.redisstore import RedisStore

    return RedisStore(spec)
