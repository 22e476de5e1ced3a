"""OpenAI API -> an OpenAI-compatible backend: the body passes through untouched.

The only rewrites are the path (the backend URL's prefix replaces the client's ``/v1``) and,
when the backend knows the model under another name, the body's ``model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from extproc import tokens
from extproc.endpoints import BY_OPERATION
from extproc.errors import UPSTREAM, error_body
from extproc.largejson import HeadTail
from extproc.responses_usage import ResponsesObserver, error_event, from_responses
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
    dump_json,
    json_object,
)
from extproc.usage import (
    MAX_EVENT_BYTES,
    SSEObserver,
    Usage,
    UsageReader,
    answer_text,
    from_json_doc,
    from_openai,
    json_document,
)


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


_TRUNCATED = "The provider ended the stream before it was complete."
_TOO_LARGE = (
    f"The provider sent a stream event over {MAX_EVENT_BYTES} bytes; the gateway ended the"
    " stream there."
)
_NOT_JSON = "The provider answered with a body that is not the JSON document its API returns."


class PassThrough:
    """Chat, embeddings and Responses (stored ones too) to any backend that speaks the OpenAI
    API.

    The response is watched, never changed, except in four cases:

    - a stream whose client did not ask for usage gets ``include_usage`` injected upstream (so
      every stream is accounted) and its traces removed on the way back, so the client sees
      what it would have seen;
    - a 2xx stream the provider closes before its end (chat's ``data: [DONE]``, Responses' last
      event) gets a last error event, in its API's shape;
    - a stream event over ``MAX_EVENT_BYTES`` ends the stream with an error event (whatever the
      provider sends after it is dropped);
    - a 2xx body that is not a JSON object (a provider that cut its answer) becomes a 502.
      Error statuses pass through as they are, whatever their body.
    """

    def __init__(self, ctx: RequestContext, path: str, rewrite_model: bool = True) -> None:
        self._path = path
        api = BY_OPERATION[ctx.endpoint]
        self._has_output = api.output_tokens
        self._responses = ctx.endpoint in ("responses", "stored_responses")
        self._read_usage: UsageReader = from_responses if self._responses else from_openai
        # A body that may hold no model (a stored response's request) is only rewritten when
        # it names one; the others get the backend's name for the model either way.
        named = ctx.body_model is not None or api.body == "json"
        self._model = (
            ctx.upstream_model
            if rewrite_model and named and ctx.body_model != ctx.upstream_model
            else None
        )
        self._inject_usage = ctx.stream and not ctx.include_usage and api.stream_usage_opt_in
        self.needs_request_body = self._model is not None or self._inject_usage
        self.needs_response = True
        self.usage: Usage | None = None
        self.response_model: str | None = None
        self._observer: SSEObserver | None = None
        self._status = 0
        self._ended = False  # the whole body was seen
        self._failure: str | None = None
        self._said = ""  # a buffered answer's text, kept when it came without usage
        self._large: HeadTail | None = None  # the ends of an answer too large to buffer

    @property
    def forwards_unchanged(self) -> bool:
        """Whether a good answer reaches the client exactly as the provider sent it (nothing
        the gateway asked for has to be taken out), so that Envoy alone can pass it on."""
        return not self._inject_usage

    @property
    def complete(self) -> bool:
        observer = self._observer
        return observer.done if observer is not None else self._ended

    @property
    def failure(self) -> str | None:
        observer = self._observer
        if self._failure is None and observer is not None and observer.error and self._ok:
            return UPSTREAM_ERROR
        return self._failure

    @property
    def _ok(self) -> bool:
        return 200 <= self._status < 300

    def request(self, body: bytes | None) -> UpstreamRequest:
        if body is None:
            return UpstreamRequest(path=self._path)
        return UpstreamRequest(self._path, rewrite_body(body, self._model, self._inject_usage))

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        self._status = status
        if headers.get("content-type", "").startswith("text/event-stream"):
            self._observer = (
                ResponsesObserver()
                if self._responses
                else SSEObserver(strip_usage=self._inject_usage)
            )
            return "streamed"
        return "buffered"

    def response_headers(self, status: int, headers: Mapping[str, str]) -> ResponseHead:
        return ResponseHead()

    def read_unbuffered(self) -> None:
        """Read a JSON answer too large to buffer as it passes, keeping only its ends: it is
        passed on unchanged, so its usage is all the gateway needs of it."""
        self._large = HeadTail()

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        observer = self._observer
        large = self._large
        if large is not None:
            large.feed(chunk)
            if end_of_stream:
                self._ended = True
                fields, self.response_model = large.fields()
                self.usage = self._read_usage(fields)
            return chunk
        if observer is None:
            # Buffered: the whole body in one chunk, its head still held by Envoy.
            self._ended = self._ended or end_of_stream
            doc = json_document(chunk)
            self.usage, self.response_model = self._document_usage(doc)
            if self.usage is None:
                self._said = answer_text(doc)
            if doc is None and end_of_stream and self._ok:
                self._failure = BAD_UPSTREAM_RESPONSE
                raise bad_upstream_response(_NOT_JSON)
            return chunk
        out = observer.feed(chunk, end_of_stream)
        self.usage = observer.usage
        self.response_model = observer.model
        if observer.overflow and self._failure is None:
            self._failure = EVENT_TOO_LARGE
            # Passed through, the event's start already reached the client: a blank line
            # ends it (the client's parser drops or rejects it) before the error event.
            out += (b"" if self._inject_usage else b"\n\n") + self._error_event(
                EVENT_TOO_LARGE, _TOO_LARGE
            )
        if end_of_stream:
            self._ended = True
            if self._ok and not observer.done and self._failure is None:
                # The provider closed a stream it had not finished: say so in the stream rather
                # than let the client take a truncated answer for a complete one.
                self._failure = STREAM_TRUNCATED
                out += self._error_event(STREAM_TRUNCATED, _TRUNCATED)
        return out

    def _document_usage(self, doc: dict[str, Any] | None) -> tuple[Usage | None, str | None]:
        """Usage and model of a buffered answer (an API whose answer counts more than tokens
        reads more of it: :mod:`extproc.translate.media`)."""
        return from_json_doc(doc, self._read_usage)

    def _error_event(self, code: str, message: str) -> bytes:
        """The event that ends a stream the gateway cuts, in its API's shape."""
        observer = self._observer
        if isinstance(observer, ResponsesObserver):
            return error_event(code, message, observer.sequence + 1)
        return b"data: " + error_body(message, UPSTREAM, code=code) + b"\n\n"

    def output_tokens(self, model: str) -> int:
        observer = self._observer
        if observer is not None:
            return observer.output_tokens(model)
        if self._large is not None:
            # An answer's size says something of its output; an embedding has none.
            return tokens.answer_tokens(self._large.length, stream=False) if self._has_output else 0
        return tokens.count(self._said, model)
