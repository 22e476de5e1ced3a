"""``/v1/responses`` on Bedrock: Converse for an answer in one document, ConverseStream
(:class:`~extproc.translate.bedrock.responses_stream.ResponsesStream`) for a stream. Nothing is
stored: every request carries its whole conversation."""

from __future__ import annotations

import orjson

from extproc.translate import RequestContext
from extproc.translate.bedrock.buffered import parse_upstream
from extproc.translate.bedrock.converse_events import ConverseEvents
from extproc.translate.bedrock.converse_translator import ConverseTranslator
from extproc.translate.bedrock.request import ConverseRequest, Json, Plan
from extproc.translate.bedrock.responses_answer import (
    ResponseShell,
    new_id,
    response_document,
    said,
    settings,
)
from extproc.translate.bedrock.responses_request import converse_responses
from extproc.translate.bedrock.responses_stream import ResponsesStream


class BedrockResponses(ConverseTranslator):
    """``/v1/responses`` -> Converse (``stream: false``) or ConverseStream."""

    def __init__(self, ctx: RequestContext, prefix: str = "") -> None:
        super().__init__(ctx, prefix)
        self._id = new_id("resp")
        self._settings: Json = {}

    def _converse(self, doc: Json) -> tuple[ConverseRequest, Plan]:
        entry = self._ctx.settings
        body = converse_responses(
            doc,
            self._ctx.upstream_model,
            tuple(entry.cache_points) if entry else (),
            entry.family if entry else None,
        )
        self._settings = settings(doc)
        return body

    def _name(self, request_id: str) -> None:
        self._id = f"resp_{request_id.replace('-', '')}"

    def _shell(self) -> ResponseShell:
        return ResponseShell(self._id, self._created, self._ctx.route_model, self._settings)

    def _open_stream(self) -> ConverseEvents:
        return ResponsesStream(self._plan, self._shell())

    def _translate(self, body: bytes) -> bytes:
        document, self._usage = response_document(parse_upstream(body), self._plan, self._shell())
        self._said = said(document["output"])
        return orjson.dumps(document)
