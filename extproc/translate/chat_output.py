"""OpenAI chat completion shapes the translating schemas write (Bedrock, Anthropic): what every
document or chunk of one completion repeats, the usage object, and the SSE events of a stream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from extproc.errors import error_body
from extproc.usage import Usage

Json = dict[str, Any]

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class CompletionId:
    """What every document (or chunk) of one completion repeats."""

    id: str
    created: int
    model: str  # the route's model: Converse does not name the model that served
    service_tier: str | None = None  # the tier asked for (OpenAI's name), echoed as OpenAI does

    def document(self, kind: str, choices: list[Json]) -> Json:
        """``kind``: ``chat.completion`` or ``chat.completion.chunk``."""
        doc: Json = {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.service_tier is not None:
            doc["service_tier"] = self.service_tier
        return doc


def openai_usage(usage: Usage) -> Json:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }


def finish_reason(reasons: Mapping[str, str], stop_reason: Any, has_calls: bool) -> str:
    """OpenAI's finish reason for a provider's stop reason (``reasons``: its table; unknown
    ones are ``stop``)."""
    finish = reasons.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    if finish in ("stop", "tool_calls"):
        # The answer tool ends with tool_use but is no tool call for the client.
        return "tool_calls" if has_calls else "stop"
    return finish


@dataclass(slots=True)
class Chunks:
    """The SSE events of one streamed completion, as OpenAI writes them."""

    ident: CompletionId
    include_usage: bool  # the client asked for the usage chunk
    usage_sent: bool = False

    def chunk(self, delta: Json, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self.event([choice], None)

    def event(self, choices: list[Json], usage: Json | None) -> bytes:
        doc = self.ident.document("chat.completion.chunk", choices)
        # With include_usage OpenAI puts `usage: null` in every chunk but the last.
        if self.include_usage:
            doc["usage"] = usage
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    def usage(self, usage: Usage | None) -> bytes:
        """The usage chunk, once, when the client asked for it and the usage is known."""
        if not self.include_usage or usage is None or self.usage_sent:
            return b""
        self.usage_sent = True
        return self.event([], openai_usage(usage))


def error_event(message: str, type_: str, code: str | None) -> bytes:
    """A stream's last event when it fails: an error in OpenAI's shape (no [DONE] follows)."""
    return b"data: " + error_body(message, type_, None, code) + b"\n\n"
