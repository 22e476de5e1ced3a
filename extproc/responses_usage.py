"""Token usage of the OpenAI Responses API (``/v1/responses``): its usage object, and its typed
event stream read as it passes.

A Responses answer reports ``usage`` with its own names (``input_tokens``, ``output_tokens``,
``input_tokens_details.cached_tokens``, ``output_tokens_details.reasoning_tokens``). A stream
always carries it, unasked, in the ``response`` object of its last event
(``response.completed``, ``response.incomplete`` or ``response.failed``); there is no
``data: [DONE]``: that last event, or an ``error`` event, ends the stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.usage import SSEObserver, Usage, event_data, read_usage

# The events whose "delta" is text the model produced (for an estimate of a cut stream).
_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.custom_tool_call_input.delta",
    }
)
# The events that end a stream with the response object (and its usage) in them.
_LAST = frozenset({"response.completed", "response.incomplete", "response.failed"})


def from_responses(usage: Any) -> Usage | None:
    """The Responses API's ``usage`` object."""
    return read_usage(usage, "input_tokens", "output_tokens")


class ResponsesObserver(SSEObserver):
    """Reads a Responses stream as it passes, never changing a byte: the usage and model of
    its last event, the text of its deltas, whether it ended, and the last
    ``sequence_number`` (an event the gateway adds must follow it)."""

    __slots__ = ("sequence",)

    def __init__(self) -> None:
        super().__init__(strip_usage=False)
        self.sequence = -1

    def _event(self, event: bytes) -> bytes | None:
        payload = event_data(event)
        if not payload.startswith(b"{"):
            return event
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(doc, dict):
            return event
        sequence = doc.get("sequence_number")
        if isinstance(sequence, int) and sequence > self.sequence:
            self.sequence = sequence
        kind = doc.get("type")
        if not isinstance(kind, str):  # a list would not even hash
            return event
        if kind in _DELTAS:
            delta = doc.get("delta")
            if isinstance(delta, str):
                self.said.append(delta)
            return event
        response = doc.get("response")
        if isinstance(response, dict):
            model = response.get("model")
            if isinstance(model, str):
                self.model = model
            if kind in _LAST:
                self.done = True
                self.usage = from_responses(response.get("usage"))
                self.error = self.error or kind == "response.failed"
        elif kind == "error":
            self.done = self.error = True
        return event


def error_event(code: str, message: str, sequence: int) -> bytes:
    """The ``error`` event the gateway ends a Responses stream with, in OpenAI's shape."""
    doc = {
        "type": "error",
        "code": code,
        "message": message,
        "param": None,
        "sequence_number": sequence,
    }
    return b"event: error\ndata: " + orjson.dumps(doc) + b"\n\n"
