"""One upstream attempt as its request headers fixed it, and its record once it ended.

:class:`~extproc.upstream.Exchange` drives an attempt through Envoy's phases; what it knows of
the attempt from the headers on is one :class:`Attempt`, and what the attempt's record and
dynamic metadata say is made here, from that and from what the exchange saw.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from extproc import tokens
from extproc.backends import BackendRuntime
from extproc.config import Pricing
from extproc.cost import cost_usd
from extproc.endpoints import BY_OPERATION
from extproc.errors import GatewayError
from extproc.telemetry import Record, Span, error_type
from extproc.translate import RequestContext, Translator
from extproc.usage import Usage, estimated
from extproc.wire import COST_HEADER, Key


# Attempt and Serving are never changed once built; not frozen all the same, since a frozen
# dataclass's __init__ costs about 1 us more per attempt (measured), on the hot path.
@dataclass(slots=True)
class Attempt:
    """What one attempt is: the same from its request headers to its record."""

    ctx: RequestContext
    backend: BackendRuntime
    pricing: Pricing | None
    span: Span
    number: int  # Envoy's count of the request's attempts, this one included
    extra: dict[str, str]  # telemetry.header_attributes, from the client's headers
    buckets: str  # the rate-limit buckets to debit, comma-joined
    request_bytes: int  # the client's body length (decoded, if it came compressed)

    def hand_off(self) -> dict[str, Any]:
        """What the record of this attempt needs besides Envoy's own figures, as dynamic
        metadata (``accounting.mode: envoy``): Envoy's filters read the answer's usage, and
        its access log brings both to :mod:`extproc.accesslog`."""
        ctx = self.ctx
        meta: dict[str, Any] = {
            Key.HANDED_OFF: True,
            Key.BACKEND: self.backend.name,
            Key.MODEL: ctx.route_model,
            Key.UPSTREAM_MODEL: ctx.upstream_model,
            Key.OPERATION: ctx.endpoint,
            Key.STREAM: ctx.stream,
        }
        if self.extra:
            meta[Key.EXTRA] = dict(self.extra)
        ids = self.span.ids()
        if ids is not None:
            meta[Key.TRACE] = ids
        return meta

    def in_its_shape(self, err: GatewayError) -> GatewayError:
        """``err`` in the error shape the attempt's API's clients expect."""
        shape = BY_OPERATION[self.ctx.endpoint].errors
        return err if err.shape == shape else dataclasses.replace(err, shape=shape)

    def cost_header(self, metadata: dict[str, Any], headers: dict[str, str]) -> None:
        """Add the cost header to a response whose headers have not left yet."""
        # Only a buffered (non-streaming) response still holds its headers at the end.
        if self.pricing is not None and not self.ctx.stream:
            headers[COST_HEADER] = f"{metadata.get(Key.COST_USD, 0.0):.6f}"


@dataclass(slots=True)
class Serving:
    """An attempt and the translator that serves it, from its request headers on."""

    attempt: Attempt
    translator: Translator
    handed_off: bool  # the answer is Envoy's to read (see :meth:`Attempt.hand_off`)

    @property
    def wants_response(self) -> bool:
        """Whether the answer comes back through the exchange (not handed off, and seen)."""
        return self.translator.needs_response and not self.handed_off


def build_record(
    attempt: Attempt,
    translator: Translator | None,
    *,
    status: int,
    duration: float,
    ttft: float | None,
    cut: bool,
    failure: str | None,
    billed: bool,
    body: bytes | None,
) -> Record:
    """The record of an attempt that ended. ``translator``: None when the backend refused the
    request before one was made; ``ttft``: seconds to the first response chunk, if one came;
    ``billed``: a 2xx answer the client got an error for; ``body``: the client's, if seen."""
    ctx = attempt.ctx
    # An answer that relays what was charged before (a stored response) has no usage of its
    # own, whatever it says, and costs nothing.
    metered = BY_OPERATION[ctx.endpoint].metered
    usage = translator.usage if translator is not None and metered else None
    # A provider reports usage once it is done, and ends its stream with a last event: a
    # client that leaves after either (the SDK closes the connection right after the last
    # event) cut nothing.
    cut = cut and usage is None and not (translator is not None and translator.complete)
    if metered and usage is None and translator is not None and (billed or 200 <= status < 300):
        # The provider billed it all the same: counted here, marked as estimated.
        usage = _estimate(attempt, translator, body)
    if failure is None and translator is not None:
        # A 2xx answer the translator turned into an error (event) for the client.
        failure = translator.failure
    return Record(
        operation=ctx.endpoint,
        provider=attempt.backend.provider,
        request_model=ctx.route_model,
        response_model=(translator.response_model if translator else None) or ctx.upstream_model,
        backend=attempt.backend.name,
        status=status,
        duration=duration,
        usage=usage,
        cost_usd=cost_usd(usage, attempt.pricing) if attempt.pricing and metered else 0.0,
        ttft=ttft if ctx.stream and ttft is not None and status < 400 else None,
        streaming=ctx.stream,
        cut=cut,
        error_type=error_type(status, cut, failure),
        attempt=attempt.number,
        extra=attempt.extra,
    )


def record_metadata(rec: Record) -> dict[str, Any]:
    """The dynamic metadata describing an attempt's record."""
    meta: dict[str, Any] = {
        Key.BACKEND: rec.backend,
        Key.MODEL: rec.request_model,
        Key.RESPONSE_MODEL: rec.response_model,
        Key.ATTEMPT: rec.attempt,
        Key.COST_USD: rec.cost_usd,
    }
    usage = rec.usage
    if usage is not None:
        meta[Key.USAGE_SOURCE] = usage.source
        meta[Key.INPUT_TOKENS] = usage.input_tokens
        meta[Key.OUTPUT_TOKENS] = usage.output_tokens
        meta[Key.TOTAL_TOKENS] = usage.total_tokens
        meta[Key.CACHED_INPUT_TOKENS] = usage.cached_input_tokens
        meta[Key.CACHE_WRITE_INPUT_TOKENS] = usage.cache_write_input_tokens
        meta[Key.GUARDRAIL_UNITS] = usage.guardrail_units
        meta[Key.REASONING_TOKENS] = usage.reasoning_tokens
        meta[Key.INPUT_CHARACTERS] = usage.input_characters
        meta[Key.IMAGES] = usage.images
        meta[Key.AUDIO_SECONDS] = usage.audio_seconds
    return meta


def _estimate(attempt: Attempt, translator: Translator, body: bytes | None) -> Usage:
    """Usage counted by the gateway: the prompt from the client's body (or, when the stage
    never saw it, from its length), the output from what the provider had sent."""
    model = translator.response_model or attempt.ctx.upstream_model
    if body is not None:
        prompt = tokens.prompt_tokens(body, model)
    else:
        prompt = tokens.body_tokens(attempt.request_bytes)
    return estimated(prompt, translator.output_tokens(model))
