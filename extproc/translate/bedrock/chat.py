"""``/v1/chat/completions`` on Bedrock: Converse for an answer in one document, ConverseStream
(:class:`~extproc.translate.bedrock.stream.ConverseStream`) for a stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

import orjson

from extproc import tokens
from extproc.translate import (
    BodyMode,
    RequestContext,
    ResponseHead,
    UpstreamRequest,
    dump_json,
    json_object,
)
from extproc.translate.bedrock.buffered import JSON, BedrockTranslator, parse_upstream
from extproc.translate.bedrock.chat_response import chat_completion
from extproc.translate.bedrock.guardrails import guardrail_config
from extproc.translate.bedrock.request import Plan, converse
from extproc.translate.bedrock.stream import ConverseStream
from extproc.translate.chat_output import CompletionId
from extproc.usage import Usage

EVENT_STREAM = "application/vnd.amazon.eventstream"
SSE = "text/event-stream"


class BedrockChat(BedrockTranslator):
    """``/v1/chat/completions`` -> Converse (``stream: false``) or ConverseStream."""

    def __init__(self, ctx: RequestContext, prefix: str = "") -> None:
        super().__init__(ctx, prefix)
        self._plan = Plan()
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        # What a buffered answer said, for an estimate if it came without Bedrock's usage.
        self._said: list[str] = []
        self._stream: ConverseStream | None = None  # once the head of a 2xx stream is seen

    def request(self, body: bytes | None) -> UpstreamRequest:
        settings = self._ctx.settings
        document, self._plan = converse(
            json_object(body),
            self._ctx.upstream_model,
            tuple(settings.cache_points) if settings else (),
            settings.family if settings else None,
        )
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
            self._id = f"chatcmpl-{request_id}"
        if self._streaming and self._stream is None:
            ident = CompletionId(
                self._id, self._created, self._ctx.route_model, self._plan.service_tier
            )
            self._stream = ConverseStream(self._plan, ident)

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

    def _translate(self, body: bytes) -> bytes:
        ident = CompletionId(
            self._id, self._created, self._ctx.route_model, self._plan.service_tier
        )
        completion, self._usage = chat_completion(parse_upstream(body), self._plan, ident)
        self._said = list(tokens.message_texts(completion["choices"][0]["message"]))
        return orjson.dumps(completion)
