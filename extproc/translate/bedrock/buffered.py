"""What both Bedrock translators share: the response head's bookkeeping, Bedrock's errors, and
an answer buffered whole (a Converse or InvokeModel JSON document) before it is translated."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import orjson

from extproc.bedrockmodels import Family, family_of
from extproc.translate import (
    BAD_UPSTREAM_RESPONSE,
    BodyMode,
    RequestContext,
    ResponseHead,
    bad_upstream_response,
    path_segment,
)
from extproc.translate.bedrock.errors import client_status, error_kind, openai_error_body
from extproc.usage import Usage

Json = dict[str, Any]

JSON = "application/json"

UNREADABLE = "Bedrock returned a response the gateway cannot read."


class Unreadable(Exception):
    """A 2xx Bedrock body that is not what Bedrock sends."""


def parse_upstream(body: bytes) -> Json:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise Unreadable
    return doc


class BedrockTranslator(ABC):
    """The response handling both translators share: head bookkeeping, errors, buffering."""

    needs_request_body = True
    needs_response = True

    def __init__(self, ctx: RequestContext, prefix: str = "") -> None:
        self._ctx = ctx
        self._prefix = prefix
        self._status = 0
        self._head: dict[str, str] = {}
        self._buffer = bytearray()
        self._usage: Usage | None = None
        # Converse and InvokeModel responses do not name the model that served them.
        self.response_model: str | None = None
        self._ended = False  # the whole body was seen
        self._failure: str | None = None

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @property
    def complete(self) -> bool:
        return self._ended

    @property
    def failure(self) -> str | None:
        return self._failure

    @abstractmethod
    def _translate(self, body: bytes) -> bytes:
        """The OpenAI body for a complete 2xx Bedrock body; raises :class:`Unreadable`."""

    def output_tokens(self, model: str) -> int:
        return 0

    def _see_head(self, status: int, headers: Mapping[str, str]) -> None:
        self._status = status
        self._head = {name.lower(): value for name, value in headers.items()}

    @property
    def family(self) -> Family | None:
        """The model family, as the config loader resolved it (None: the client's model name
        on a catch-all route, naming none)."""
        settings = self._ctx.settings
        return family_of(self._ctx.upstream_model, settings.family if settings else None)

    def _path(self, operation: str) -> str:
        return f"{self._prefix}/model/{path_segment(self._ctx.upstream_model)}/{operation}"

    @property
    def _ok(self) -> bool:
        return 200 <= self._status < 300

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        self._see_head(status, headers)
        return "buffered"

    def response_headers(self, status: int, headers: Mapping[str, str]) -> ResponseHead:
        self._see_head(status, headers)
        head = ResponseHead(set={"content-type": JSON}, remove=["content-length"])
        if not self._ok:
            mapped = client_status(error_kind(self._head), status)
            if mapped != status:
                head.status = mapped
        return head

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        self._buffer += chunk
        if not end_of_stream:
            return b""
        body = bytes(self._buffer)
        self._buffer.clear()
        self._ended = True
        if self._ok:
            try:
                return self._translate(body)
            except Unreadable:
                # Buffered: the head has not left yet, so the client gets a proper 502.
                self._failure = BAD_UPSTREAM_RESPONSE
                raise bad_upstream_response(UNREADABLE) from None
        return openai_error_body(error_kind(self._head), self._status, body)
