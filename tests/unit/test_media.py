"""The speech and image-generation pass-through translators (extproc/translate/media.py)."""

from __future__ import annotations

import base64

import orjson
import pytest

from extproc.endpoints import Operation
from extproc.translate import RequestContext
from extproc.translate.media import Images, Speech, pass_through
from extproc.translate.openai import PassThrough


def _ctx(endpoint: Operation, upstream_model: str = "m") -> RequestContext:
    return RequestContext(endpoint, "m", upstream_model, "m", "/v1/x")


def test_each_endpoint_gets_its_translator() -> None:
    assert pass_through("speech") is Speech and pass_through("image_generation") is Images
    assert pass_through("chat") is PassThrough


def test_speech_counts_characters_and_never_reads_the_audio() -> None:
    speech = Speech(_ctx("speech"), "/v1/audio/speech")
    body = orjson.dumps({"model": "m", "voice": "alloy", "input": "héllo wörld"})
    assert speech.needs_request_body
    assert speech.request(body).body is None  # the client's bytes, unchanged
    assert speech.response_body_mode(200, {"content-type": "audio/mpeg"}) == "none"
    assert speech.usage is not None and speech.usage.input_characters == 11
    assert speech.usage.input_tokens == speech.output_tokens("m") == 0


def test_speech_rewrites_only_the_model_when_the_backend_names_it_otherwise() -> None:
    speech = Speech(_ctx("speech", upstream_model="tts-1-hd"), "/v1/audio/speech")
    sent = speech.request(orjson.dumps({"model": "m", "voice": "alloy", "input": "hi"})).body
    assert sent is not None and orjson.loads(sent)["model"] == "tts-1-hd"


def test_a_speech_error_is_read_as_json_and_costs_nothing() -> None:
    speech = Speech(_ctx("speech"), "/v1/audio/speech")
    speech.request(orjson.dumps({"model": "m", "input": "hi"}))
    assert speech.response_body_mode(400, {"content-type": "application/json"}) == "buffered"
    speech.response_body(b'{"error": {"message": "voice"}}', True)
    assert speech.usage is None


def _answer(n: int, usage: bool) -> bytes:
    data = [{"b64_json": base64.b64encode(bytes(range(256)) * 40).decode()} for _ in range(n)]
    doc: dict[str, object] = {"created": 1, "data": data}
    if usage:
        doc["usage"] = {"input_tokens": 7, "output_tokens": 272 * n, "total_tokens": 7 + 272 * n}
    return orjson.dumps(doc)


@pytest.mark.parametrize("usage", [True, False])
def test_images_are_counted_with_their_tokens_when_reported(usage: bool) -> None:
    images = Images(_ctx("image_generation"), "/v1/images/generations")
    images.response_body_mode(200, {"content-type": "application/json"})
    images.response_body(_answer(3, usage), True)
    assert images.usage is not None and images.usage.images == 3
    assert (images.usage.input_tokens, images.usage.output_tokens) == (
        (7, 816) if usage else (0, 0)
    )
    assert not images.usage.estimated and images.output_tokens("m") == 0


@pytest.mark.parametrize("size", [1, 7, 9, 10, 4096])
def test_an_answer_too_large_to_buffer_counts_its_images_across_chunks(size: int) -> None:
    body = _answer(4, usage=True)
    images = Images(_ctx("image_generation"), "/v1/images/generations")
    images.response_body_mode(200, {"content-type": "application/json"})
    images.read_unbuffered()
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    for i, chunk in enumerate(chunks):
        assert images.response_body(chunk, i == len(chunks) - 1) == chunk
    assert images.usage is not None and images.usage.images == 4
    assert images.usage.output_tokens == 4 * 272
