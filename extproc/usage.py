"""Token usage: what a response consumed, read from whatever shape the provider answered in.

OpenAI-shaped responses (OpenAI, Azure, every compatible server) carry ``usage`` in the JSON
body, or in a last SSE chunk when the request asked for ``stream_options.include_usage``.
:class:`SSEObserver` watches a pass-through stream for it without delaying a byte, and can
remove that chunk (and the ``"usage": null`` OpenAI adds to every other chunk) when the gateway,
not the client, asked for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from extproc import tokens


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    # Tokens written to a prompt cache (Anthropic's and Bedrock's cache writes), part of the
    # input tokens and priced at their own rate.
    cache_write_input_tokens: int = 0
    # Text units a Bedrock guardrail assessed (its policies' billed units, summed): reported
    # in the answer's trace when the guardrail's trace is enabled.
    guardrail_units: int = 0
    # True when counted by the gateway (extproc.tokens): the answer ended without the
    # provider's own report (a stream cut short, a server that never reports usage).
    estimated: bool = False
    # Audio and image endpoints (extproc/translate/media.py), priced by their own units: the
    # characters of a speech request's input, the images an answer made, the seconds of audio
    # a transcription or translation read.
    input_characters: int = 0
    images: int = 0
    audio_seconds: float = 0.0

    @property
    def source(self) -> str:
        """``usage_source`` of records, metrics and spans: who counted these tokens."""
        return "estimated" if self.estimated else "provider"


def estimated(input_tokens: int, output_tokens: int) -> Usage:
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        estimated=True,
    )


def answer_text(doc: Mapping[str, Any] | None) -> str:
    """What a chat (every choice's message) or text completion (every choice's text) document
    says, for an estimate."""
    choices = doc.get("choices") if doc else None
    out: list[str] = []
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        message, text = choice.get("message"), choice.get("text")
        if isinstance(message, dict):
            out.extend(tokens.message_texts(message))
        elif isinstance(text, str):
            out.append(text)
    return "".join(out)


def token_count(doc: Mapping[str, Any] | None, key: str) -> int:
    """A provider's token count: a non-negative integer, or 0 for anything else (a negative
    count would credit rate-limit buckets and make a negative cost)."""
    value = doc.get(key) if doc else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def read_usage(usage: Any, input_key: str, output_key: str) -> Usage | None:
    """An OpenAI-style ``usage`` object whose input and output counts are named ``input_key``
    and ``output_key``, each with its ``..._details`` (cached and reasoning tokens)."""
    if not isinstance(usage, dict):
        return None
    inputs = usage.get(f"{input_key}_details")
    outputs = usage.get(f"{output_key}_details")
    input_tokens = token_count(usage, input_key)
    output_tokens = token_count(usage, output_key)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=token_count(usage, "total_tokens") or input_tokens + output_tokens,
        cached_input_tokens=token_count(
            inputs if isinstance(inputs, dict) else None, "cached_tokens"
        ),
        reasoning_tokens=token_count(
            outputs if isinstance(outputs, dict) else None, "reasoning_tokens"
        ),
    )


def from_openai(usage: Any) -> Usage | None:
    """OpenAI's ``usage`` object of chat completions, text completions and embeddings."""
    return read_usage(usage, "prompt_tokens", "completion_tokens")


def json_document(body: bytes) -> dict[str, Any] | None:
    """A response body as a JSON object; None when it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


UsageReader = Callable[[Any], Usage | None]


def from_json_doc(
    doc: Mapping[str, Any] | None, reader: UsageReader = from_openai
) -> tuple[Usage | None, str | None]:
    """Usage and the served model of a non-streaming OpenAI-shaped response document, its
    ``usage`` object read by ``reader`` (its API's)."""
    if doc is None:
        return None, None
    model = doc.get("model")
    return reader(doc.get("usage")), model if isinstance(model, str) else None


_EVENT_END = re.compile(rb"\r?\n\r?\n")
# OpenAI adds "usage":null to every chunk once include_usage is on; the client that did not ask
# must not see it. Inside JSON strings quotes are escaped, so this only matches the real key.
_USAGE_NULL = re.compile(rb'(,\s*"usage"\s*:\s*null(?=\s*[,}]))|("usage"\s*:\s*null\s*,\s*)')


# The largest SSE event the gateway holds (an OpenAI chunk is a few KB; a server that sends a
# whole answer as one event still fits). A longer one ends the stream with an error event: an
# event that never ends would otherwise grow the sidecar's buffer without limit.
MAX_EVENT_BYTES = 1024 * 1024


def event_ends(data: bytes | bytearray, start: int = 0) -> Iterator[int]:
    """Where each complete event of ``data`` ends (after its blank line), looking from
    ``start`` on (no separator ends before it)."""
    if data.find(b"\r", start) != -1:
        yield from (match.end() for match in _EVENT_END.finditer(data, start))
        return
    # Without \r the separator is exactly \n\n: bytes.find is many times faster than the regex.
    end = data.find(b"\n\n", start)
    while end != -1:
        yield end + 2
        end = data.find(b"\n\n", end + 2)


def event_data(event: bytes) -> bytes:
    """The event's data: its ``data:`` lines joined, each without the field name and spaces."""
    if event.startswith(b"data:") and event.find(b"\n") == len(event) - 2 and b"\r" not in event:
        return event[5:-2].lstrip(b" ")  # the usual event: one data line, then the blank line
    return b"".join(
        line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
    )


def _without_usage_null(event: bytes) -> bytes:
    """``event`` without its first ``"usage": null`` member (and the comma that joined it)."""
    key = event.find(b'"usage"')
    if key == -1:
        return event
    # A match starts at this key or at the comma before it: searching from there (instead of
    # from the start, where every comma is a candidate) finds the same first match.
    start = len(event[:key].rstrip())
    if event[start - 1 : start] == b",":
        start -= 1
    else:
        start = key
    match = _USAGE_NULL.search(event, start)
    if match is None:
        return event
    return event[: match.start()] + event[match.end() :]


class SSEObserver:
    """Reads usage out of an OpenAI-shaped SSE stream as it passes.

    ``strip_usage``: the gateway injected ``include_usage`` the client did not ask for, so its
    traces are removed and only whole events are forwarded (a partial event waits for its end).
    Without it, bytes are forwarded exactly as they arrive.
    """

    __slots__ = ("_buffer", "_strip", "done", "error", "model", "overflow", "said", "usage")

    def __init__(self, strip_usage: bool) -> None:
        self._strip = strip_usage
        # The incomplete event, grown in place: a long event costs linear time, not quadratic.
        self._buffer = bytearray()
        self.usage: Usage | None = None
        self.model: str | None = None
        # What the choices' deltas said (text, reasoning, tool calls), for an estimate if the
        # stream ends without usage: kept as the pieces that came, joined only then.
        self.said: list[str] = []
        self.done = False  # the provider's closing "data: [DONE]" was seen
        self.error = False  # the provider sent an error event ({"error": {...}}) in the stream
        # An event grew past MAX_EVENT_BYTES: it was dropped (when stripping) and everything
        # after it is; the caller ends the stream with an error.
        self.overflow = False

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes:
        if self.overflow:
            return b""
        buffer = self._buffer
        held = len(buffer)
        data: bytes | bytearray = chunk
        if held:
            buffer += chunk
            data = buffer
        out: list[bytes] = []
        start = 0
        # A separator may straddle the held bytes and the chunk: look 3 bytes back, no more.
        for end in event_ends(data, max(0, held - 3)):
            kept = self._event(bytes(data[start:end]))
            start = end
            if kept is not None:
                out.append(kept)
        if len(data) - start > MAX_EVENT_BYTES:
            self.overflow = True
            self._buffer = bytearray()
            return b"".join(out) if self._strip else chunk
        if held:
            del buffer[:start]
        else:
            buffer += data[start:]
        if end_of_stream and buffer:
            kept = self._event(bytes(buffer))
            buffer.clear()
            if kept is not None:
                out.append(kept)
        if not self._strip:
            return chunk
        return b"".join(out)

    def _event(self, event: bytes) -> bytes | None:
        payload = event_data(event)
        if payload == b"[DONE]":
            self.done = True
            return event
        if not payload or not payload.startswith(b"{"):
            return event
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(doc, dict):
            return event
        if isinstance(doc.get("error"), dict):
            self.error = True
        if self.model is None and isinstance(doc.get("model"), str):
            self.model = doc["model"]
        usage = from_openai(doc.get("usage"))
        if usage is not None:
            self.usage = usage
            if self._strip and not doc.get("choices"):
                return None
        choices = doc.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if not isinstance(delta, dict):
                    text = choice.get("text") if isinstance(choice, dict) else None
                    if isinstance(text, str):  # a text completion's chunk
                        self.said.append(text)
                    continue
                content = delta.get("content")
                if len(delta) == 1 and isinstance(content, str):
                    self.said.append(content)  # the usual delta, without the general walk
                else:
                    self.said.extend(tokens.message_texts(delta))
        if self._strip:
            return _without_usage_null(event)
        return event

    def output_tokens(self, model: str) -> int:
        """Output tokens of what the stream said so far, counted by the gateway."""
        return tokens.count("".join(self.said), model)
