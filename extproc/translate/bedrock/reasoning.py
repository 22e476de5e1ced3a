"""Reasoning on Bedrock: ``reasoning_effort`` and Anthropic's ``thinking`` as each model family's
own control in ``additionalModelRequestFields``, the constraints Claude's thinking puts on the
other fields, and reasoning blocks both ways (``thinking_blocks`` on assistant messages).

The families and what their documentation says they take:

- Anthropic Claude 3.7 Sonnet and Claude 4 or later: ``thinking: {type: enabled, budget_tokens}``
  (at least 1024, below ``maxTokens``); with thinking on, no temperature but 1, ``top_p`` only in
  [0.95, 1], no forced tool use.
- Amazon Nova 2: ``reasoningConfig: {type: enabled, maxReasoningEffort: low|medium|high}``; with
  ``high``, no ``temperature``, ``top_p`` or ``maxTokens``.
- OpenAI gpt-oss: ``reasoning_effort: low|medium|high``.
- DeepSeek R1 always reasons and takes no control.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from extproc.bedrockmodels import Family as ModelFamily
from extproc.bedrockmodels import named_family
from extproc.errors import bad_request, unsupported_parameter

Json = dict[str, Any]
Family = Literal["claude", "nova2", "gpt-oss", "deepseek-r1", "other"]

# Claude's thinking budget per effort (Anthropic's minimum budget is 1024 tokens).
CLAUDE_BUDGETS = {"minimal": 1024, "low": 4096, "medium": 8192, "high": 16384}
# Room for the answer above the budget when the client sets no token limit.
ANSWER_ROOM = 4096
MIN_BUDGET = 1024
EFFORTS = ("none", "minimal", "low", "medium", "high")
_LEVELS = ("low", "medium", "high")  # what Nova 2 and gpt-oss take

_THINKING_CLAUDE = re.compile(r"anthropic\.claude-(3-7-sonnet|(opus|sonnet|haiku)-[4-9])")
_FAMILIES: tuple[tuple[re.Pattern[str], Family], ...] = (
    (re.compile(r"anthropic\.claude-"), "claude"),
    (re.compile(r"amazon\.nova-2-"), "nova2"),
    (re.compile(r"openai\.gpt-oss-"), "gpt-oss"),
    (re.compile(r"deepseek\.r1"), "deepseek-r1"),
)


# A model id that names no model (an ARN) reasons as its declared family (extproc.bedrockmodels)
# does when that family is one reasoning control: Bedrock refuses what the model cannot do.
_DECLARED: dict[str, Family] = {"claude": "claude"}


def family(model: str, declared: ModelFamily | None = None) -> Family:
    """The family of a Bedrock model id or inference profile (``us.anthropic...``); for an id
    that names none, the one its model entry declares."""
    named = next((name for pattern, name in _FAMILIES if pattern.search(model)), None)
    if named is None and declared is not None and named_family(model) is None:
        return _DECLARED.get(declared, "other")
    return named or "other"


# --- the Converse shapes of reasoning blocks ----------------------------------------------------


class ReasoningText(TypedDict):
    text: str
    signature: NotRequired[str]


class ReasoningContent(TypedDict, total=False):
    """One member: ``reasoningText`` or ``redactedContent`` (base64, as JSON carries bytes)."""

    reasoningText: ReasoningText
    redactedContent: str


class ReasoningBlock(TypedDict):
    reasoningContent: ReasoningContent


# --- the request ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reasoning:
    """What a request's reasoning fields add to its Converse body."""

    fields: Json  # additionalModelRequestFields members
    max_tokens: int | None = None  # maxTokens to set (the client set none)
    thinking: bool = False  # Claude thinks: its constraints were checked


def _effort(doc: Json) -> str | None:
    effort = doc.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        raise bad_request(
            f"'reasoning_effort' must be one of {', '.join(EFFORTS)}.", "reasoning_effort"
        )
    return effort


def _cannot(model: str, why: str) -> Exception:
    return unsupported_parameter("reasoning_effort", f"model {model!r} {why}")


def _thinking_object(raw: Any) -> Json | None:
    """Anthropic's ``thinking``, checked: enabled (with a budget), adaptive or disabled."""
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in ("enabled", "adaptive", "disabled"):
        raise bad_request(
            "'thinking.type' must be 'enabled', 'adaptive' or 'disabled'.", "thinking.type"
        )
    allowed = {"type", "budget_tokens"} if kind == "enabled" else {"type"}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise bad_request(f"Unrecognized argument 'thinking.{extra[0]}'.", f"thinking.{extra[0]}")
    if kind == "enabled":
        budget = raw.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < MIN_BUDGET:
            raise bad_request(
                f"'thinking.budget_tokens' must be an integer of at least {MIN_BUDGET}.",
                "thinking.budget_tokens",
            )
    return dict(raw)


def reasoning(
    doc: Json, model: str, limit: int | None, limit_param: str, declared: ModelFamily | None = None
) -> Reasoning:
    """The reasoning controls of ``doc`` for ``model`` (``declared``: its entry's family);
    ``limit``: the client's token limit, given by ``limit_param``. Raises the 400 of a
    combination the model refuses."""
    effort = _effort(doc)
    thinking = _thinking_object(doc.get("thinking"))
    kind = family(model, declared)
    if thinking is not None:
        if kind != "claude":
            raise unsupported_parameter(
                "thinking", f"Anthropic's thinking is for Claude models only, not {model!r}."
            )
        if effort not in (None, "none"):
            raise bad_request(
                "Give 'reasoning_effort' or 'thinking', not both.", "reasoning_effort"
            )
    if kind == "claude":
        return _claude(doc, model, effort, thinking, limit, limit_param)
    if effort in (None, "none"):
        if kind == "deepseek-r1" and effort == "none":
            raise _cannot(model, "always reasons: its reasoning cannot be turned off.")
        return Reasoning({})
    if kind == "deepseek-r1":
        raise _cannot(model, "always reasons and takes no reasoning effort.")
    if kind == "other":
        raise _cannot(model, "takes no reasoning control on Bedrock; `none` is accepted.")
    if effort not in _LEVELS:
        raise _cannot(model, f"takes reasoning_effort {', '.join(_LEVELS)} (or none).")
    if kind == "gpt-oss":
        return Reasoning({"reasoning_effort": effort})
    if effort == "high":
        # Nova 2 documents that high effort sets these itself.
        for field in ("temperature", "top_p", "max_completion_tokens", "max_tokens"):
            if doc.get(field) is not None:
                raise unsupported_parameter(
                    field, f"Amazon Nova 2 takes no '{field}' with reasoning_effort 'high'."
                )
    return Reasoning({"reasoningConfig": {"type": "enabled", "maxReasoningEffort": effort}})


def _claude(
    doc: Json,
    model: str,
    effort: str | None,
    thinking: Json | None,
    limit: int | None,
    limit_param: str,
) -> Reasoning:
    if thinking is None:
        if effort in (None, "none"):
            return Reasoning({})
        # A Claude ARN names no version: Bedrock says whether it thinks.
        if named_family(model) is not None and not _THINKING_CLAUDE.search(model):
            raise _cannot(model, "does not think; `none` is accepted.")
        thinking = {"type": "enabled", "budget_tokens": CLAUDE_BUDGETS[effort]}
    if thinking["type"] == "disabled":
        return Reasoning({"thinking": thinking})
    _check_claude_constraints(doc)
    budget = thinking.get("budget_tokens")
    max_tokens = None
    if budget is not None:
        if limit is None:
            max_tokens = budget + ANSWER_ROOM
        elif limit <= budget:
            raise bad_request(
                f"'{limit_param}' ({limit}) must be greater than the thinking budget ({budget}"
                " tokens): Claude's thinking counts against it.",
                limit_param,
            )
    return Reasoning({"thinking": thinking}, max_tokens, thinking=True)


def _check_claude_constraints(doc: Json) -> None:
    """Anthropic: thinking is incompatible with temperature changes, top_p under 0.95 and
    forced tool use (which response_format's answer tool is)."""
    temperature = doc.get("temperature")
    if temperature is not None and temperature != 1:
        raise unsupported_parameter("temperature", "Claude takes only 1 while it thinks.")
    top_p = doc.get("top_p")
    if top_p is not None and not 0.95 <= top_p <= 1:
        raise unsupported_parameter("top_p", "Claude takes only 0.95 to 1 while it thinks.")
    choice = doc.get("tool_choice")
    if choice == "required" or isinstance(choice, dict):
        raise unsupported_parameter(
            "tool_choice", "Claude cannot be forced to a tool while it thinks."
        )
    response_format = doc.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") != "text":
        raise unsupported_parameter(
            "response_format",
            "on Bedrock a schema is a forced tool, which Claude refuses while it thinks.",
        )


# --- thinking blocks, both ways -----------------------------------------------------------------


def request_blocks(raw: Any, param: str) -> list[ReasoningBlock]:
    """An assistant message's ``thinking_blocks`` as Converse reasoning blocks, unchanged."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request(f"'{param}' must be an array.", param)
    blocks: list[ReasoningBlock] = []
    for j, block in enumerate(raw):
        where = f"{param}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            text = block.get("thinking")
            signature = block.get("signature")
            if not isinstance(text, str):
                raise bad_request(f"'{where}.thinking' must be a string.", f"{where}.thinking")
            said: ReasoningText = {"text": text}
            if signature is not None:
                if not isinstance(signature, str):
                    raise bad_request(
                        f"'{where}.signature' must be a string.", f"{where}.signature"
                    )
                said["signature"] = signature
            blocks.append({"reasoningContent": {"reasoningText": said}})
        elif kind == "redacted_thinking":
            data = block.get("data")
            if not isinstance(data, str) or not data:
                raise bad_request(f"'{where}.data' must be a non-empty string.", f"{where}.data")
            blocks.append({"reasoningContent": {"redactedContent": data}})
        else:
            raise bad_request(
                f"'{where}.type' must be 'thinking' or 'redacted_thinking'.", f"{where}.type"
            )
    return blocks


def _openai_block(text: str, signature: str | None, redacted: str | None) -> Json:
    if redacted is not None:
        return {"type": "redacted_thinking", "data": redacted}
    block: Json = {"type": "thinking", "thinking": text}
    if signature is not None:
        block["signature"] = signature
    return block


def thinking_block(content: Any) -> Json | None:
    """A Converse ``reasoningContent`` as an OpenAI-side thinking block, or None."""
    if not isinstance(content, dict):
        return None
    redacted = content.get("redactedContent")
    if isinstance(redacted, str):
        return _openai_block("", None, redacted)
    said = content.get("reasoningText")
    if not isinstance(said, dict) or not isinstance(said.get("text"), str):
        return None
    signature = said.get("signature")
    return _openai_block(said["text"], signature if isinstance(signature, str) else None, None)


class StreamedThinking:
    """The reasoning block a stream is sending, put together from its deltas: it is sent as
    one thinking block when the block stops (its signature comes last)."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._signature: str | None = None
        self._redacted: str | None = None

    def add(self, delta: Json) -> None:
        """One ``delta.reasoningContent``: ``text``, ``signature`` or ``redactedContent``."""
        text = delta.get("text")
        if isinstance(text, str):
            self._text.append(text)
        signature = delta.get("signature")
        if isinstance(signature, str):
            self._signature = (self._signature or "") + signature
        redacted = delta.get("redactedContent")
        if isinstance(redacted, str):
            self._redacted = (self._redacted or "") + redacted

    def block(self) -> Json:
        """The block as :func:`thinking_block` gives it for a whole answer."""
        return _openai_block("".join(self._text), self._signature, self._redacted)
