"""Rate limits and budgets: which rules a request falls under, admission, and usage debits.

A rule counts requests, tokens or cost (USD) per fixed window aligned to UTC: second, minute,
hour, day or calendar month. Its ``match`` picks the requests it applies to and splits them
into buckets: a field left out applies to every request and does not split; a value applies
only to requests with that value; ``"*"`` applies to every request that has a value and keeps
one bucket per value (per client, per model, per header value).

Admission (router stage) adds 1 to every matching requests bucket in one atomic step, or to
none if any is full, and refuses a request whose tokens or cost bucket is already at or over
its limit. Tokens and cost are debited when the response ends, into the window current then;
a request already admitted therefore always completes and only the next one is refused.

Bucket keys in the store: ``aigw:rl:<kind>:<window>:<digest>:<window start, unix seconds>``,
where kind is ``requests``, ``tokens`` or ``cost-usd`` and digest is the first 128 bits (hex)
of SHA-256 over the bucket's values (client, model, header values) as sorted-key JSON.
Hashing keeps keys bounded and keeps client-sent header values out of the store. The window
start in the key makes rollover a new key; each key expires 60 s after its window ends.
Rules that resolve to the same key (same kind, window and values) share one counter, and the
smallest limit applies.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from extproc.errors import RATE_LIMIT, SERVER, GatewayError
from extproc.limitstore import Counter, LimitStore, StoreUnavailable, has_room

log = logging.getLogger(__name__)

ANY = "*"
KEY_PREFIX = "aigw:rl:"
# Outlives the window so a replica whose clock runs a little behind still finds the counter.
_EXPIRY_SLACK = 60
_MICRO = 1_000_000


class Window(StrEnum):
    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"

    def bounds(self, now: float) -> tuple[int, int]:
        """Start and end (unix seconds, UTC) of the window containing ``now``."""
        if self is Window.MONTH:
            day = datetime.fromtimestamp(now, UTC)
            start = calendar.timegm((day.year, day.month, 1, 0, 0, 0))
            return start, start + 86400 * calendar.monthrange(day.year, day.month)[1]
        length = _LENGTHS[self]
        start = int(now // length) * length
        return start, start + length


_LENGTHS = {Window.SECOND: 1, Window.MINUTE: 60, Window.HOUR: 3600, Window.DAY: 86400}


class Kind(StrEnum):
    """What a bucket counts; also the suffix of its ``x-ratelimit-*`` response headers."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    COST = "cost-usd"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Model):
    client: str | None = Field(default=None, min_length=1)
    model: str | None = Field(default=None, min_length=1)
    header: dict[str, str] = Field(default_factory=dict)

    @field_validator("header")
    @classmethod
    def _lower(cls, header: dict[str, str]) -> dict[str, str]:
        # ext_proc hands headers over with lowercase names.
        return {name.lower(): value for name, value in header.items()}

    def values(
        self, client: str | None, model: str, headers: Mapping[str, str]
    ) -> dict[str, object] | None:
        """The bucket's values for this request, or None when the rule does not apply."""
        out: dict[str, object] = {}
        for name, want, got in (("client", self.client, client), ("model", self.model, model)):
            if want is None:
                continue
            if not _matches(want, got):
                return None
            out[name] = got
        if self.header:
            sent = {name: headers.get(name) for name in self.header}
            if not all(_matches(want, sent[name]) for name, want in self.header.items()):
                return None
            out["header"] = sent
        return out


def _matches(want: str, got: str | None) -> bool:
    return bool(got) and want in (ANY, got)


class LimitRule(_Model):
    """One of ``requests``, ``tokens`` (input + output) or ``cost_usd`` per window."""

    match: Match = Match()
    requests: int | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    # Counted in micro-USD, so a budget below one micro-dollar would be zero.
    cost_usd: float | None = Field(default=None, ge=1 / _MICRO)
    per: Window

    @model_validator(mode="after")
    def _one_kind(self) -> LimitRule:
        given = [v for v in (self.requests, self.tokens, self.cost_usd) if v is not None]
        if len(given) != 1:
            raise ValueError("a limit sets exactly one of requests, tokens or cost_usd")
        return self

    @property
    def kind(self) -> Kind:
        if self.requests is not None:
            return Kind.REQUESTS
        return Kind.TOKENS if self.tokens is not None else Kind.COST

    @property
    def limit(self) -> int:
        """The limit in store units (micro-USD for cost)."""
        if self.cost_usd is not None:
            return _micro(self.cost_usd)
        return self.requests or self.tokens or 0


def rule_errors(rules: Sequence[LimitRule], clients: Collection[str]) -> list[str]:
    """Config errors of rules naming clients that do not exist (a typo would never limit)."""
    errors = []
    for i, rule in enumerate(rules):
        name = rule.match.client
        if name is not None and not clients:
            errors.append(f"limits[{i}].match.client: no `clients` are configured")
        elif name is not None and name != ANY and name not in clients:
            errors.append(f"limits[{i}].match.client: unknown client {name!r}")
    return errors


def _micro(usd: float) -> int:
    return round(usd * _MICRO) if math.isfinite(usd) else MAX_DEBIT


# The most one response adds to a counter. A provider may report any usage (2**64 tokens):
# Redis's INCRBY takes only int64 and Lua compares in doubles (exact below 2**53), so an amount
# past that would make the debit fail, and the usage go uncounted. Clamped, it still exhausts
# any budget at once.
MAX_DEBIT = 2**50


def _bounded(amount: int) -> int:
    return min(max(amount, 0), MAX_DEBIT)


@dataclass(frozen=True, slots=True)
class Admission:
    """The admission decision for one request."""

    error: GatewayError | None = None
    """The 429 (or 503 when the store is down and failing closed) to answer; None = admitted."""
    debit_buckets: tuple[str, ...] = ()
    """Token and cost buckets to pass to :meth:`Limiter.debit`; ids contain no comma."""
    counted: tuple[Sequence[_Bucket], Sequence[int], float] | None = field(default=None, repr=False)
    """An admitted request's buckets, their values after it and the time, for :attr:`headers`."""

    @property
    def allowed(self) -> bool:
        return self.error is None

    @property
    def headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` of the tightest bucket of each kind, for an admitted request (a
        refusal carries its own on ``error``). Built when read: only refusals send them (README,
        "Rate limits"), so admission does not pay for them on every request."""
        return _headers(*self.counted) if self.counted is not None else {}


@dataclass(frozen=True, slots=True)
class _Bucket:
    bucket_id: str  # kind:window:digest, the key without its window start
    kind: Kind
    window: Window
    limit: int
    scope: str


class Limiter:
    """Applies the rules against one store; one instance per sidecar process."""

    def __init__(
        self,
        rules: Sequence[LimitRule],
        store: LimitStore,
        *,
        fail_open: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = tuple(rules)
        self._store = store
        self._fail_open = fail_open
        self._clock = clock
        self._store_down = False
        self.needs_model = any(rule.match.model is not None for rule in self._rules)
        """Whether admission depends on the model: else the router admits before it parses."""

    async def admit(self, client: str | None, model: str, headers: Mapping[str, str]) -> Admission:
        """``client`` is the authenticated client's name (None without ``clients``), ``model``
        the requested model, ``headers`` the request headers with lowercase names."""
        buckets = self._buckets(client, model, headers)
        if not buckets:
            return Admission()
        now = self._clock()
        counters = [
            _counter(b.bucket_id, b.window, 1 if b.kind is Kind.REQUESTS else 0, now)
            for b in buckets
        ]
        try:
            admitted, values = await self._store.acquire(counters, [b.limit for b in buckets])
        except StoreUnavailable as exc:
            self._store_failed(exc)
            if not self._fail_open:
                return Admission(error=_store_error())
            return Admission(debit_buckets=_debits(buckets))
        self._store_ok()
        if admitted:
            return Admission(debit_buckets=_debits(buckets), counted=(buckets, values, now))
        refusal = _refusal(buckets, counters, values, now, _headers(buckets, values, now))
        return Admission(error=refusal)

    async def debit(self, buckets: Sequence[str], tokens: int, cost_usd: float) -> None:
        """Add a finished response's usage to ``Admission.debit_buckets``.

        Unknown or malformed bucket ids are ignored. Store failures are logged, never raised:
        the response has already been served.
        """
        amounts = {Kind.TOKENS: _bounded(tokens), Kind.COST: _bounded(_micro(cost_usd))}
        now = self._clock()
        counters = []
        for bucket_id in buckets:
            parsed = _parse_bucket_id(bucket_id)
            if parsed is None or not amounts.get(parsed[0]):
                continue
            kind, window = parsed
            counters.append(_counter(bucket_id, window, amounts[kind], now))
        if not counters:
            return
        try:
            await self._store.add(counters)
        except StoreUnavailable as exc:
            self._store_failed(exc)
        else:
            self._store_ok()

    def _buckets(self, client: str | None, model: str, headers: Mapping[str, str]) -> list[_Bucket]:
        by_id: dict[str, _Bucket] = {}
        for rule in self._rules:
            values = rule.match.values(client, model, headers)
            if values is None:
                continue
            digest = hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS))
            bucket_id = f"{rule.kind}:{rule.per}:{digest.hexdigest()[:32]}"
            known = by_id.get(bucket_id)
            if known is None or rule.limit < known.limit:
                by_id[bucket_id] = _Bucket(
                    bucket_id, rule.kind, rule.per, rule.limit, _scope(values)
                )
        return list(by_id.values())

    def _store_failed(self, exc: StoreUnavailable) -> None:
        # Once per outage: with the store down every request would log otherwise.
        if not self._store_down:
            policy = "admitting requests" if self._fail_open else "refusing requests"
            log.error("rate-limit store unavailable (%s); %s until it is back", exc, policy)
        self._store_down = True

    def _store_ok(self) -> None:
        if self._store_down:
            log.warning("rate-limit store available again")
        self._store_down = False


def _counter(bucket_id: str, window: Window, amount: int, now: float) -> Counter:
    start, end = window.bounds(now)
    return Counter(f"{KEY_PREFIX}{bucket_id}:{start}", amount, math.ceil(end - now) + _EXPIRY_SLACK)


def _debits(buckets: Sequence[_Bucket]) -> tuple[str, ...]:
    return tuple(b.bucket_id for b in buckets if b.kind is not Kind.REQUESTS)


def _parse_bucket_id(bucket_id: str) -> tuple[Kind, Window] | None:
    kind, _, rest = bucket_id.partition(":")
    window, _, digest = rest.partition(":")
    if len(digest) != 32 or digest.strip("0123456789abcdef"):
        return None
    try:
        return Kind(kind), Window(window)
    except ValueError:
        return None


def _scope(values: Mapping[str, object]) -> str:
    parts = [f"{name} {values[name]}" for name in ("client", "model") if name in values]
    header = values.get("header")
    if isinstance(header, dict):
        # Names only: header values are the client's own and may be sensitive.
        parts += [f"header {name}" for name in sorted(header)]
    return f" for {', '.join(parts)}" if parts else ""


def _remaining(bucket: _Bucket, value: int) -> int:
    return max(bucket.limit - value, 0)


def _headers(buckets: Sequence[_Bucket], values: Sequence[int], now: float) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-{limit,remaining,reset}-<kind>`` for the tightest bucket per kind."""
    tightest: dict[Kind, tuple[_Bucket, int]] = {}
    for bucket, value in zip(buckets, values, strict=True):
        known = tightest.get(bucket.kind)
        if known is None or _remaining(bucket, value) < _remaining(*known):
            tightest[bucket.kind] = (bucket, value)
    out = {}
    for kind, (bucket, value) in tightest.items():
        out[f"x-ratelimit-limit-{kind}"] = _amount(kind, bucket.limit)
        out[f"x-ratelimit-remaining-{kind}"] = _amount(kind, _remaining(bucket, value))
        out[f"x-ratelimit-reset-{kind}"] = _duration(bucket.window.bounds(now)[1] - now)
    return out


def _refusal(
    buckets: Sequence[_Bucket],
    counters: Sequence[Counter],
    values: Sequence[int],
    now: float,
    headers: dict[str, str],
) -> GatewayError:
    full = [
        (bucket.window.bounds(now)[1], bucket, value)
        for bucket, counter, value in zip(buckets, counters, values, strict=True)
        if not has_room(value, counter.amount, bucket.limit)
    ]
    # Admission needs every full bucket to roll over, so the latest reset is the one to wait for.
    reset_at, bucket, value = max(full, key=lambda f: f[0])
    wait = max(math.ceil(reset_at - now), 1)
    what = "Budget" if bucket.kind is Kind.COST else "Rate limit"
    unit = "cost (USD)" if bucket.kind is Kind.COST else str(bucket.kind)
    message = (
        f"{what} reached on {unit} per {bucket.window}{bucket.scope}: limit"
        f" {_amount(bucket.kind, bucket.limit)}, used {_amount(bucket.kind, value)}."
        f" Please try again in {_duration(wait)}."
    )
    code = "insufficient_quota" if bucket.kind is Kind.COST else "rate_limit_exceeded"
    return GatewayError(
        429, message, RATE_LIMIT, code=code, headers={**headers, "retry-after": str(wait)}
    )


def _store_error() -> GatewayError:
    return GatewayError(
        503,
        "Rate limits cannot be checked right now; please try again shortly.",
        SERVER,
        code="rate_limit_unavailable",
        headers={"retry-after": "1"},
    )


def _amount(kind: Kind, value: int) -> str:
    if kind is not Kind.COST:
        return str(value)
    dollars, micros = divmod(value, _MICRO)
    return f"{dollars}.{micros:06d}".rstrip("0").rstrip(".")


def _duration(seconds: float) -> str:
    """Like OpenAI's reset headers (Go durations): ``250ms``, ``59s``, ``6m0s``, ``1h0m0s``."""
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 0)}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
