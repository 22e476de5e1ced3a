"""What the Converse-backed translators share (chat, Responses): the request sent to Converse
(``stream: false``) or ConverseStream, the stream's renderer once a 2xx head is seen, and the
accounting read from whichever answered."""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Mapping

from extproc import tokens
from extproc.translate import (
    BodyMode,
    RequestContext,
    ResponseHead,
    UpstreamRequest,
    dump_json,
    json_object,
)
from extproc.translate.bedrock.buffered import JSON, BedrockTranslator
from extproc.translate.bedrock.converse_events import ConverseEvents
from extproc.translate.bedrock.guardrails import guardrail_config
from extproc.translate.bedrock.request import ConverseRequest, Json, Plan
from extproc.usage import Usage

EVENT_STREAM = "application/vnd.amazon.eventstream"
SSE = "text/event-stream"


class ConverseTranslator(BedrockTranslator):
    """An OpenAI API -> Converse (``stream: false``) or ConverseStream."""

    def __init__(self, ctx: RequestContext, prefix: str = "") -> None:
        super().__init__(ctx, prefix)
        self._plan = Plan()
        self._created = int(time.time())
        # What a buffered answer said, for an estimate if it came without Bedrock's usage.
        self._said: list[str] = []
        self._stream: ConverseEvents | None = None  # once the head of a 2xx stream is seen

    @abstractmethod
    def _converse(self, doc: Json) -> tuple[ConverseRequest, Plan]:
        """The Converse request for the client's request."""

    @abstractmethod
    def _name(self, request_id: str) -> None:
        """Names the answer after Bedrock's request id."""

    @abstractmethod
    def _open_stream(self) -> ConverseEvents:
        """The renderer of a 2xx stream."""

    def request(self, body: bytes | None) -> UpstreamRequest:
        document, self._plan = self._converse(json_object(body))
        settings = self._ctx.settings
        if settings is not None and settings.guardrail is not None:
            document["guardrailConfig"] = guardrail_config(settings.guardrail, self._plan.stream)
        operation = "converse-stream" if self._plan.stream else "converse"
        return UpstreamRequest(
            path=self._path(operation),
            body=dump_json(document),
            headers={
                "content-type": JSON,
                "accept": EVENT_STREAM if self._plan.stream else JSON,
            },
        )

    @property
    def _streaming(self) -> bool:
        return self._plan.stream and self._ok

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage if self._stream is not None else self._usage

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

    def _see_head(self, status: int, headers: Mapping[str, str]) -> None:
        super()._see_head(status, headers)
        request_id = self._head.get("x-amzn-requestid")
        if request_id:
            self._name(request_id)
        if self._streaming and self._stream is None:
            self._stream = self._open_stream()

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        self._see_head(status, headers)
        return "streamed" if self._streaming else "buffered"

    def response_headers(self, status: int, headers: Mapping[str, str]) -> ResponseHead:
        head = super().response_headers(status, headers)
        if self._streaming:
            head.set["content-type"] = SSE
        return head

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        if self._streaming and self._stream is not None:
            return self._stream.feed(chunk, end_of_stream)
        return super().response_body(chunk, end_of_stream)
