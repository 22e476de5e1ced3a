"""Anthropic's answers as OpenAI's: a whole Message as a chat completion, the usage, the finish
reasons, and Anthropic's errors (``{"type": "error", "error": {"type", "message"}}``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from extproc.errors import (
    AUTHENTICATION,
    INVALID_REQUEST,
    NOT_FOUND,
    PERMISSION,
    RATE_LIMIT,
    SERVER,
    UPSTREAM,
    error_body,
)
from extproc.translate import chat_output
from extproc.translate.anthropic.request import Plan
from extproc.translate.chat_output import CompletionId, openai_usage
from extproc.usage import Usage, token_count

Json = dict[str, Any]

# Anthropic's error types -> OpenAI's.
ERROR_TYPES = {
    "invalid_request_error": INVALID_REQUEST,
    "authentication_error": AUTHENTICATION,
    "permission_error": PERMISSION,
    "not_found_error": NOT_FOUND,
    "request_too_large": INVALID_REQUEST,
    "rate_limit_error": RATE_LIMIT,
    "api_error": SERVER,
    "overloaded_error": SERVER,
    "timeout_error": SERVER,
}
# 529 (overloaded) is no status an OpenAI client knows: 503 says the same, and is retried by
# the SDKs and by Envoy's retry policy (5xx) alike.
_ERROR_STATUS = {529: 503}
_STATUS_TYPES = {
    400: INVALID_REQUEST,
    401: AUTHENTICATION,
    403: PERMISSION,
    404: NOT_FOUND,
    413: INVALID_REQUEST,
    429: RATE_LIMIT,
}

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
    # Server tools only (the gateway sends none): the turn paused, what was said is final.
    "pause_turn": "stop",
}


class Unreadable(Exception):
    """A 2xx Anthropic body that is not what Anthropic sends."""


def client_status(status: int) -> int:
    return _ERROR_STATUS.get(status, status)


def error_type(kind: str | None, status: int) -> str:
    return (
        ERROR_TYPES.get(kind or "")
        or _STATUS_TYPES.get(status)
        or (SERVER if status >= 500 else UPSTREAM)
    )


def error_of(doc: Any) -> tuple[str | None, str | None]:
    """(type, message) of Anthropic's error object (``{"type": "error", "error": {...}}``)."""
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return None, None
    kind, message = error.get("type"), error.get("message")
    return (
        kind if isinstance(kind, str) and kind else None,
        message if isinstance(message, str) and message else None,
    )


def openai_error_body(status: int, body: bytes) -> bytes:
    """The OpenAI error body for an Anthropic error response."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    kind, message = error_of(doc)
    if message is None:
        message = (
            body.decode(errors="replace").strip()[:1000] or f"Anthropic returned HTTP {status}."
        )
    # Only Anthropic's own names as the code: it may become a metric label.
    return error_body(
        message, error_type(kind, status), None, kind if kind in ERROR_TYPES else None
    )


def usage_of(usage: Mapping[str, Any]) -> Usage:
    """Anthropic counts cache reads and writes apart from ``input_tokens``; OpenAI's
    ``prompt_tokens`` includes them."""
    read = token_count(usage, "cache_read_input_tokens")
    write = token_count(usage, "cache_creation_input_tokens")
    prompt = token_count(usage, "input_tokens") + read + write
    completion = token_count(usage, "output_tokens")
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        total_tokens=prompt + completion,
        cached_input_tokens=read,
        cache_write_input_tokens=write,
    )


def finish_reason(stop_reason: Any, has_calls: bool) -> str:
    return chat_output.finish_reason(_FINISH_REASONS, stop_reason, has_calls)


def chat_completion(doc: Json, plan: Plan, ident: CompletionId) -> tuple[Json, Usage | None]:
    """The OpenAI chat completion for a Message, and its usage; raises :class:`Unreadable` for
    a document that is no Message."""
    blocks = doc.get("content")
    if doc.get("type") != "message" or not isinstance(blocks, list):
        raise Unreadable
    parts: list[str] = []  # the text blocks and the answer tool's input, in the model's order
    reasoning: list[str] = []
    calls: list[Json] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            reasoning.append(block["thinking"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input", {})).decode()
            if block.get("name") == plan.answer_tool:
                parts.append(arguments)
            else:
                function = {"name": block.get("name"), "arguments": arguments}
                calls.append({"id": block.get("id"), "type": "function", "function": function})
    content = "".join(parts)
    reply: Json = {
        "role": "assistant",
        "content": content or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = calls
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    choice = {
        "index": 0,
        "message": reply,
        "logprobs": None,
        "finish_reason": finish_reason(doc.get("stop_reason"), bool(calls)),
    }
    completion = ident.document("chat.completion", [choice])
    reported = doc.get("usage")
    usage = usage_of(reported) if isinstance(reported, dict) else None
    if usage is not None:
        completion["usage"] = openai_usage(usage)
    return completion, usage
