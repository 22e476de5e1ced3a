"""``/v1/chat/completions`` on Bedrock: Converse for an answer in one document, ConverseStream
(:class:`~extproc.translate.bedrock.stream.ConverseStream`) for a stream."""

from __future__ import annotations

import uuid

import orjson

from extproc import tokens
from extproc.translate import RequestContext
from extproc.translate.bedrock.buffered import parse_upstream
from extproc.translate.bedrock.chat_response import chat_completion
from extproc.translate.bedrock.converse_events import ConverseEvents
from extproc.translate.bedrock.converse_translator import ConverseTranslator
from extproc.translate.bedrock.request import ConverseRequest, Json, Plan, converse
from extproc.translate.bedrock.stream import ConverseStream
from extproc.translate.chat_output import CompletionId


class BedrockChat(ConverseTranslator):
    """``/v1/chat/completions`` -> Converse (``stream: false``) or ConverseStream."""

    def __init__(self, ctx: RequestContext, prefix: str = "") -> None:
        super().__init__(ctx, prefix)
        self._id = f"chatcmpl-{uuid.uuid4().hex}"

    def _converse(self, doc: Json) -> tuple[ConverseRequest, Plan]:
        settings = self._ctx.settings
        return converse(
            doc,
            self._ctx.upstream_model,
            tuple(settings.cache_points) if settings else (),
            settings.family if settings else None,
        )

    def _name(self, request_id: str) -> None:
        self._id = f"chatcmpl-{request_id}"

    def _ident(self) -> CompletionId:
        return CompletionId(self._id, self._created, self._ctx.route_model, self._plan.service_tier)

    def _open_stream(self) -> ConverseEvents:
        return ConverseStream(self._plan, self._ident())

    def _translate(self, body: bytes) -> bytes:
        completion, self._usage = chat_completion(parse_upstream(body), self._plan, self._ident())
        self._said = list(tokens.message_texts(completion["choices"][0]["message"]))
        return orjson.dumps(completion)
