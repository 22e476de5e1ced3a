"""``POST /v1/messages`` (Anthropic's Messages API, for Anthropic clients) to an ``anthropic``
backend: a pass-through, watched for the usage.

The body reaches Anthropic unchanged but for ``model`` when the backend knows the model under
another name; the answer reaches the client byte for byte, streams as they come (each piece is
read for its events, never held), errors in Anthropic's own shape. Two additions only: a 2xx
stream that ends before ``message_stop`` gets a last ``error`` event, so the client cannot take
a truncated answer for a complete one; a 2xx answer that is not JSON becomes a 502.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from extproc import tokens
from extproc.translate import (
    BAD_UPSTREAM_RESPONSE,
    EVENT_TOO_LARGE,
    STREAM_TRUNCATED,
    UPSTREAM_ERROR,
    BodyMode,
    RequestContext,
    ResponseHead,
    UpstreamRequest,
    bad_upstream_response,
)
from extproc.translate.anthropic.events import EventReader, UsageReport
from extproc.translate.anthropic.response import ERROR_TYPES, error_of, usage_of
from extproc.translate.openai import rewrite_body
from extproc.usage import Usage, json_document

Json = dict[str, Any]

_TRUNCATED_EVENT = (
    b"\n\nevent: error\ndata: "
    + orjson.dumps(
        {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "The provider ended the stream before it was complete.",
            },
        }
    )
    + b"\n\n"
)
_NOT_JSON = "Anthropic answered with a body that is not the JSON document its API returns."


class MessagesPassThrough:
    """Anthropic clients to Anthropic: the body and the answer pass through."""

    needs_response = True

    def __init__(self, ctx: RequestContext, path: str) -> None:
        """``path``: the client's path (and query) at the backend."""
        self._path = path
        self._model = ctx.upstream_model if ctx.body_model != ctx.upstream_model else None
        self.needs_request_body = self._model is not None
        self._status = 0
        self._events: EventReader | None = None  # a 2xx stream's
        self._usage = UsageReport()
        self._buffered_usage: Usage | None = None
        self.response_model: str | None = None
        self._said: list[str] = []  # what the answer said, for an estimate
        self._ended = False
        self._done = False  # a stream's message_stop was seen
        self._failure: str | None = None

    @property
    def usage(self) -> Usage | None:
        return self._usage.final if self._events is not None else self._buffered_usage

    @property
    def complete(self) -> bool:
        return self._done if self._events is not None else self._ended

    @property
    def failure(self) -> str | None:
        return self._failure

    @property
    def _ok(self) -> bool:
        return 200 <= self._status < 300

    def request(self, body: bytes | None) -> UpstreamRequest:
        if body is None:
            return UpstreamRequest(path=self._path)
        return UpstreamRequest(self._path, rewrite_body(body, self._model, False))

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        self._status = status
        if self._ok and headers.get("content-type", "").startswith("text/event-stream"):
            self._events = EventReader()
            return "streamed"
        return "buffered"

    def response_headers(self, status: int, headers: Mapping[str, str]) -> ResponseHead:
        return ResponseHead()

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        events = self._events
        if events is None:
            # Buffered: the whole body in one chunk, its head still held by Envoy.
            self._ended = self._ended or end_of_stream
            doc = json_document(chunk)
            if self._ok and doc is not None:
                self._read_message(doc)
            if doc is None and end_of_stream and self._ok:
                self._failure = BAD_UPSTREAM_RESPONSE
                raise bad_upstream_response(_NOT_JSON)
            return chunk
        for event in events.feed(chunk, end_of_stream):
            if event is not None:
                self._see(event)
        if events.overflow and self._failure is None:
            self._failure = EVENT_TOO_LARGE  # passed on all the same; no longer read
        if end_of_stream and not self._done and self._failure is None:
            self._failure = STREAM_TRUNCATED
            return chunk + _TRUNCATED_EVENT
        return chunk

    def _read_message(self, doc: Json) -> None:
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self._buffered_usage = usage_of(usage)
        if isinstance(doc.get("model"), str):
            self.response_model = doc["model"]
        if self._buffered_usage is None:
            blocks = doc.get("content")
            for block in blocks if isinstance(blocks, list) else ():
                if isinstance(block, dict):
                    self._said.extend(_block_texts(block))

    def _see(self, event: Json) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("model"), str):
                    self.response_model = message["model"]
                self._usage.see(message.get("usage"), final=False)
        elif kind == "content_block_start":
            block = event.get("content_block")
            if isinstance(block, dict):
                self._said.extend(_block_texts(block))
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                self._said.extend(_block_texts(delta))
        elif kind == "message_delta":
            self._usage.see(event.get("usage"), final=True)
        elif kind == "message_stop":
            self._done = True
        elif kind == "error" and self._failure is None:
            error, _ = error_of(event)
            self._failure = error if error in ERROR_TYPES else UPSTREAM_ERROR

    def output_tokens(self, model: str) -> int:
        return tokens.count("".join(self._said), model)


def _block_texts(block: Json) -> list[str]:
    """What a content block or a delta says: text, thinking, a tool's name and input."""
    out = []
    for key in ("text", "thinking", "partial_json", "name"):
        value = block.get(key)
        if isinstance(value, str):
            out.append(value)
    if block.get("type") == "tool_use" and isinstance(block.get("input"), dict) and block["input"]:
        out.append(orjson.dumps(block["input"]).decode())
    return out
