"""ConverseStream's event stream as OpenAI's chat completion chunks, one SSE event per Bedrock
event as soon as it is decoded: a state machine of its own per streamed answer."""

from __future__ import annotations

from typing import Any

import orjson

from extproc import tokens
from extproc.errors import error_body
from extproc.translate.bedrock.chat_response import finish_reason
from extproc.translate.bedrock.converse_events import ConverseEvents, block_index
from extproc.translate.bedrock.reasoning import StreamedThinking
from extproc.translate.bedrock.request import Plan
from extproc.translate.chat_output import CompletionId, openai_usage

Json = dict[str, Any]

DONE = b"data: [DONE]\n\n"

# Stream bookkeeping for a content block that is not one of the client's tool calls.
_ANSWER_BLOCK = -1  # the response_format tool: its input deltas are content deltas
_DROPPED_BLOCK = -2  # a tool call beyond the first with parallel_tool_calls: false


class ConverseStream(ConverseEvents):
    """One ConverseStream answer as chat completion chunks."""

    def __init__(self, plan: Plan, ident: CompletionId) -> None:
        super().__init__()
        self._plan = plan
        self._ident = ident
        self._blocks: dict[int, int] = {}  # contentBlockIndex -> tool_calls index (or _*_BLOCK)
        self._calls = 0
        self._thinking: dict[int, StreamedThinking] = {}  # contentBlockIndex -> its reasoning
        self._opened = self._usage_sent = False

    def _finish(self) -> bytes:
        return DONE

    def _chunk(self, delta: Json, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._sse([choice], None)

    def _sse(self, choices: list[Json], usage: Json | None) -> bytes:
        doc = self._ident.document("chat.completion.chunk", choices)
        # With include_usage OpenAI puts `usage: null` in every chunk but the last.
        if self._plan.include_usage:
            doc["usage"] = usage
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    def _open(self) -> bytes:
        """The role chunk, before anything else (text blocks have no start event)."""
        if self._opened:
            return b""
        self._opened = True
        return self._chunk({"role": "assistant", "content": ""})

    def _tool_start(self, block: int, tool: Json) -> bytes:
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
        delta = self._openai_delta(payload.get("delta"), block_index(payload))
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
        index = block_index(payload)
        thinking = self._thinking.pop(index, None) if index is not None else None
        if thinking is None:
            return b""
        return self._open() + self._chunk({"thinking_blocks": [thinking.block()]})

    def _stop(self, payload: Json) -> bytes:
        finish = finish_reason(payload.get("stopReason"), self._calls > 0)
        return self._open() + self._chunk({}, finish) + self._usage_chunk()

    def _metadata(self) -> bytes:
        # OpenAI sends usage after the finish chunk; Bedrock sends metadata after messageStop.
        return self._usage_chunk() if self._stopped else b""

    def _usage_chunk(self) -> bytes:
        if not self._plan.include_usage or self.usage is None or self._usage_sent:
            return b""
        self._usage_sent = True
        return self._sse([], openai_usage(self.usage))

    def _error(self, message: str, type_: str, code: str | None) -> bytes:
        """An error in OpenAI's shape (no [DONE] follows)."""
        return b"data: " + error_body(message, type_, None, code) + b"\n\n"
