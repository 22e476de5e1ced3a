"""What the fake Bedrock checks and answers about Claude's thinking and prompt caching, as
Converse does:

- ``additionalModelRequestFields.thinking``: ``enabled`` needs ``budget_tokens`` of at least 1024
  and below ``inferenceConfig.maxTokens``; while thinking, no temperature but 1, ``topP`` only in
  [0.95, 1], no forced tool (``toolChoice`` ``any`` / ``tool``); the last assistant turn, when it
  used a tool, must start with a reasoning block; every reasoning block sent back must carry the
  signature (or redacted data) this fake issued for it, unchanged.
- ``cachePoint``: ``{"type": "default"}`` only, never first in its list (``system``, a message's
  content, ``toolConfig.tools``), at most four a request.

Answers: with thinking on, a reasoning block (text and signature) before the answer, and a
redacted one when the last user text holds ``[[redacted]]``. Prompt caching is simulated: each
cache point's prefix (tools, then system, then messages, up to the point) is remembered when first
seen (``cacheWriteInputTokens``) and read back when seen again (``cacheReadInputTokens``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import orjson

from tests.fakes.openai import count_tokens

Json = dict[str, Any]

REDACTED = "[[redacted]]"
MIN_BUDGET = 1024
MAX_CACHE_POINTS = 4
_SIGNING_KEY = b"fake-bedrock-thinking"


class Invalid(Exception):
    """A Converse body Bedrock refuses: the fake answers its ValidationException."""


def _invalid(message: str) -> Invalid:
    return Invalid(message)


def sign(text: str) -> str:
    return base64.b64encode(hmac.new(_SIGNING_KEY, text.encode(), hashlib.sha256).digest()).decode()


def redacted_data(text: str) -> str:
    return base64.b64encode(b"redacted:" + sign(text).encode()).decode()


def thinking_of(body: Json) -> Json | None:
    """The request's thinking configuration when it thinks (enabled or adaptive)."""
    fields = body.get("additionalModelRequestFields") or {}
    thinking = fields.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        return thinking
    return None


# --- thinking ------------------------------------------------------------------------------------


def check_thinking(body: Json) -> None:
    _check_signatures(body["messages"])
    thinking = thinking_of(body)
    if thinking is None:
        return
    config = body.get("inferenceConfig") or {}
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < MIN_BUDGET:
            raise _invalid(f"thinking.enabled.budget_tokens: Input should be >= {MIN_BUDGET}")
        if not budget < config.get("maxTokens", 0):
            raise _invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    if config.get("temperature", 1) != 1:
        raise _invalid("`temperature` may only be set to 1 when thinking is enabled.")
    if not 0.95 <= config.get("topP", 1) <= 1:
        raise _invalid("`top_p` must be between 0.95 and 1 when thinking is enabled.")
    choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
    if "any" in choice or "tool" in choice:
        raise _invalid("Thinking may not be enabled when tool_choice forces tool use.")
    _check_last_tool_turn(body["messages"])


def _check_last_tool_turn(messages: list[Json]) -> None:
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistant:
        return
    i = assistant[-1]
    content = messages[i]["content"]
    if any("toolUse" in block for block in content) and "reasoningContent" not in content[0]:
        raise _invalid(
            f"messages.{i}.content.0.type: a final assistant turn that uses a tool must start"
            " with a thinking or redacted_thinking block while thinking is enabled; send back"
            " the thinking blocks of previous turns."
        )


def _check_signatures(messages: list[Json]) -> None:
    for i, message in enumerate(messages):
        for j, block in enumerate(message["content"]):
            content = block.get("reasoningContent")
            if content is None:
                continue
            if message["role"] != "assistant":
                raise _invalid(f"messages.{i}.content.{j}: reasoning in a user turn.")
            said = content.get("reasoningText")
            if said is not None:
                if said.get("signature") != sign(str(said.get("text"))):
                    raise _invalid(
                        f"messages.{i}.content.{j}: Invalid `signature` in thinking block."
                    )
            elif not _issued_redacted(content.get("redactedContent")):
                raise _invalid(f"messages.{i}.content.{j}: Invalid redacted thinking data.")


def _issued_redacted(data: Any) -> bool:
    try:
        raw = base64.b64decode(str(data), validate=True)
    except ValueError:
        return False
    return raw.startswith(b"redacted:")


def reasoning_blocks(body: Json, last_text: str) -> list[Json]:
    """The reasoning blocks an answer starts with (none without thinking)."""
    if thinking_of(body) is None:
        return []
    text = f"Thinking about: {last_text}".strip()
    blocks: list[Json] = [
        {"reasoningContent": {"reasoningText": {"text": text, "signature": sign(text)}}}
    ]
    if REDACTED in last_text:
        blocks.append({"reasoningContent": {"redactedContent": redacted_data(text)}})
    return blocks


def reasoning_deltas(content: Json) -> list[Json]:
    """A reasoning block as ConverseStream's deltas: text in pieces, then the signature."""
    if "redactedContent" in content:
        return [{"reasoningContent": {"redactedContent": content["redactedContent"]}}]
    said = content["reasoningText"]
    text = said["text"]
    pieces = [{"reasoningContent": {"text": text[i : i + 10]}} for i in range(0, len(text), 10)]
    return [*pieces, {"reasoningContent": {"signature": said["signature"]}}]


def reasoning_tokens(blocks: list[Json]) -> int:
    """Thinking is billed as output: its text's tokens."""
    return sum(
        count_tokens(block["reasoningContent"].get("reasoningText", {}).get("text", ""))
        for block in blocks
        if "reasoningContent" in block
    )


# --- cache points --------------------------------------------------------------------------------


def _lists(body: Json) -> Iterator[tuple[str, list[Any]]]:
    """Every list a cache point may be in, in the order the prompt is cached: tools, system,
    messages."""
    yield "toolConfig.tools", (body.get("toolConfig") or {}).get("tools") or []
    yield "system", body.get("system") or []
    for i, message in enumerate(body["messages"]):
        yield f"messages.{i}.content", message["content"]


def check_cache_points(body: Json) -> None:
    count = 0
    for where, blocks in _lists(body):
        for j, block in enumerate(blocks):
            if "cachePoint" not in block:
                continue
            count += 1
            if block != {"cachePoint": {"type": "default"}}:
                raise _invalid(f"{where}.{j}.cachePoint: type must be 'default'.")
            if j == 0:
                raise _invalid(f"{where}.{j}: a cachePoint cannot be the first block.")
    if count > MAX_CACHE_POINTS:
        raise _invalid(
            f"The request has {count} cache points; at most {MAX_CACHE_POINTS} are allowed."
        )


def _text_of(block: Json) -> str:
    if "text" in block:
        return str(block["text"])
    result = block.get("toolResult")
    if result is not None:
        return " ".join(str(c.get("text", "")) for c in result["content"])
    return ""


class PromptCache:
    """The prefixes this fake has cached, by digest, with their token counts."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def usage(self, body: Json) -> tuple[int, int]:
        """(tokens read from the cache, tokens written to it) for this request."""
        digest = hashlib.sha256()
        texts: list[str] = []
        points: list[tuple[str, int]] = []  # (prefix digest, prefix tokens) at each cache point
        for _, blocks in _lists(body):
            for block in blocks:
                if "cachePoint" in block:
                    points.append((digest.copy().hexdigest(), count_tokens(" ".join(texts))))
                    continue
                digest.update(orjson.dumps(block, option=orjson.OPT_SORT_KEYS))
                texts.append(_text_of(block))
        read = max((tokens for key, tokens in points if key in self._seen), default=0)
        longest = max((tokens for _, tokens in points), default=0)
        self._seen.update(key for key, _ in points)
        return read, longest - read
