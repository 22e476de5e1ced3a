"""Recorded provider traffic, replayed through the gateway: the client gets it byte for byte."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator

import httpx2  # the HTTP client of the openai SDK
import openai
import pytest
from openai import OpenAI

from tests.fakes.replay import Cassette, Replay, cassettes
from tests.harness import Gateway

# completion-streaming is completion-streaming-usage without include_usage: the gateway asks a
# stream's usage upstream either way, so one recording answers both (the usage chunk is taken
# out again for a client that did not ask: tests/integration/test_completions.py).
RECORDED = [
    c
    for c in cassettes("chat")
    + cassettes("embeddings")
    + cassettes("text_completion")
    + cassettes("image_generation")
    + cassettes("transcription")
    + cassettes("translation")
    if c.name != "completion-streaming"
]
_PATHS = {
    "chat": "/chat/completions",
    "embeddings": "/embeddings",
    "text_completion": "/completions",
    "image_generation": "/images/generations",
    "transcription": "/audio/transcriptions",
    "translation": "/audio/translations",
}
AZURE = "azure-gpt-5-nano"


@pytest.fixture(scope="module")
def replay() -> Iterator[Replay]:
    with Replay(RECORDED) as fake:
        yield fake


@pytest.fixture(scope="module")
def client(replay: Replay) -> Iterator[OpenAI]:
    config = {
        "backends": {
            "openai": {"schema": "openai", "url": f"{replay.url}/v1", "api_key": "${KEY}"},
            "azure": {
                "schema": "azure_openai",
                "url": replay.url,
                "api_key": "${KEY}",
                "api_version": "2024-12-01-preview",
            },
        },
        "models": [
            {"name": AZURE, "backends": [{"backend": "azure", "model": "gpt-5-nano"}]},
            {"name": "*", "backends": [{"backend": "openai"}], "retry": {"attempts": 1}},
        ],
    }
    with Gateway(config, env={"KEY": "sk-replay"}) as gw:
        yield OpenAI(base_url=f"{gw.url}/v1", api_key="client", max_retries=0)


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\x00\x00" * 8000)
    return out.getvalue()


def _upload(client: OpenAI, c: Cassette) -> tuple[int, bytes]:
    """An upload the recording kept only the answer of: sent as the SDK sends a file (the
    recorded form is not in the cassette), the answer compared byte for byte."""
    assert c.endpoint is not None
    response = client.post(
        _PATHS[c.endpoint],
        body={"model": "whisper-1"},
        files=[("file", ("audio.wav", _wav(), "audio/wav"))],
        options={"headers": {"content-type": "multipart/form-data"}},
        cast_to=httpx2.Response,
    )
    return response.status_code, response.read()


def _send(client: OpenAI, c: Cassette) -> tuple[int, bytes]:
    if c.multipart:
        return _upload(client, c)
    headers = {"content-type": "application/json"}
    if c.path.startswith("/openai/deployments/"):
        headers["x-ai-eg-model"] = AZURE
    assert c.endpoint is not None
    endpoint = _PATHS[c.endpoint]
    try:
        response = client.post(
            endpoint, content=c.request_body, cast_to=httpx2.Response, options={"headers": headers}
        )
    except openai.APIStatusError as err:
        return err.status_code, err.response.read()
    return response.status_code, response.read()


@pytest.mark.parametrize("recorded", RECORDED, ids=[c.name for c in RECORDED])
def test_replay_byte_for_byte(client: OpenAI, recorded: Cassette) -> None:
    status, body = _send(client, recorded)
    assert status == recorded.status
    assert body == recorded.response_body
