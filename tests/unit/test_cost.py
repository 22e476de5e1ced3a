from __future__ import annotations

import pytest

from extproc.config import ModelBackend, ModelRoute, Pricing
from extproc.cost import cost_usd, pricing_for
from extproc.usage import Usage


def test_cost_with_cached_and_reasoning_rates() -> None:
    pricing = Pricing(input=0.15, cached_input=0.075, output=0.60, reasoning=1.0, per_request=0.001)
    usage = Usage(
        input_tokens=1000,
        output_tokens=500,
        total_tokens=1500,
        cached_input_tokens=400,
        reasoning_tokens=100,
    )
    expected = (600 * 0.15 + 400 * 0.075 + 400 * 0.60 + 100 * 1.0) / 1e6 + 0.001
    assert cost_usd(usage, pricing) == pytest.approx(expected, rel=1e-12)


def test_cost_without_special_rates_and_without_pricing() -> None:
    usage = Usage(input_tokens=10, output_tokens=20, total_tokens=30, cached_input_tokens=5)
    assert cost_usd(usage, Pricing(input=1, output=2)) == pytest.approx(50e-6)
    assert cost_usd(usage, None) == 0.0
    assert cost_usd(None, Pricing(per_request=0.5)) == 0.5


def test_backend_price_overrides_model_price() -> None:
    cheap = Pricing(input=0.035, output=0.14)
    model = ModelRoute(
        name="m",
        backends=[ModelBackend(backend="a"), ModelBackend(backend="b", pricing=cheap)],
        pricing=Pricing(input=0.15, output=0.6),
    )
    assert pricing_for(model, model.backends[1]) is cheap
    assert pricing_for(model, model.backends[0]) is model.pricing


def test_cache_writes_priced_at_their_own_rate() -> None:
    # Anthropic-style: 1,000 input tokens of which 300 read from the cache and 500 written to it.
    pricing = Pricing(input=3.0, cached_input=0.3, cache_write=3.75, output=15.0)
    usage = Usage(
        input_tokens=1000,
        output_tokens=100,
        total_tokens=1100,
        cached_input_tokens=300,
        cache_write_input_tokens=500,
    )
    expected = (200 * 3.0 + 300 * 0.3 + 500 * 3.75 + 100 * 15.0) / 1e6
    assert cost_usd(usage, pricing) == pytest.approx(expected, rel=1e-12)
    # Without a cache_write price, writes cost the input rate.
    assert cost_usd(usage, Pricing(input=3.0, cached_input=0.3, output=15.0)) == pytest.approx(
        (700 * 3.0 + 300 * 0.3 + 100 * 15.0) / 1e6, rel=1e-12
    )


def test_guardrail_units_are_priced_per_thousand() -> None:
    usage = Usage(input_tokens=10, output_tokens=0, total_tokens=10, guardrail_units=2500)
    assert cost_usd(usage, Pricing(input=1.0, guardrail=0.15)) == pytest.approx(
        10e-6 + 2500 * 0.15 / 1000, rel=1e-12
    )


def test_media_units_are_priced_in_their_own_units() -> None:
    pricing = Pricing(
        input=5.0, output=40.0, per_million_characters=15.0, per_image=0.04, per_audio_minute=0.006
    )
    assert cost_usd(Usage(input_characters=1000), pricing) == pytest.approx(0.015, rel=1e-12)
    assert cost_usd(Usage(images=3), pricing) == pytest.approx(0.12, rel=1e-12)
    assert cost_usd(Usage(audio_seconds=90.0), pricing) == pytest.approx(0.009, rel=1e-12)
    # gpt-image: each image and its tokens.
    both = Usage(input_tokens=10, output_tokens=2112, total_tokens=2122, images=2)
    assert cost_usd(both, pricing) == pytest.approx(
        0.08 + (10 * 5.0 + 2112 * 40.0) / 1e6, rel=1e-12
    )
    # No media price set: media units cost nothing, tokens as ever.
    assert cost_usd(Usage(input_characters=500, images=1), Pricing(input=1.0)) == 0.0
