"""Reading Anthropic's event stream (SSE: ``event:`` and ``data:`` lines) as it arrives: its
events as JSON objects, and the usage it reports (``message_start``, then the cumulative
``message_delta``). Shared by the chat translator's state machine (:mod:`.stream`) and the
Messages pass-through (:mod:`.messages`).

The SSE framing is read with :func:`extproc.usage.event_ends` / :func:`~extproc.usage.event_data`
(the gateway's own reader, written for OpenAI's streams: no SSE library reads bytes split at
arbitrary points without copying them per event). Each event's JSON names its ``type``, so the
``event:`` line is not needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from extproc.translate.anthropic.response import usage_of
from extproc.usage import MAX_EVENT_BYTES, Usage, event_data, event_ends

Json = dict[str, Any]


class EventReader:
    """The complete events of a stream fed in pieces: each a JSON object, or None for an event
    whose data is not one. ``overflow``: an event grew past ``MAX_EVENT_BYTES`` (it and the
    rest of the stream are not read)."""

    def __init__(self) -> None:
        self._buffer = bytearray()  # the incomplete event, grown in place
        self.overflow = False

    def feed(self, chunk: bytes, end_of_stream: bool) -> list[Json | None]:
        if self.overflow:
            return []
        buffer = self._buffer
        held = len(buffer)
        buffer += chunk
        out: list[Json | None] = []
        start = 0
        # A separator may straddle the held bytes and the chunk: look 3 bytes back, no more.
        for end in event_ends(buffer, max(0, held - 3)):
            data = event_data(bytes(buffer[start:end]))
            start = end
            if data:  # a comment or an event without data says nothing
                out.append(_object(data))
        del buffer[:start]
        if len(buffer) > MAX_EVENT_BYTES:
            self.overflow = True
            self._buffer = bytearray()
        elif end_of_stream and buffer.strip():
            data = event_data(bytes(buffer) + b"\n\n")
            buffer.clear()
            if data:
                out.append(_object(data))
        return out


def _object(data: bytes) -> Json | None:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


class UsageReport:
    """The usage a stream reports: ``message_start``'s (the input, one output token), then each
    ``message_delta``'s, cumulative: a count replaces the one before. Only ``message_delta``'s
    is the answer's usage (:attr:`final`): a stream cut before it is estimated, and marked cut,
    like any other."""

    def __init__(self) -> None:
        self._reported: dict[str, Any] = {}
        self.final: Usage | None = None

    def see(self, usage: Any, final: bool) -> None:
        if isinstance(usage, Mapping):
            self._reported.update({k: v for k, v in usage.items() if v is not None})
            if final:
                self.final = usage_of(self._reported)
