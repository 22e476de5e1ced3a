"""OpenAI's audio and image endpoints on OpenAI-compatible and Azure backends: the bodies pass
through untouched, as :class:`~extproc.translate.openai.PassThrough` passes them; what differs
is what their answers are and how they are counted.

- Speech (``/v1/audio/speech``): a JSON request, an ``audio/*`` answer (or ``stream_format:
  sse`` events). The answer is binary: it is never read, never buffered and never estimated as
  text. A 2xx answer is counted at its headers in characters of the request's ``input`` (what
  OpenAI bills ``tts-1`` by), and Envoy passes its body on without the sidecar.
- Image generation (``/v1/images/generations``): a JSON answer ``{"created", "data": [...],
  "usage"?}``. A 2xx answer counts ``len(data)`` images, and gpt-image's token ``usage``
  (``input_tokens``, ``output_tokens``: the Responses API's names) when it reports one. An
  answer too large to buffer is passed on, its images counted by their keys as they pass and
  its usage read from its last bytes. Base64 images are not text: never estimated as tokens.
- Image edits (``/v1/images/edits``): a multipart form (as below) in, image generation's
  answer out, counted as it is.
- Transcription and translation (``/v1/audio/transcriptions``, ``/v1/audio/translations``): a
  multipart form (the router read its ``model``: :mod:`extproc.multipart`), passed on
  unchanged unless the backend names the model otherwise. A JSON answer is counted in audio
  seconds (``usage: {"type": "duration", "seconds"}``, or ``verbose_json``'s ``duration``) or
  tokens (``usage: {"type": "tokens", ...}``); a text, SRT or VTT answer reports nothing and
  is passed on unread, counted as nothing: the upload is audio, never estimated as text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from extproc import multipart
from extproc.endpoints import Operation
from extproc.responses_usage import from_responses
from extproc.translate import BodyMode, RequestContext, UpstreamRequest, json_object
from extproc.translate.openai import PassThrough
from extproc.usage import Usage


class Speech(PassThrough):
    """``POST /v1/audio/speech``: counted in the request's input characters."""

    def __init__(self, ctx: RequestContext, path: str, rewrite_model: bool = True) -> None:
        super().__init__(ctx, path, rewrite_model)
        self.needs_request_body = True  # its input's characters are what it costs
        self._characters = 0

    def request(self, body: bytes | None) -> UpstreamRequest:
        text = json_object(body).get("input") if body is not None else None
        self._characters = len(text) if isinstance(text, str) else 0
        if self._model is None:
            return UpstreamRequest(path=self._path)  # the client's bytes, unchanged
        return super().request(body)

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        if not 200 <= status < 300:
            return super().response_body_mode(status, headers)  # an error: read as JSON
        self._status = status
        self.usage = Usage(input_characters=self._characters)
        return "none"

    def output_tokens(self, model: str) -> int:
        return 0  # audio: nothing to count as text


# The keys each image of an answer has exactly one of. Inside a JSON string every quote is
# escaped, so these bytes only ever match a key.
_IMAGE_KEYS = (b'"b64_json"', b'"url"')
_CARRY = max(len(key) for key in _IMAGE_KEYS) - 1


class Images(PassThrough):
    """``POST /v1/images/generations``: counted in images, and tokens when reported."""

    def __init__(self, ctx: RequestContext, path: str, rewrite_model: bool = True) -> None:
        super().__init__(ctx, path, rewrite_model)
        self._read_usage = from_responses
        self._keys = 0  # image keys seen in an answer too large to buffer
        self._tail = b""  # its last bytes, where a key may continue in the next chunk

    def _document_usage(self, doc: dict[str, Any] | None) -> tuple[Usage | None, str | None]:
        usage, model = super()._document_usage(doc)
        if doc is None or not self._ok:
            return usage, model
        data = doc.get("data")
        return _with_images(usage, len(data) if isinstance(data, list) else 0), model

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        out = super().response_body(chunk, end_of_stream)
        if self._large is not None:
            seen = self._tail + chunk
            # A key that ends in the carried bytes was counted with the previous chunk.
            self._keys += sum(seen.count(key) - self._tail.count(key) for key in _IMAGE_KEYS)
            self._tail = seen[-_CARRY:]
            if end_of_stream and self._ok:
                self.usage = _with_images(self.usage, self._keys)
        return out

    def output_tokens(self, model: str) -> int:
        return 0  # images: nothing to count as text


def _with_images(usage: Usage | None, images: int) -> Usage:
    return dataclasses.replace(usage or Usage(), images=images)


def from_transcription(usage: Any) -> Usage | None:
    """A transcription's ``usage``: audio seconds (whisper-1) or tokens (gpt-4o-transcribe)."""
    if not isinstance(usage, dict):
        return None
    if usage.get("type") == "duration":
        return Usage(audio_seconds=_seconds(usage.get("seconds")))
    return from_responses(usage) if usage.get("type") == "tokens" else None


def _seconds(value: Any) -> float:
    """A provider's audio seconds: a positive number, or 0 (a negative one would credit)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok else 0.0


class _Form(PassThrough):
    """A multipart form's request: passed on as it came, or with the backend's model name in
    its ``model`` field alone (the body is needed only then)."""

    def request(self, body: bytes | None) -> UpstreamRequest:
        if body is None or self._model is None:
            return UpstreamRequest(path=self._path)
        return UpstreamRequest(self._path, multipart.with_model(body, self._model))


class ImageEdits(_Form, Images):
    """``POST /v1/images/edits``: a form in (the images and the prompt), images out."""


class Transcription(_Form):
    """``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: a form in, text out."""

    def __init__(self, ctx: RequestContext, path: str, rewrite_model: bool = True) -> None:
        super().__init__(ctx, path, rewrite_model)
        self._read_usage = from_transcription

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        if 200 <= status < 300 and not headers.get("content-type", "").startswith(
            "application/json"
        ):
            # text, srt, vtt (or a stream): no usage in it, nothing to read.
            self._status = status
            self.usage = Usage()
            return "none"
        return super().response_body_mode(status, headers)

    def _document_usage(self, doc: dict[str, Any] | None) -> tuple[Usage | None, str | None]:
        usage, model = super()._document_usage(doc)
        if doc is None or not self._ok:
            return usage, model
        if usage is None:  # verbose_json's duration, or nothing reported
            usage = Usage(audio_seconds=_seconds(doc.get("duration")))
        return usage, model

    def output_tokens(self, model: str) -> int:
        return 0  # counted by the provider or not at all


_TRANSLATORS: dict[Operation, type[PassThrough]] = {
    "speech": Speech,
    "image_generation": Images,
    "image_edit": ImageEdits,
    "transcription": Transcription,
    "translation": Transcription,
}


def pass_through(endpoint: Operation) -> type[PassThrough]:
    """The pass-through translator of an endpoint on an OpenAI-compatible or Azure backend."""
    return _TRANSLATORS.get(endpoint, PassThrough)
