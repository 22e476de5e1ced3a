"""What a request cost, from its usage and the configured prices (USD per 1M tokens, and per
the audio and image endpoints' own units)."""

from __future__ import annotations

from extproc.config import ModelBackend, ModelRoute, Pricing
from extproc.usage import Usage

_PER_MILLION = 1e-6


def pricing_for(model: ModelRoute | None, entry: ModelBackend | None) -> Pricing | None:
    """A backend's own prices win over the model's: the same model can cost less elsewhere."""
    if entry is not None and entry.pricing is not None:
        return entry.pricing
    return model.pricing if model is not None else None


def cost_usd(usage: Usage | None, pricing: Pricing | None) -> float:
    """Cached input tokens (cache reads) and cache writes are part of the input tokens (OpenAI
    and Bedrock count them so), and reasoning tokens part of the output tokens; each is priced
    at its own rate when one is set.
    """
    if pricing is None:
        return 0.0
    if usage is None:
        return pricing.per_request
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    written = min(usage.cache_write_input_tokens, usage.input_tokens - cached)
    reasoning = min(usage.reasoning_tokens, usage.output_tokens)
    cached_rate = pricing.input if pricing.cached_input is None else pricing.cached_input
    write_rate = pricing.input if pricing.cache_write is None else pricing.cache_write
    reasoning_rate = pricing.output if pricing.reasoning is None else pricing.reasoning
    tokens = (
        (usage.input_tokens - cached - written) * pricing.input
        + cached * cached_rate
        + written * write_rate
        + (usage.output_tokens - reasoning) * pricing.output
        + reasoning * reasoning_rate
    )
    units = usage.guardrail_units * pricing.guardrail / 1000
    media = (
        usage.input_characters * pricing.per_million_characters * _PER_MILLION
        + usage.images * pricing.per_image
        + usage.audio_seconds / 60 * pricing.per_audio_minute
    )
    return tokens * _PER_MILLION + units + media + pricing.per_request
