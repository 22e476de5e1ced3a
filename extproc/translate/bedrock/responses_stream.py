"""ConverseStream's event stream as the Responses API's typed events (``event: <type>`` and
``data:`` lines, ``sequence_number`` from 0), in OpenAI's order: ``response.created`` and
``response.in_progress``; per content block an output item (added, its part added, deltas, text
done, part done, item done); ``response.completed`` (or ``response.incomplete``) with the whole
response and its usage once Bedrock's ``metadata`` event came. A Bedrock exception ends it with
``response.failed``; a cut or unreadable stream with an ``error`` event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from extproc.errors import RATE_LIMIT
from extproc.responses_usage import error_event
from extproc.translate import BAD_UPSTREAM_RESPONSE, STREAM_TRUNCATED
from extproc.translate.bedrock.converse_events import ConverseEvents, block_index
from extproc.translate.bedrock.reasoning import StreamedThinking
from extproc.translate.bedrock.request import Plan
from extproc.translate.bedrock.responses_answer import (
    ResponseShell,
    Status,
    call_item,
    message_item,
    new_id,
    outcome,
    reasoning_item,
    reasoning_part,
    text_part,
)

Json = dict[str, Any]


@dataclass(slots=True)
class _Item:
    """An output item being streamed, from its Converse content block."""

    kind: str  # message, function_call or reasoning
    index: int  # output_index
    id: str
    pieces: list[str] = field(default_factory=list)  # text, arguments or reasoning
    call_id: Any = None
    name: Any = None
    thinking: StreamedThinking | None = None


class ResponsesStream(ConverseEvents):
    """One ConverseStream answer as Responses events."""

    def __init__(self, plan: Plan, shell: ResponseShell) -> None:
        super().__init__()
        self._plan = plan
        self._shell = shell
        self._sequence = 0
        self._open_items: dict[int, _Item | None] = {}  # contentBlockIndex -> item (None: dropped)
        self._output: list[Json] = []  # the finished items, by output index
        self._calls = 0
        self._opened = False
        self._status: Status = "completed"
        self._incomplete: str | None = None

    def _send(self, kind: str, **fields: Any) -> bytes:
        doc = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"

    def _open(self) -> bytes:
        if self._opened:
            return b""
        self._opened = True
        started = self._shell.document("in_progress", [])
        return self._send("response.created", response=started) + self._send(
            "response.in_progress", response=started
        )

    def _add(self, block: int, kind: str, **extra: Any) -> tuple[_Item, bytes]:
        """A new output item for ``block``, announced with its first part."""
        prefix = {"message": "msg", "function_call": "fc", "reasoning": "rs"}[kind]
        item = _Item(kind, len(self._output), new_id(prefix), **extra)
        self._open_items[block] = item
        self._output.append({})  # its place; filled when it is done
        out = self._open() + self._send(
            "response.output_item.added", output_index=item.index, item=self._item(item, False)
        )
        if kind != "function_call":
            part = text_part("") if kind == "message" else reasoning_part("")
            out += self._send("response.content_part.added", **self._at(item), part=part)
        return item, out

    def _item(self, item: _Item, done: bool) -> Json:
        status: Status = "completed" if done else "in_progress"
        text = "".join(item.pieces)
        if item.kind == "message":
            return message_item(item.id, text if done else None, status)
        if item.kind == "function_call":
            return call_item(item.id, item.call_id, item.name, text if done else "", status)
        thought = item.thinking.block() if done and item.thinking is not None else None
        return reasoning_item(item.id, thought)

    def _tool_start(self, block: int, tool: Json) -> bytes:
        name = tool.get("name")
        if name == self._plan.answer_tool:
            return self._add(block, "message")[1]
        if self._plan.single_call and self._calls:
            self._open_items[block] = None
            return b""
        self._calls += 1
        if isinstance(name, str):
            self._said.append(name)
        return self._add(block, "function_call", call_id=tool.get("toolUseId"), name=name)[1]

    def _block_delta(self, payload: Json) -> bytes:
        delta = payload.get("delta")
        block = block_index(payload)
        if not isinstance(delta, dict) or block is None:
            return b""
        text = delta.get("text")
        tool = delta.get("toolUse")
        fragment = tool.get("input") if isinstance(tool, dict) else None
        thought = delta.get("reasoningContent")
        item = self._open_items.get(block)
        out = b""
        if isinstance(text, str) and text:
            if item is None:
                item, out = self._add(block, "message")
            return out + self._piece(item, "response.output_text.delta", text)
        if isinstance(fragment, str) and fragment and item is not None:
            if item.kind == "message":  # the answer tool's input is the answer's text
                return self._piece(item, "response.output_text.delta", fragment)
            return self._piece(item, "response.function_call_arguments.delta", fragment)
        if isinstance(thought, dict):
            if item is None:
                item, out = self._add(block, "reasoning", thinking=StreamedThinking())
            if item.thinking is not None:
                item.thinking.add(thought)
            said = thought.get("text")
            if isinstance(said, str) and said:
                out += self._piece(item, "response.reasoning_text.delta", said)
        return out

    def _piece(self, item: _Item, kind: str, piece: str) -> bytes:
        item.pieces.append(piece)
        self._said.append(piece)
        at = self._at(item, item.kind != "function_call", kind == "response.output_text.delta")
        return self._send(kind, **at, delta=piece)

    def _at(self, item: _Item, part: bool = True, text: bool = False) -> Json:
        """Where an event's item (and its part) is; text events carry (no) logprobs."""
        at: Json = {"item_id": item.id, "output_index": item.index}
        if part:
            at["content_index"] = 0
        if text:
            at["logprobs"] = []
        return at

    def _block_stop(self, payload: Json) -> bytes:
        block = block_index(payload)
        item = self._open_items.pop(block, None) if block is not None else None
        return self._done(item) if item is not None else b""

    def _done(self, item: _Item) -> bytes:
        text = "".join(item.pieces)
        done = self._item(item, True)
        self._output[item.index] = done
        if item.kind == "function_call":
            out = self._send(
                "response.function_call_arguments.done",
                **self._at(item, False),
                name=item.name,
                arguments=text,
            )
        else:
            part = done["content"][0] if done["content"] else reasoning_part(text)
            kind = "output_text" if item.kind == "message" else "reasoning_text"
            at = self._at(item, text=item.kind == "message")
            out = self._send(f"response.{kind}.done", **at, text=text)
            out += self._send("response.content_part.done", **self._at(item), part=part)
        return out + self._send("response.output_item.done", output_index=item.index, item=done)

    def _stop(self, payload: Json) -> bytes:
        self._status, self._incomplete = outcome(payload.get("stopReason"))
        out = self._open()
        for item in [i for i in self._open_items.values() if i is not None]:
            out += self._done(item)  # a block Bedrock did not stop
        self._open_items.clear()
        return out

    def _metadata(self) -> bytes:
        return self._end() if self._stopped else b""

    def _finish(self) -> bytes:
        return self._end()

    def _end(self) -> bytes:
        # The last event: whatever Bedrock sends after it cannot reach the client.
        self._closed = self.done = True
        output = [item for item in self._output if item]
        final = self._shell.document(self._status, output, self.usage, self._incomplete)
        kind = "response.incomplete" if self._status == "incomplete" else "response.completed"
        return self._send(kind, response=final)

    def _error(self, message: str, type_: str, code: str | None) -> bytes:
        if code in (STREAM_TRUNCATED, BAD_UPSTREAM_RESPONSE):
            return self._open() + error_event(code or "", message, self._sequence)
        # Bedrock's exception: OpenAI's codes for a failed response, AWS's name in the text.
        error = {
            "code": "rate_limit_exceeded" if type_ == RATE_LIMIT else "server_error",
            "message": f"{code}: {message}" if code else message,
        }
        output = [item for item in self._output if item]
        failed = self._shell.document("failed", output, self.usage, error=error)
        return self._open() + self._send("response.failed", response=failed)
