"""ConverseStream's event stream as OpenAI's chat completion chunks, one SSE event per Bedrock
event as soon as it is decoded: a state machine of its own per streamed answer."""

from __future__ import annotations

from typing import Any

import orjson

from extproc import tokens
from extproc.errors import UPSTREAM
from extproc.eventstream import EventStreamDecoder, EventStreamError, Message
from extproc.translate import BAD_UPSTREAM_RESPONSE, STREAM_TRUNCATED, UPSTREAM_ERROR
from extproc.translate.bedrock.chat_response import finish_reason, usage_of
from extproc.translate.bedrock.errors import ERROR_TYPES, error_message, error_type
from extproc.translate.bedrock.reasoning import StreamedThinking
from extproc.translate.bedrock.request import Plan
from extproc.translate.chat_output import DONE, Chunks, CompletionId, error_event
from extproc.usage import Usage

Json = dict[str, Any]

# Stream bookkeeping for a content block that is not one of the client's tool calls.
_ANSWER_BLOCK = -1  # the response_format tool: its input deltas are content deltas
_DROPPED_BLOCK = -2  # a tool call beyond the first with parallel_tool_calls: false


def _block_index(payload: Json) -> int | None:
    """An event's ``contentBlockIndex``; None unless it is an integer, as Bedrock sends it."""
    index = payload.get("contentBlockIndex")
    return index if isinstance(index, int) and not isinstance(index, bool) else None


class ConverseStream:
    """One ConverseStream answer, fed its body as it comes (:meth:`feed`)."""

    def __init__(self, plan: Plan, ident: CompletionId) -> None:
        self._plan = plan
        self._out = Chunks(ident, plan.include_usage)
        self._decoder = EventStreamDecoder()
        self._blocks: dict[int, int] = {}  # contentBlockIndex -> tool_calls index (or _*_BLOCK)
        self._calls = 0
        self._thinking: dict[int, StreamedThinking] = {}  # contentBlockIndex -> its reasoning
        # What the answer said (text, reasoning, tool calls), for an estimate if it ends
        # without Bedrock's usage: the pieces as they came, joined only then.
        self._said: list[str] = []
        self._opened = self._stopped = self._closed = False
        self.done = False  # the stream ended with [DONE]
        self.usage: Usage | None = None
        self.failure: str | None = None  # why the answer failed, once the client was told

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes:
        """The SSE events for this piece of the event stream."""
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
                out.append(DONE)
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
            return self._block_start(payload)
        if event == "contentBlockDelta":
            return self._block_delta(payload)
        if event == "contentBlockStop":
            return self._block_stop(payload)
        if event == "messageStop":
            return self._stop(payload)
        if event == "metadata":
            return self._metadata(payload)
        return b""  # events a newer Bedrock may add carry nothing for us

    def _chunk(self, delta: Json, finish: str | None = None) -> bytes:
        return self._out.chunk(delta, finish)

    def _open(self) -> bytes:
        """The role chunk, before anything else (text blocks have no start event)."""
        if self._opened:
            return b""
        self._opened = True
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, payload: Json) -> bytes:
        start = payload.get("start")
        tool = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(tool, dict):
            return b""
        block = _block_index(payload)
        if block is None:
            # Its deltas could not be told apart from another block's.
            return self._malformed("Bedrock sent a tool call the gateway cannot read.")
        if tool.get("name") == self._plan.answer_tool:
            self._blocks[block] = _ANSWER_BLOCK
            return self._open()
        if self._plan.single_call and self._calls:
            self._blocks[block] = _DROPPED_BLOCK
            return b""
        index = self._blocks[block] = self._calls
        self._calls += 1
        if isinstance(tool.get("name"), str):
            self._said.append(tool["name"])
        call = {
            "index": index,
            "id": tool.get("toolUseId"),
            "type": "function",
            "function": {"name": tool.get("name"), "arguments": ""},
        }
        return self._open() + self._chunk({"tool_calls": [call]})

    def _block_delta(self, payload: Json) -> bytes:
        delta = self._openai_delta(payload.get("delta"), _block_index(payload))
        if delta is None:
            return b""
        self._said.extend(tokens.message_texts(delta))
        return self._open() + self._chunk(delta)

    def _openai_delta(self, delta: Any, block: int | None) -> Json | None:
        if not isinstance(delta, dict):
            return None
        text = delta.get("text")
        if isinstance(text, str) and text:
            return {"content": text}
        tool = delta.get("toolUse")
        fragment = tool.get("input") if isinstance(tool, dict) else None
        if isinstance(fragment, str) and fragment:
            # A block that never started (or whose index is unreadable) belongs to no call.
            target = _DROPPED_BLOCK if block is None else self._blocks.get(block, _DROPPED_BLOCK)
            if target == _ANSWER_BLOCK:
                return {"content": fragment}
            if target == _DROPPED_BLOCK:
                return None
            return {"tool_calls": [{"index": target, "function": {"arguments": fragment}}]}
        thought = delta.get("reasoningContent")
        if not isinstance(thought, dict):
            return None
        if block is not None:
            self._thinking.setdefault(block, StreamedThinking()).add(thought)
        text = thought.get("text")
        if isinstance(text, str) and text:
            return {"reasoning_content": text}
        return None

    def _block_stop(self, payload: Json) -> bytes:
        """A reasoning block is sent whole as it ends, for the client to send back."""
        index = _block_index(payload)
        thinking = self._thinking.pop(index, None) if index is not None else None
        if thinking is None:
            return b""
        return self._open() + self._chunk({"thinking_blocks": [thinking.block()]})

    def output_tokens(self, model: str) -> int:
        return tokens.count("".join(self._said), model)

    def _stop(self, payload: Json) -> bytes:
        self._stopped = True
        finish = finish_reason(payload.get("stopReason"), self._calls > 0)
        return self._open() + self._chunk({}, finish) + self._usage_chunk()

    def _metadata(self, payload: Json) -> bytes:
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.usage = usage_of(usage, payload.get("trace"))
        # OpenAI sends usage after the finish chunk; Bedrock sends metadata after messageStop.
        return self._usage_chunk() if self._stopped else b""

    def _usage_chunk(self) -> bytes:
        return self._out.usage(self.usage)

    def _fail(self, message: str, type_: str, code: str | None, failure: str) -> bytes:
        """The stream's last event: an error in OpenAI's shape (no [DONE] follows)."""
        self._closed = True
        self.failure = failure
        return error_event(message, type_, code)

    def _malformed(self, message: str) -> bytes:
        return self._fail(message, UPSTREAM, BAD_UPSTREAM_RESPONSE, BAD_UPSTREAM_RESPONSE)
