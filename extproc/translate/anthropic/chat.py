"""``/v1/chat/completions`` on Anthropic's Messages API (``POST /v1/messages``): one document
for ``stream: false``, a :class:`~extproc.translate.anthropic.stream.MessagesStream` for a
stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

import orjson

from extproc import tokens
from extproc.translate import (
    BAD_UPSTREAM_RESPONSE,
    BodyMode,
    RequestContext,
    ResponseHead,
    UpstreamRequest,
    bad_upstream_response,
    dump_json,
    json_object,
)
from extproc.translate.anthropic.request import Plan, messages_request
from extproc.translate.anthropic.response import (
    Unreadable,
    chat_completion,
    client_status,
    openai_error_body,
)
from extproc.translate.anthropic.stream import MessagesStream
from extproc.translate.chat_output import CompletionId
from extproc.usage import Usage, json_document

JSON = "application/json"
SSE = "text/event-stream"
UNREADABLE = "Anthropic returned a response the gateway cannot read."


class AnthropicChat:
    """Chat completions -> Messages, and the answer back."""

    needs_request_body = True
    needs_response = True

    def __init__(self, ctx: RequestContext, path: str, default_max_tokens: int) -> None:
        """``path``: the Messages path (and query) at the backend."""
        self._ctx = ctx
        self._path = path
        self._default_max_tokens = default_max_tokens
        self._plan = Plan()
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._status = 0
        self._buffer = bytearray()
        self._usage: Usage | None = None
        self._model: str | None = None
        self._said: list[str] = []  # a buffered answer's text, for an estimate
        self._ended = False
        self._failure: str | None = None
        self._stream: MessagesStream | None = None  # once the head of a 2xx stream is seen

    def request(self, body: bytes | None) -> UpstreamRequest:
        document, self._plan = messages_request(
            json_object(body), self._ctx.upstream_model, self._default_max_tokens
        )
        return UpstreamRequest(
            path=self._path,
            body=dump_json(document),
            headers={"content-type": JSON, "accept": SSE if self._plan.stream else JSON},
        )

    @property
    def _ok(self) -> bool:
        return 200 <= self._status < 300

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage if self._stream is not None else self._usage

    @property
    def response_model(self) -> str | None:
        return self._stream.model if self._stream is not None else self._model

    @property
    def complete(self) -> bool:
        return self._stream.done if self._stream is not None else self._ended

    @property
    def failure(self) -> str | None:
        return self._stream.failure if self._stream is not None else self._failure

    def output_tokens(self, model: str) -> int:
        if self._stream is not None:
            return self._stream.output_tokens(model)
        return tokens.count("".join(self._said), model)

    def _ident(self) -> CompletionId:
        return CompletionId(self._id, self._created, self._ctx.route_model)

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        self._status = status
        if self._plan.stream and self._ok:
            if self._stream is None:
                self._stream = MessagesStream(self._plan, self._ident())
            return "streamed"
        return "buffered"

    def response_headers(self, status: int, headers: Mapping[str, str]) -> ResponseHead:
        self._status = status
        streaming = self._plan.stream and self._ok
        head = ResponseHead(set={"content-type": SSE if streaming else JSON})
        head.remove.append("content-length")
        mapped = client_status(status)
        if mapped != status:
            head.status = mapped
        return head

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        if self._stream is not None:
            return self._stream.feed(chunk, end_of_stream)
        self._buffer += chunk
        if not end_of_stream:
            return b""
        body = bytes(self._buffer)
        self._buffer.clear()
        self._ended = True
        if not self._ok:
            return openai_error_body(self._status, body)
        try:
            doc = json_document(body)
            if doc is None:
                raise Unreadable
            completion, self._usage = chat_completion(doc, self._plan, self._ident())
        except Unreadable:
            # Buffered: the head has not left yet, so the client gets a proper 502.
            self._failure = BAD_UPSTREAM_RESPONSE
            raise bad_upstream_response(UNREADABLE) from None
        model = doc.get("model")
        self._model = model if isinstance(model, str) else None
        self._said = list(tokens.message_texts(completion["choices"][0]["message"]))
        return orjson.dumps(completion)
