"""Text to speech (``POST {prefix}/audio/speech``) for the fake OpenAI and Azure.

Checked as OpenAI checks it: ``model``, ``input`` (a string of at most 4,096 characters) and
``voice`` (one of OpenAI's) required, ``response_format`` one of ``mp3`` (the default),
``opus``, ``aac``, ``flac``, ``wav``, ``pcm``, ``speed`` within 0.25-4. The answer is binary
audio under that format's content type, streamed in :data:`CHUNK_BYTES` pieces (no
``content-length``), its bytes derived from the input (:func:`speech_audio`) so tests can
compare them.
"""

from __future__ import annotations

import hashlib
from functools import partial

from aiohttp import web

from tests.fakes.openai import FakeOpenAI, Json, openai_error
from tests.fakes.server import stream_chunks

VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"}
)
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
MAX_INPUT = 4096
BYTES_PER_CHARACTER = 512  # of the fake's audio
CHUNK_BYTES = 16 * 1024


def speech_audio(text: str) -> bytes:
    """The fake's audio of ``text``: bytes that depend on every character."""
    seed = hashlib.sha256(text.encode()).digest()
    size = BYTES_PER_CHARACTER * len(text)
    return (seed * (size // len(seed) + 1))[:size]


def check(body: Json) -> str:
    """The content type of the answer to ``body``, or OpenAI's 400."""
    text = body.get("input")
    if not isinstance(text, str):
        raise openai_error(400, "Missing required parameter: 'input'.", "input")
    if len(text) > MAX_INPUT:
        raise openai_error(
            400,
            f"'input' is too long: {len(text)} characters, the maximum is {MAX_INPUT}.",
            "input",
            "string_above_max_length",
        )
    voice = body.get("voice")
    if voice is None:
        raise openai_error(400, "Missing required parameter: 'voice'.", "voice")
    if voice not in VOICES:
        raise openai_error(400, f"Invalid value for 'voice': {voice!r}.", "voice")
    fmt = body.get("response_format", "mp3")
    if fmt not in CONTENT_TYPES:
        raise openai_error(400, f"Invalid value for 'response_format': {fmt!r}.", "response_format")
    speed = body.get("speed", 1.0)
    if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
        raise openai_error(400, "'speed' must be between 0.25 and 4.0.", "speed")
    return CONTENT_TYPES[fmt]


def add_routes(fake: FakeOpenAI, app: web.Application, prefix: str | None = None) -> None:
    """``POST {prefix}/audio/speech`` (``prefix``: Azure's deployment path)."""
    app.router.add_post(f"{prefix or fake.prefix}/audio/speech", partial(_speech, fake))


async def _speech(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    body = await fake.request_json(request)
    content_type = check(body)
    audio = speech_audio(body["input"])
    return await stream_chunks(
        request,
        [audio[i : i + CHUNK_BYTES] for i in range(0, len(audio), CHUNK_BYTES)],
        content_type=content_type,
        delay=fake.chunk_delay,
    )
