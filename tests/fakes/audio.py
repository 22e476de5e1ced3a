"""Text to speech (``POST {prefix}/audio/speech``), transcription and translation
(``POST {prefix}/audio/transcriptions|translations``) for the fake OpenAI and Azure.

Checked as OpenAI checks it: ``model``, ``input`` (a string of at most 4,096 characters) and
``voice`` (one of OpenAI's) required, ``response_format`` one of ``mp3`` (the default),
``opus``, ``aac``, ``flac``, ``wav``, ``pcm``, ``speed`` within 0.25-4. The answer is binary
audio under that format's content type, streamed in :data:`CHUNK_BYTES` pieces (no
``content-length``), its bytes derived from the input (:func:`speech_audio`) so tests can
compare them.

Transcriptions and translations take a ``multipart/form-data`` form (parsed by the standard
library's MIME parser: a malformed form is a 400) with ``file`` (a WAV file: its duration is read with the
standard library's ``wave``; anything else is OpenAI's ``Invalid file format`` 400) and
``model`` required, ``response_format`` one of ``json`` (the default), ``text``, ``srt``,
``verbose_json``, ``vtt`` (gpt-4o models: ``json`` and ``text`` only). The text is
:func:`transcript`. Usage as OpenAI reports it: whisper-1 transcriptions
``{"type": "duration", "seconds": <rounded up>}`` (``verbose_json`` adds ``duration``),
gpt-4o-transcribe ``{"type": "tokens", ...}`` (:data:`AUDIO_TOKENS_PER_SECOND`); translations
(whisper-1 only) report none but ``verbose_json``'s ``duration``.
"""

from __future__ import annotations

import hashlib
import io
import math
import wave
from email import policy
from email.parser import BytesParser
from functools import partial

from aiohttp import web

from tests.fakes.openai import FakeOpenAI, Json, count_tokens, json_response, openai_error
from tests.fakes.server import stream_chunks

TEXT_FORMATS = frozenset({"json", "text", "srt", "verbose_json", "vtt"})
AUDIO_TOKENS_PER_SECOND = 10

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
    base = prefix or fake.prefix
    app.router.add_post(f"{base}/audio/speech", partial(_speech, fake))
    app.router.add_post(f"{base}/audio/transcriptions", partial(_transcribe, fake, "transcribe"))
    app.router.add_post(f"{base}/audio/translations", partial(_transcribe, fake, "translate"))


def wav_seconds(data: bytes) -> float:
    """A WAV file's duration, or OpenAI's 400 for anything else."""
    try:
        with wave.open(io.BytesIO(data), "rb") as audio:
            return audio.getnframes() / audio.getframerate()
    except (wave.Error, EOFError):
        raise openai_error(
            400,
            "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg',"
            " 'mpga', 'oga', 'ogg', 'wav', 'webm']",
            "file",
            "invalid_value",
        ) from None


def transcript(seconds: float, task: str) -> str:
    return (
        f"{'Translated' if task == 'translate' else 'Transcribed'} {seconds:.2f} seconds of audio."
    )


async def read_form(fake: FakeOpenAI, request: web.Request) -> tuple[Json, dict[str, list[bytes]]]:
    """The form's text fields (checked as the JSON endpoints' bodies are) and its files by
    field name. The body was read already (the fake records it), so the standard library's
    MIME parser reads the form; any defect it finds (no boundary, no closing boundary) is a
    400."""
    fake.authorize(request)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise openai_error(400, "Invalid Content-Type header: expected multipart/form-data.")
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + await request.read())
    if message.defects or not message.is_multipart():
        raise openai_error(400, f"Could not parse multipart form: {message.defects}.")
    fields: Json = {}
    files: dict[str, list[bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        if part.get_filename():
            files.setdefault(name, []).append(payload)
        else:
            fields[name] = payload.decode()
    return fake.prepare(request, fields), files


async def _transcribe(fake: FakeOpenAI, task: str, request: web.Request) -> web.StreamResponse:
    body, files = await read_form(fake, request)
    if "file" not in files:
        raise openai_error(400, "Missing required parameter: 'file'.", "file")
    audio = files["file"][0]
    model = str(body["model"])
    gpt4o = model.startswith("gpt-4o")
    if task == "translate" and gpt4o:
        raise openai_error(400, f"Model {model} is not supported for translations.", "model")
    fmt = body.get("response_format", "json")
    if fmt not in TEXT_FORMATS or (gpt4o and fmt not in ("json", "text")):
        raise openai_error(400, f"Invalid value for 'response_format': {fmt!r}.", "response_format")
    seconds = wav_seconds(audio)
    text = transcript(seconds, task)
    if fmt == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    if fmt in ("srt", "vtt"):
        return web.Response(
            text=f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n", content_type="text/plain"
        )
    doc: Json = {"text": text}
    if fmt == "verbose_json":
        doc = {
            "task": task,
            "language": "english",
            "duration": seconds,
            "text": text,
            "segments": [],
        }
    if task == "transcribe" and gpt4o:
        audio_tokens, output = math.ceil(seconds * AUDIO_TOKENS_PER_SECOND), count_tokens(text)
        doc["usage"] = {
            "type": "tokens",
            "input_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            "output_tokens": output,
            "total_tokens": audio_tokens + output,
        }
    elif task == "transcribe":
        doc["usage"] = {"type": "duration", "seconds": math.ceil(seconds)}
    return json_response(doc)


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
