"""Anthropic's stream of Messages events as OpenAI's chat completion chunks, one chunk per
event as soon as the event is complete: a state machine of its own per streamed answer (the
events are read by :class:`~extproc.translate.anthropic.events.EventReader`)."""

from __future__ import annotations

from typing import Any

from extproc import tokens
from extproc.errors import UPSTREAM
from extproc.translate import (
    BAD_UPSTREAM_RESPONSE,
    EVENT_TOO_LARGE,
    STREAM_TRUNCATED,
    UPSTREAM_ERROR,
)
from extproc.translate.anthropic.events import EventReader, UsageReport
from extproc.translate.anthropic.request import Plan
from extproc.translate.anthropic.response import ERROR_TYPES, error_of, error_type, finish_reason
from extproc.translate.chat_output import DONE, Chunks, CompletionId, error_event
from extproc.usage import MAX_EVENT_BYTES, Usage

Json = dict[str, Any]

# Stream bookkeeping for a content block that is not one of the client's tool calls.
_ANSWER_BLOCK = -1  # the response_format tool: its input deltas are content deltas
_OTHER_BLOCK = -2  # text, thinking: their deltas say what they are


class MessagesStream:
    """One streamed Messages answer, fed its body as it comes (:meth:`feed`)."""

    def __init__(self, plan: Plan, ident: CompletionId) -> None:
        self._plan = plan
        self._out = Chunks(ident, plan.include_usage)
        self._events = EventReader()
        self._blocks: dict[int, int] = {}  # content block index -> tool_calls index (or _*)
        self._calls = 0
        self._usage = UsageReport()
        # What the answer said (text, reasoning, tool calls), for an estimate if it ends
        # without Anthropic's usage.
        self._said: list[str] = []
        self._stopped = self._closed = False
        self.done = False  # the stream ended with message_stop
        self.model: str | None = None
        self.failure: str | None = None  # why the answer failed, once the client was told

    @property
    def usage(self) -> Usage | None:
        return self._usage.final

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes:
        """The OpenAI SSE events for this piece of Anthropic's stream."""
        if self._closed:
            return b""
        out: list[bytes] = []
        for event in self._events.feed(chunk, end_of_stream):
            out.append(self._event(event))
            if self._closed:
                return b"".join(out)
        if self._events.overflow:
            message = f"Anthropic sent a stream event over {MAX_EVENT_BYTES} bytes."
            out.append(self._fail(message, UPSTREAM, EVENT_TOO_LARGE, EVENT_TOO_LARGE))
        elif end_of_stream:
            out.append(
                self._fail(
                    "Anthropic ended the stream before the answer was complete.",
                    UPSTREAM,
                    STREAM_TRUNCATED,
                    STREAM_TRUNCATED,
                )
            )
        return b"".join(out)

    def _event(self, event: Json | None) -> bytes:
        if event is None:
            return self._malformed()
        kind = event.get("type")
        if kind == "message_start":
            return self._start(event.get("message"))
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            return self._message_delta(event)
        if kind == "message_stop":
            return self._stop()
        if kind == "error":
            error, message = error_of(event)
            failure = error if error in ERROR_TYPES else UPSTREAM_ERROR
            text = message or "Anthropic reported an error mid-stream."
            return self._fail(text, error_type(error, 500), error, failure)
        return b""  # ping, content_block_stop, and events a newer API may add

    def _start(self, message: Any) -> bytes:
        if not isinstance(message, dict):
            return self._malformed()
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        self._usage.see(message.get("usage"), final=False)
        return self._out.chunk({"role": "assistant", "content": ""})

    def _block_start(self, event: Json) -> bytes:
        index = event.get("index")
        block = event.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return self._malformed()
        if block.get("type") != "tool_use":
            self._blocks[index] = _OTHER_BLOCK
            text = block.get("text") or block.get("thinking")
            if not (isinstance(text, str) and text):
                return b""
            key = "content" if block.get("type") == "text" else "reasoning_content"
            self._said.append(text)
            return self._out.chunk({key: text})
        if block.get("name") == self._plan.answer_tool:
            self._blocks[index] = _ANSWER_BLOCK
            return b""
        call_index = self._blocks[index] = self._calls
        self._calls += 1
        if isinstance(block.get("name"), str):
            self._said.append(block["name"])
        call = {
            "index": call_index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return self._out.chunk({"tool_calls": [call]})

    def _block_delta(self, event: Json) -> bytes:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return self._malformed()
        kind = delta.get("type")
        out: Json | None = None
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            out = {"content": delta["text"]}
        elif kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            out = {"reasoning_content": delta["thinking"]}
        elif kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            index = event.get("index")
            target = (
                self._blocks.get(index, _OTHER_BLOCK) if isinstance(index, int) else _OTHER_BLOCK
            )
            fragment = delta["partial_json"]
            if target == _ANSWER_BLOCK:
                out = {"content": fragment}
            elif target >= 0:
                out = {"tool_calls": [{"index": target, "function": {"arguments": fragment}}]}
        # signature_delta (a thinking block's signature) has nothing for an OpenAI client.
        if out is None or not next(iter(out.values())):
            return b""
        self._said.extend(tokens.message_texts(out))
        return self._out.chunk(out)

    def _message_delta(self, event: Json) -> bytes:
        self._usage.see(event.get("usage"), final=True)
        delta = event.get("delta")
        stop = delta.get("stop_reason") if isinstance(delta, dict) else None
        if stop is None:
            return b""
        self._stopped = True
        finish = finish_reason(stop, self._calls > 0)
        # OpenAI sends the usage chunk after the finish chunk.
        return self._out.chunk({}, finish) + self._out.usage(self.usage)

    def _stop(self) -> bytes:
        self._closed = self.done = True
        out = b"" if self._stopped else self._out.chunk({}, "stop")
        return out + self._out.usage(self.usage) + DONE

    def output_tokens(self, model: str) -> int:
        return tokens.count("".join(self._said), model)

    def _fail(self, message: str, type_: str, code: str | None, failure: str) -> bytes:
        self._closed = True
        self.failure = failure
        return error_event(message, type_, code)

    def _malformed(self) -> bytes:
        return self._fail(
            "Anthropic sent a stream event the gateway cannot read.",
            UPSTREAM,
            BAD_UPSTREAM_RESPONSE,
            BAD_UPSTREAM_RESPONSE,
        )
