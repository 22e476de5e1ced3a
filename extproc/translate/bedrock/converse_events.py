"""ConverseStream's event stream read as it comes: the frames decoded, Bedrock's exceptions and
malformed or cut streams told apart, each event handed to the API's own renderer (a subclass:
chat chunks in :mod:`.stream`, Responses events in :mod:`.responses_stream`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import orjson

from extproc import tokens
from extproc.errors import UPSTREAM
from extproc.eventstream import EventStreamDecoder, EventStreamError, Message
from extproc.translate import BAD_UPSTREAM_RESPONSE, STREAM_TRUNCATED, UPSTREAM_ERROR
from extproc.translate.bedrock.chat_response import usage_of
from extproc.translate.bedrock.errors import ERROR_TYPES, error_message, error_type
from extproc.usage import Usage

Json = dict[str, Any]


def block_index(payload: Json) -> int | None:
    """An event's ``contentBlockIndex``; None unless it is an integer, as Bedrock sends it."""
    index = payload.get("contentBlockIndex")
    return index if isinstance(index, int) and not isinstance(index, bool) else None


class ConverseEvents(ABC):
    """One ConverseStream answer, fed its body as it comes (:meth:`feed`)."""

    def __init__(self) -> None:
        self._decoder = EventStreamDecoder()
        # What the answer said (text, reasoning, tool calls), for an estimate if it ends
        # without Bedrock's usage: the pieces as they came, joined only then.
        self._said: list[str] = []
        self._stopped = self._closed = False
        self.done = False  # the stream ended as the API ends one
        self.usage: Usage | None = None
        self.failure: str | None = None  # why the answer failed, once the client was told

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes:
        """The client's events for this piece of the event stream."""
        if self._closed:
            return b""
        out: list[bytes] = []
        try:
            messages = self._decoder.feed(chunk)
        except EventStreamError as exc:
            messages = []
            out.append(self._malformed(f"Bedrock sent a malformed event stream ({exc})."))
        for message in messages:
            out.append(self._event(message))
            if self._closed:
                break
        if end_of_stream and not self._closed:
            if self._stopped and not self._decoder.pending:
                out.append(self._finish())
                self._closed = self.done = True
            else:
                out.append(
                    self._fail(
                        "Bedrock ended the stream before the answer was complete.",
                        UPSTREAM,
                        STREAM_TRUNCATED,
                        STREAM_TRUNCATED,
                    )
                )
        return b"".join(out)

    def output_tokens(self, model: str) -> int:
        return tokens.count("".join(self._said), model)

    def _event(self, message: Message) -> bytes:
        headers = message.headers
        kind = headers.get(":message-type", "event")
        if kind == "exception":
            # e.g. "throttlingException": the error's name with a lower-case initial.
            name = str(headers.get(":exception-type", ""))
            name = name[:1].upper() + name[1:]
            text = error_message(message.payload, "Bedrock reported an error mid-stream.")
            # Telemetry gets AWS's own names only: an error type is a metric label.
            failure = name if name in ERROR_TYPES else UPSTREAM_ERROR
            return self._fail(text, error_type(name, 500), name or None, failure)
        if kind == "error":
            code = str(headers.get(":error-code", "")) or None
            text = str(headers.get(":error-message", "Bedrock reported an error mid-stream."))
            return self._fail(text, UPSTREAM, code, UPSTREAM_ERROR)
        try:
            payload = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            return self._malformed("Bedrock sent an event the gateway cannot read.")
        event = headers.get(":event-type")
        if event == "messageStart":
            return self._open()
        if event == "contentBlockStart":
            start = payload.get("start")
            tool = start.get("toolUse") if isinstance(start, dict) else None
            if not isinstance(tool, dict):
                return b""
            block = block_index(payload)
            if block is None:
                # Its deltas could not be told apart from another block's.
                return self._malformed("Bedrock sent a tool call the gateway cannot read.")
            return self._tool_start(block, tool)
        if event == "contentBlockDelta":
            return self._block_delta(payload)
        if event == "contentBlockStop":
            return self._block_stop(payload)
        if event == "messageStop":
            self._stopped = True
            return self._stop(payload)
        if event == "metadata":
            usage = payload.get("usage")
            if isinstance(usage, dict):
                self.usage = usage_of(usage, payload.get("trace"))
            return self._metadata()
        return b""  # events a newer Bedrock may add carry nothing for us

    def _fail(self, message: str, type_: str, code: str | None, failure: str) -> bytes:
        """The stream's last event: the API's error event."""
        self._closed = True
        self.failure = failure
        return self._error(message, type_, code)

    def _malformed(self, message: str) -> bytes:
        return self._fail(message, UPSTREAM, BAD_UPSTREAM_RESPONSE, BAD_UPSTREAM_RESPONSE)

    @abstractmethod
    def _open(self) -> bytes:
        """``messageStart`` (may come late or twice: idempotent)."""

    @abstractmethod
    def _tool_start(self, block: int, tool: Json) -> bytes:
        """A tool use block starts (text and reasoning blocks have no start event)."""

    @abstractmethod
    def _block_delta(self, payload: Json) -> bytes: ...

    @abstractmethod
    def _block_stop(self, payload: Json) -> bytes: ...

    @abstractmethod
    def _stop(self, payload: Json) -> bytes:
        """``messageStop``, with the stop reason."""

    @abstractmethod
    def _metadata(self) -> bytes:
        """``metadata``: :attr:`usage` was just read from it."""

    @abstractmethod
    def _finish(self) -> bytes:
        """The stream ended after ``messageStop``."""

    @abstractmethod
    def _error(self, message: str, type_: str, code: str | None) -> bytes:
        """The error event a failed stream ends with."""
