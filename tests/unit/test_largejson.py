"""The usage and model of answers too large to hold, read from their ends (extproc.largejson)."""

from __future__ import annotations

import random

import orjson
from hypothesis import given
from hypothesis import strategies as st

from extproc.largejson import KEEP_BYTES, HeadTail

USAGE = {"prompt_tokens": 1200, "total_tokens": 1200}


def _fed(body: bytes, seed: int = 0, most: int = 200_000) -> HeadTail:
    reader = HeadTail()
    rng = random.Random(seed)
    at = 0
    while at < len(body):
        step = rng.randint(1, most)
        reader.feed(body[at : at + step])
        at += step
    return reader


def _embeddings(count: int) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": [0.125] * 512} for i in range(count)]
    doc = {"object": "list", "data": data, "model": "text-embedding-3-large", "usage": USAGE}
    return orjson.dumps(doc)


def test_an_embeddings_answer_gives_its_usage_and_model_from_its_tail() -> None:
    body = _embeddings(2000)
    assert len(body) > 10 * KEEP_BYTES
    reader = _fed(body)
    assert reader.length == len(body)
    assert reader.fields() == (USAGE, "text-embedding-3-large")


def test_a_chat_answer_gives_its_model_from_its_head() -> None:
    doc = {
        "id": "chatcmpl-1",
        "model": "gpt-4o",
        "choices": [{"message": {"role": "assistant", "content": "x" * (3 * KEEP_BYTES)}}],
        "usage": USAGE,
    }
    assert _fed(orjson.dumps(doc), seed=3).fields() == (USAGE, "gpt-4o")


def test_an_answer_without_usage_gives_none() -> None:
    body = _embeddings(300).replace(b'"usage"', b'"other"')
    assert _fed(body).fields() == (None, "text-embedding-3-large")


def test_a_short_answer_is_read_whole() -> None:
    body = orjson.dumps({"model": "m", "usage": USAGE})
    assert _fed(body).fields() == (USAGE, "m")


@given(st.binary(max_size=4096), st.integers(0, 10))
def test_any_bytes_read_without_raising_whatever_the_chunking(body: bytes, seed: int) -> None:
    whole = HeadTail()
    whole.feed(body)
    usage, model = _fed(body, seed, most=64).fields()
    assert (usage, model) == whole.fields()
    assert usage is None or isinstance(usage, dict)
    assert model is None or isinstance(model, str)
