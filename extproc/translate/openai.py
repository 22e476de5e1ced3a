"""OpenAI API -> an OpenAI-compatible backend: the body passes through untouched.

The only rewrites are the path (the backend URL's prefix replaces the client's ``/v1``) and,
when the backend knows the model under another name, the body's ``model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from extproc.errors import UPSTREAM, error_body
from extproc.translate import (
    BodyMode,
    RequestContext,
    ResponseHead,
    UpstreamRequest,
    dump_json,
    json_object,
)
from extproc.usage import SSEObserver, Usage, from_json_body


def join_path(prefix: str, client_path: str, query: Mapping[str, str] | None = None) -> str:
    """``/openai/v1`` + ``/v1/chat/completions?x=1`` -> ``/openai/v1/chat/completions?x=1``."""
    path, _, client_query = client_path.partition("?")
    rest = path[3:] if path.startswith("/v1/") else path
    out = prefix + rest
    extra = urlencode(query) if query else ""
    joined = "&".join(q for q in (client_query, extra) if q)
    return f"{out}?{joined}" if joined else out


def rewrite_body(body: bytes, model: str | None, include_usage: bool) -> bytes:
    """Set the body's ``model`` and/or ask the provider to report a stream's usage."""
    doc = json_object(body)
    if model is not None:
        doc["model"] = model
    if include_usage:
        options = doc.get("stream_options")
        doc["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return dump_json(doc)


_TRUNCATED_EVENT = (
    b"data: "
    + error_body(
        "The provider ended the stream before it was complete.",
        UPSTREAM,
        code="stream_truncated",
    )
    + b"\n\n"
)


class PassThrough:
    """Chat and embeddings to any backend that speaks the OpenAI API.

    The response is watched, never changed, except for one case: a stream whose client did not
    ask for usage gets ``include_usage`` injected upstream (so every stream is accounted) and its
    traces removed on the way back, so the client sees what it would have seen.
    """

    def __init__(self, ctx: RequestContext, path: str, rewrite_model: bool = True) -> None:
        self._path = path
        self._model = (
            ctx.upstream_model if rewrite_model and ctx.body_model != ctx.upstream_model else None
        )
        self._inject_usage = ctx.stream and not ctx.include_usage
        self.needs_request_body = self._model is not None or self._inject_usage
        self.needs_response = True
        self.usage: Usage | None = None
        self.response_model: str | None = None
        self._observer: SSEObserver | None = None
        self._status = 0

    def request(self, body: bytes | None) -> UpstreamRequest:
        if body is None:
            return UpstreamRequest(path=self._path)
        return UpstreamRequest(self._path, rewrite_body(body, self._model, self._inject_usage))

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        self._status = status
        if headers.get("content-type", "").startswith("text/event-stream"):
            self._observer = SSEObserver(strip_usage=self._inject_usage)
            return "streamed"
        return "buffered"

    def response_headers(self, status: int, headers: Mapping[str, str]) -> ResponseHead:
        return ResponseHead()

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        observer = self._observer
        if observer is None:
            self.usage, self.response_model = from_json_body(chunk)
            return chunk
        out = observer.feed(chunk, end_of_stream)
        self.usage = observer.usage
        self.response_model = observer.model
        if end_of_stream and self._status < 300 and not observer.done:
            # The provider closed a stream it had not finished: say so in the stream rather
            # than let the client take a truncated answer for a complete one.
            out += _TRUNCATED_EVENT
        return out

    def estimate_usage(self) -> Usage | None:
        return self._observer.estimate() if self._observer is not None else None
