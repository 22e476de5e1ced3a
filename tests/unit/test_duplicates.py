"""Repeated top-level keys the gateway decides on: found in every JSON spelling, and only at
the top level."""

from __future__ import annotations

import json

import pytest

from extproc.duplicates import repeated_keys


@pytest.mark.parametrize(
    ("body", "repeated"),
    [
        (b'{"model": "a", "messages": []}', []),
        (b'{"model": "a", "model": "b"}', ["model"]),
        (b'{"model":"a","mod\\u0065l":"b"}', ["model"]),
        (b'{"\\u006D\\u006f\\u0064\\u0065\\u006c":"a","model":"b"}', ["model"]),
        (b'{"model": "a", "stream": false, "stream": true}', ["stream"]),
        (b'{"model": "a", "model": "b", "stream": 1, "stream": 2}', ["model", "stream"]),
        # Not at the top level, or not a key: allowed.
        (b'{"model": "a", "tools": [{"model": 1, "model": 2}]}', []),
        (b'{"model": "a", "messages": [{"role": "model", "content": "model"}]}', []),
        (b'{"model": "a", "messages": [{"content": "say \\"model\\" twice: \\"model\\""}]}', []),
        (b'{"model": "a", "metadata": {"model": "x"}}', []),
    ],
)
def test_repeated_keys(body: bytes, repeated: list[str]) -> None:
    json.loads(body)  # every case is valid JSON
    assert repeated_keys(body) == repeated


def test_a_body_nested_beyond_the_checker_is_reported() -> None:
    deep = b'{"model": "a", "model": "b", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(RecursionError):
        repeated_keys(deep)
