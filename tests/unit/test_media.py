"""The speech and image-generation pass-through translators (extproc/translate/media.py)."""

from __future__ import annotations

import base64

import orjson
import pytest

from extproc.endpoints import Operation
from extproc.translate import RequestContext
from extproc.translate.media import Images, Speech, Transcription, from_transcription, pass_through
from extproc.translate.openai import PassThrough
from extproc.usage import Usage


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


def test_transcription_usage_in_seconds_or_tokens() -> None:
    assert from_transcription({"type": "duration", "seconds": 7}) == Usage(audio_seconds=7.0)
    assert from_transcription({"type": "duration", "seconds": -3}) == Usage()
    tokens = from_transcription(
        {"type": "tokens", "input_tokens": 15, "output_tokens": 4, "total_tokens": 19}
    )
    assert tokens is not None and (tokens.input_tokens, tokens.output_tokens) == (15, 4)
    assert from_transcription({"type": "other"}) is None and from_transcription(None) is None


@pytest.mark.parametrize(
    ("answer", "seconds"),
    [
        ({"text": "hi", "usage": {"type": "duration", "seconds": 3}}, 3.0),
        ({"task": "translate", "duration": 2.25, "text": "hi"}, 2.25),
        ({"text": "hi"}, 0.0),  # a translation's json: nothing reported, nothing estimated
    ],
)
def test_a_transcript_is_counted_from_what_it_reports(
    answer: dict[str, object], seconds: float
) -> None:
    t = Transcription(_ctx("transcription"), "/v1/audio/transcriptions")
    assert not t.needs_request_body and t.request(None).body is None
    assert t.response_body_mode(200, {"content-type": "application/json"}) == "buffered"
    t.response_body(orjson.dumps(answer), True)
    assert t.usage is not None and t.usage.audio_seconds == seconds
    assert not t.usage.estimated and t.usage.input_tokens == 0


def test_a_text_transcript_is_passed_on_unread() -> None:
    t = Transcription(_ctx("translation"), "/v1/audio/translations")
    assert t.response_body_mode(200, {"content-type": "text/plain; charset=utf-8"}) == "none"
    assert t.usage == Usage()


def test_a_renamed_transcription_model_is_rewritten_in_the_form() -> None:
    t = Transcription(_ctx("transcription", upstream_model="whisper-1"), "/v1/audio/x")
    assert t.needs_request_body
    body = (
        b'--bb\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n'
        b'--bb\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nRIFF\r\n--bb--\r\n'
    )
    assert t.request(body).body == body.replace(b"\r\n\r\nm\r\n", b"\r\n\r\nwhisper-1\r\n")
