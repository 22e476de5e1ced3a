"""Speech, image generation, transcription and translation end to end: the official SDK -> Envoy -> sidecar -> fake OpenAI
and fake Azure (both surfaces), in both accounting modes. Their answers are never Envoy's to
read: the sidecar counts them in their own units (characters, images) and tokens where
reported. Transcriptions and translations are multipart forms: the router reads their model
without changing a byte, and refuses a form it cannot read with a 400 naming why."""

from __future__ import annotations

import base64
import http.client
import io
import math
import os
import time
import wave
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from openai import OpenAI

from tests.fakes.audio import AUDIO_TOKENS_PER_SECOND, CHUNK_BYTES, speech_audio, transcript
from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.imagegen import OUTPUT_TOKENS, image_bytes
from tests.fakes.openai import FakeOpenAI, count_tokens
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway

UPSTREAM_KEY = "sk-upstream-media-5c1e"
PRICING = {
    "input": 5.0,
    "output": 40.0,
    "per_million_characters": 15.0,
    "per_image": 0.04,
    "per_audio_minute": 0.006,
}
# Small enough that a long speech answer does not fit: it must pass through unbuffered.
MAX_REQUEST_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY, chunk_delay=0.01) as fake:
        yield fake


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzure]:
    with FakeAzure(deployments={"my-tts", "my-image", "my-whisper"}, chunk_delay=0.0) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    otlp: OTLPReceiver,
    accounting: str,
    openai_fake: FakeOpenAI,
    azure: FakeAzure,
    bedrock: FakeBedrock,
) -> Iterator[Gateway]:
    config = {
        "accounting": {"mode": accounting, "flush_interval": "50ms"},
        "http": {"max_request_bytes": MAX_REQUEST_BYTES},
        "backends": {
            "oa": {"schema": "openai", "url": f"{openai_fake.url}/v1", "api_key": "${UP_KEY}"},
            "az": {"schema": "azure_openai", "url": azure.url, "api_key": "${AZ_KEY}"},
            "az1": {"schema": "azure_openai", "url": azure.url, "api_key": "${AZ_KEY}", "surface": "v1"},
            "br": {
                "schema": "aws_bedrock",
                "url": bedrock.url,
                "region": "us-east-1",
                "access_key_id": "${AWS_ID}",
                "secret_access_key": "${AWS_SECRET}",
            },
        },
        "models": [
            {"name": "tts-1", "pricing": PRICING, "backends": [{"backend": "oa"}]},
            {"name": "gpt-image-1", "pricing": PRICING, "backends": [{"backend": "oa"}]},
            {"name": "dall-e-2", "pricing": PRICING, "backends": [{"backend": "oa"}]},
            {"name": "whisper-1", "pricing": PRICING, "backends": [{"backend": "oa"}]},
            {"name": "gpt-4o-transcribe", "pricing": PRICING, "backends": [{"backend": "oa"}]},
            {"name": "whisper", "backends": [{"backend": "oa", "model": "whisper-1"}]},
            {"name": "azure-whisper", "backends": [{"backend": "az", "model": "my-whisper"}]},
            {"name": "azure-tts", "backends": [{"backend": "az", "model": "my-tts"}]},
            {"name": "azure-image", "backends": [{"backend": "az", "model": "my-image"}]},
            {"name": "azure-v1-tts", "backends": [{"backend": "az1", "model": "my-tts"}]},
            {"name": "claude", "backends": [{"backend": "br", "model": "anthropic.claude-3-haiku-20240307-v1:0"}]},
        ],
    }  # fmt: skip
    env = {
        **otlp.env(100),
        "UP_KEY": UPSTREAM_KEY,
        "AZ_KEY": azure.api_key or "",
        "AWS_ID": bedrock.access_key,
        "AWS_SECRET": bedrock.secret_key,
    }
    with Gateway(config, env=env) as gw:
        yield gw


def _traced(client: OpenAI) -> tuple[OpenAI, str]:
    trace_id = os.urandom(16).hex()
    parent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
    return client.with_options(default_headers={"traceparent": parent}), trace_id


def _record(otlp: OTLPReceiver, trace_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = [s for s in list(otlp.spans) if s["trace_id"] == trace_id]
        if spans:
            time.sleep(0.3)
            spans = [s for s in list(otlp.spans) if s["trace_id"] == trace_id]
            assert len(spans) == 1, spans
            return dict(spans[0]["attributes"])
        time.sleep(0.1)
    pytest.fail("no record of the request arrived")


# --- speech -------------------------------------------------------------------------------------


def test_speech_streams_the_audio_and_is_charged_per_character(
    client: OpenAI, otlp: OTLPReceiver, openai_fake: FakeOpenAI
) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    traced, trace_id = _traced(client)
    with traced.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        cost = len(text) * PRICING["per_million_characters"] / 1e6
        assert float(response.headers["x-ai-eg-cost-usd"]) == pytest.approx(cost, abs=1e-6)
        audio = b"".join(response.iter_bytes())
    assert audio == speech_audio(text)
    record = _record(otlp, trace_id)
    assert record["gen_ai.operation.name"] == "speech"
    assert record["ai_gateway.input_characters"] == len(text)
    assert record["ai_gateway.usage_source"] == "provider"
    assert record.get("gen_ai.usage.input_tokens", 0) == 0  # nothing estimated as tokens
    assert record.get("gen_ai.usage.output_tokens", 0) == 0
    assert record["ai_gateway.cost_usd"] == pytest.approx(cost, rel=1e-12)
    sent = openai_fake.requests[-1]
    assert sent.path == "/v1/audio/speech" and sent.json()["voice"] == "alloy"


def test_a_speech_answer_larger_than_the_buffer_limit_passes_through_whole(
    client: OpenAI, otlp: OTLPReceiver
) -> None:
    text = "word " * 700  # 3,500 characters: 1.7 MB of audio, over max_request_bytes
    traced, trace_id = _traced(client)
    with traced.audio.speech.with_streaming_response.create(
        model="tts-1", voice="nova", input=text, response_format="opus"
    ) as response:
        assert response.headers["content-type"] == "audio/opus"
        audio = b"".join(response.iter_bytes())
    assert len(audio) > MAX_REQUEST_BYTES and audio == speech_audio(text)
    assert _record(otlp, trace_id)["ai_gateway.input_characters"] == len(text)


def test_a_client_that_leaves_mid_speech_still_gets_one_record(
    gateway: Gateway, otlp: OTLPReceiver
) -> None:
    text = "talk " * 400
    trace_id = os.urandom(16).hex()
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    body = {"model": "tts-1", "voice": "echo", "input": text}
    conn.request(
        "POST",
        "/v1/audio/speech",
        orjson.dumps(body),
        {
            "content-type": "application/json",
            "traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01",
        },
    )
    response = conn.getresponse()
    assert response.status == 200
    assert len(response.read(CHUNK_BYTES)) == CHUNK_BYTES
    conn.sock.close()
    conn.close()
    record = _record(otlp, trace_id)  # exactly one
    assert record["ai_gateway.input_characters"] == len(text)


def test_the_providers_speech_400_reaches_the_client(gateway: Gateway, otlp: OTLPReceiver) -> None:
    raw = OpenAI(base_url=f"{gateway.url}/v1", api_key="c", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        # The SDK requires a voice; without one OpenAI answers 400 naming it.
        raw.post("/audio/speech", body={"model": "tts-1", "input": "hi"}, cast_to=bytes)
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "voice"


@pytest.mark.parametrize(
    ("model", "path", "versioned"),
    [
        ("azure-tts", "/openai/deployments/my-tts/audio/speech", True),
        ("azure-v1-tts", "/openai/v1/audio/speech", False),
    ],
)
def test_azure_gets_its_speech_path(
    client: OpenAI, azure: FakeAzure, model: str, path: str, versioned: bool
) -> None:
    with client.audio.speech.with_streaming_response.create(
        model=model, voice="coral", input="hi azure", response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        assert response.read() == speech_audio("hi azure")
    sent = azure.requests[-1]
    assert sent.path == path
    assert ("api-version" in sent.query) is versioned
    assert sent.json()["model"] == ("my-tts" if not versioned else model)


# --- images -------------------------------------------------------------------------------------


def test_gpt_image_is_charged_per_image_and_for_its_tokens(
    client: OpenAI, otlp: OTLPReceiver
) -> None:
    prompt = "a red fox in the snow"
    traced, trace_id = _traced(client)
    raw = traced.images.with_raw_response.generate(
        model="gpt-image-1", prompt=prompt, n=2, quality="low"
    )
    answer = raw.parse()
    assert answer.data is not None and len(answer.data) == 2
    assert base64.b64decode(answer.data[1].b64_json or "") == image_bytes(prompt, 1)
    input_tokens, output_tokens = count_tokens(prompt), 2 * OUTPUT_TOKENS["low"]
    assert answer.usage is not None and answer.usage.output_tokens == output_tokens
    cost = (
        2 * PRICING["per_image"]
        + (input_tokens * PRICING["input"] + output_tokens * PRICING["output"]) / 1e6
    )
    assert float(raw.headers["x-ai-eg-cost-usd"]) == pytest.approx(cost, abs=1e-6)
    record = _record(otlp, trace_id)
    assert record["gen_ai.operation.name"] == "image_generation"
    assert record["ai_gateway.images"] == 2
    assert (record["gen_ai.usage.input_tokens"], record["gen_ai.usage.output_tokens"]) == (
        input_tokens,
        output_tokens,
    )
    assert record["ai_gateway.cost_usd"] == pytest.approx(cost, rel=1e-12)


def test_dall_e_reports_no_tokens_and_none_are_estimated(
    client: OpenAI, otlp: OTLPReceiver
) -> None:
    traced, trace_id = _traced(client)
    answer = traced.images.generate(
        model="dall-e-2", prompt="a lighthouse", n=3, size="256x256", response_format="url"
    )
    assert answer.data is not None and len(answer.data) == 3
    record = _record(otlp, trace_id)
    assert record["ai_gateway.images"] == 3
    assert record["ai_gateway.usage_source"] == "provider"
    assert record.get("gen_ai.usage.input_tokens", 0) == 0
    assert record.get("gen_ai.usage.output_tokens", 0) == 0
    assert record["ai_gateway.cost_usd"] == pytest.approx(3 * PRICING["per_image"], rel=1e-12)


def test_the_providers_image_400_reaches_the_client(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="size"):
        client.images.generate(model="dall-e-2", prompt="x", size="1792x1024")


def test_azure_gets_its_image_path(client: OpenAI, azure: FakeAzure) -> None:
    answer = client.images.generate(model="azure-image", prompt="a boat")
    assert answer.data is not None and len(answer.data) == 1
    sent = azure.requests[-1]
    assert sent.path == "/openai/deployments/my-image/images/generations"
    assert "api-version" in sent.query


def test_an_image_edit_is_a_form_counted_like_a_generation(
    client: OpenAI, otlp: OTLPReceiver, azure: FakeAzure
) -> None:
    traced, trace_id = _traced(client)
    png = image_bytes("source", 0)
    answer = traced.images.edit(
        model="gpt-image-1", image=("cat.png", png, "image/png"), prompt="add a hat", n=2
    )
    assert answer.data is not None and len(answer.data) == 2
    record = _record(otlp, trace_id)
    assert record["gen_ai.operation.name"] == "image_edit"
    assert record["ai_gateway.images"] == 2
    output = 2 * OUTPUT_TOKENS["auto"]
    assert record["gen_ai.usage.output_tokens"] == output
    cost = (
        2 * PRICING["per_image"]
        + (count_tokens("add a hat") * PRICING["input"] + output * PRICING["output"]) / 1e6
    )
    assert record["ai_gateway.cost_usd"] == pytest.approx(cost, rel=1e-12)
    client.images.edit(model="azure-image", image=("cat.png", png, "image/png"), prompt="x")
    assert azure.requests[-1].path == "/openai/deployments/my-image/images/edits"


# --- Bedrock ------------------------------------------------------------------------------------


def test_bedrock_serves_neither_and_says_so(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="claude", prompt="x")
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "unsupported_endpoint"
    assert "image_generation" in error["message"] and "'br'" in error["message"]
    with pytest.raises(openai.NotFoundError, match="speech"):
        client.audio.speech.create(model="claude", voice="alloy", input="x")


# --- transcription and translation (multipart) --------------------------------------------------


def _wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


BOUNDARY = "gw-test-boundary-7f3a"


def _form(fields: dict[str, str], audio: bytes | None, boundary: str = BOUNDARY) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    if audio is not None:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        )
        parts.append(head.encode() + audio + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _post(
    gateway: Gateway, path: str, body: bytes, content_type: str, **headers: str
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    conn.request("POST", path, body, {"content-type": content_type, **headers})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, orjson.loads(data) if data else {}


def test_a_transcription_is_charged_per_minute_of_audio(
    client: OpenAI, otlp: OTLPReceiver, openai_fake: FakeOpenAI
) -> None:
    traced, trace_id = _traced(client)
    raw = traced.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("hello.wav", _wav(2.5), "audio/wav")
    )
    assert raw.parse().text == transcript(2.5, "transcribe")
    cost = 3 / 60 * PRICING["per_audio_minute"]  # whisper-1 reports whole seconds, rounded up
    assert float(raw.headers["x-ai-eg-cost-usd"]) == pytest.approx(cost, abs=1e-6)
    record = _record(otlp, trace_id)
    assert record["gen_ai.operation.name"] == "transcription"
    assert record["ai_gateway.audio_seconds"] == 3.0
    assert record.get("gen_ai.usage.input_tokens", 0) == 0  # the upload is not text
    assert record["ai_gateway.cost_usd"] == pytest.approx(cost, rel=1e-12)
    assert openai_fake.requests[-1].path == "/v1/audio/transcriptions"


def test_a_token_billed_transcription_is_charged_for_its_tokens(
    client: OpenAI, otlp: OTLPReceiver
) -> None:
    traced, trace_id = _traced(client)
    answer = traced.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", _wav(1.5), "audio/wav")
    )
    audio_tokens = math.ceil(1.5 * AUDIO_TOKENS_PER_SECOND)
    output = count_tokens(answer.text)
    record = _record(otlp, trace_id)
    assert (record["gen_ai.usage.input_tokens"], record["gen_ai.usage.output_tokens"]) == (
        audio_tokens,
        output,
    )
    cost = (audio_tokens * PRICING["input"] + output * PRICING["output"]) / 1e6
    assert record["ai_gateway.cost_usd"] == pytest.approx(cost, rel=1e-12)


def test_a_verbose_translation_is_counted_from_its_duration(
    client: OpenAI, otlp: OTLPReceiver
) -> None:
    traced, trace_id = _traced(client)
    answer = traced.audio.translations.create(
        model="whisper-1", file=("a.wav", _wav(2.25), "audio/wav"), response_format="verbose_json"
    )
    assert answer.text == transcript(2.25, "translate")
    record = _record(otlp, trace_id)
    assert record["gen_ai.operation.name"] == "translation"
    assert record["ai_gateway.audio_seconds"] == 2.25
    assert record["ai_gateway.cost_usd"] == pytest.approx(
        2.25 / 60 * PRICING["per_audio_minute"], rel=1e-12
    )


def test_a_text_transcript_passes_on_and_is_not_estimated(
    client: OpenAI, otlp: OTLPReceiver
) -> None:
    traced, trace_id = _traced(client)
    text = traced.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", _wav(1.0), "audio/wav"), response_format="text"
    )
    assert str(text).strip() == transcript(1.0, "transcribe")
    record = _record(otlp, trace_id)
    assert record["ai_gateway.usage_source"] == "provider"
    assert record.get("gen_ai.usage.input_tokens", 0) == 0


def test_the_form_reaches_the_provider_byte_for_byte(
    gateway: Gateway, openai_fake: FakeOpenAI
) -> None:
    body = _form({"model": "whisper-1", "language": "en"}, _wav(0.5))
    status, doc = _post(
        gateway, "/v1/audio/transcriptions", body, f"multipart/form-data; boundary={BOUNDARY}"
    )
    assert status == 200 and doc["text"] == transcript(0.5, "transcribe")
    assert openai_fake.requests[-1].body == body


def test_a_renamed_model_is_rewritten_in_the_form_alone(
    gateway: Gateway, openai_fake: FakeOpenAI
) -> None:
    body = _form({"model": "whisper", "temperature": "0"}, _wav(0.5))
    status, _ = _post(
        gateway, "/v1/audio/transcriptions", body, f"multipart/form-data; boundary={BOUNDARY}"
    )
    assert status == 200
    assert openai_fake.requests[-1].body == body.replace(
        b'name="model"\r\n\r\nwhisper\r\n', b'name="model"\r\n\r\nwhisper-1\r\n'
    )


def test_the_model_header_serves_a_form_without_a_model(gateway: Gateway) -> None:
    body = _form({}, _wav(0.5))
    status, doc = _post(
        gateway,
        "/v1/audio/translations",
        body,
        f"multipart/form-data; boundary={BOUNDARY}",
        **{"x-ai-eg-model": "azure-whisper"},
    )
    assert status == 200, doc


@pytest.mark.parametrize(
    ("body", "content_type", "code", "words"),
    [
        (_form({"model": "whisper-1"}, b"RIFF"), "multipart/form-data", "invalid_multipart", "boundary"),
        (_form({"model": "whisper-1"}, _wav(0.2))[:-20], f"multipart/form-data; boundary={BOUNDARY}", "invalid_multipart", "truncated"),
        (b"--wrong\r\n\r\n--wrong--\r\n", f"multipart/form-data; boundary={BOUNDARY}", "invalid_multipart", "malformed"),
        (_form({}, _wav(0.2)), f"multipart/form-data; boundary={BOUNDARY}", "missing_required_parameter", "model"),
        (b'{"model": "whisper-1"}', "application/json", "invalid_content_type", "multipart/form-data"),
    ],
    ids=["no-boundary", "truncated", "malformed", "no-model", "json"],
)  # fmt: skip
def test_a_form_the_gateway_cannot_read_is_a_400_naming_why(
    gateway: Gateway, body: bytes, content_type: str, code: str, words: str
) -> None:
    status, doc = _post(gateway, "/v1/audio/transcriptions", body, content_type)
    assert status == 400, doc
    assert doc["error"]["code"] == code and words in doc["error"]["message"]


def test_an_upload_over_the_request_limit_is_a_413(gateway: Gateway) -> None:
    body = _form({"model": "whisper-1"}, _wav(70.0))  # 1.1 MB of audio
    assert len(body) > MAX_REQUEST_BYTES
    status, doc = _post(
        gateway, "/v1/audio/transcriptions", body, f"multipart/form-data; boundary={BOUNDARY}"
    )
    assert status == 413 and "error" in doc


def test_azure_gets_its_transcription_path(client: OpenAI, azure: FakeAzure) -> None:
    answer = client.audio.transcriptions.create(
        model="azure-whisper", file=("a.wav", _wav(0.5), "audio/wav")
    )
    assert answer.text == transcript(0.5, "transcribe")
    sent = azure.requests[-1]
    assert sent.path == "/openai/deployments/my-whisper/audio/transcriptions"
    assert "api-version" in sent.query


def test_bedrock_transcribes_nothing_and_says_so(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="transcription"):
        client.audio.transcriptions.create(model="claude", file=("a.wav", _wav(0.2), "audio/wav"))
