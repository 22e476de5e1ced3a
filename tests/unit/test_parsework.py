"""Bounds on the parse work of a client's JSON body (extproc/parsework.py)."""

from __future__ import annotations

import base64

import orjson
import pytest

from extproc.errors import GatewayError
from extproc.parsework import ParseBounds

BOUNDS = ParseBounds(max_containers=100_000, max_items=1_000_000)


def _chat(messages: list[object]) -> bytes:
    return orjson.dumps({"model": "m", "messages": messages})


def _refusal(body: bytes, bounds: ParseBounds = BOUNDS) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        bounds.check(body)
    return caught.value


def test_ten_million_empty_objects_are_refused_before_parsing() -> None:
    body = b'{"model": "m", "messages": [' + b",".join([b"{}"] * 10_000_000) + b"]}"
    err = _refusal(body)
    assert (err.status, err.code) == (400, "request_too_complex")
    assert "http.max_json_containers" in err.message


def test_a_million_and_one_numbers_are_refused() -> None:
    body = orjson.dumps({"model": "m", "input": [1] * 1_000_001})
    err = _refusal(body)
    assert (err.status, err.code) == (400, "request_too_complex")
    assert "http.max_json_items" in err.message


def test_brackets_and_commas_inside_strings_do_not_count() -> None:
    text = "a, {b} [c] \\" + '"' + " d, " * 500_000
    BOUNDS.check(_chat([{"role": "user", "content": text}]))


def test_a_large_image_or_token_batch_passes() -> None:
    image = base64.b64encode(b"\x89PNG" * 5_000_000).decode()
    BOUNDS.check(_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": f"data:image/png;base64,{image}"}}]}]))  # fmt: skip
    BOUNDS.check(orjson.dumps({"model": "m", "input": [[1234] * 8000 for _ in range(100)]}))


def test_the_bounds_themselves_pass() -> None:
    bounds = ParseBounds(max_containers=100, max_items=1000)
    bounds.check(orjson.dumps({"model": "m", "messages": [{}] * 98}))  # 100 containers
    assert _refusal(orjson.dumps({"messages": [{}] * 100}), bounds).code == "request_too_complex"
    bounds.check(orjson.dumps({"input": [1] * 1000}))
    assert _refusal(orjson.dumps({"input": [1] * 1001}), bounds).code == "request_too_complex"
