"""The checks Anthropic's Messages API makes of a request body, as the fake Anthropic runs them:
each failure is the 400 ``invalid_request_error`` Anthropic answers, so a translator bug gets
what it would get from the real API."""

from __future__ import annotations

from typing import Any

from tests.fakes.server import Reject

Json = dict[str, Any]

API_VERSIONS = ("2023-06-01", "2023-01-01")
MIN_THINKING_BUDGET = 1024
_TOP_LEVEL = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
}
_BLOCKS = {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}


def anthropic_error(status: int, kind: str, message: str) -> Reject:
    """An error as Anthropic sends it."""
    return Reject(
        status,
        {"type": "error", "error": {"type": kind, "message": message}},
        {"request-id": "req_fake"},
    )


def invalid(message: str) -> Reject:
    return anthropic_error(400, "invalid_request_error", message)


def _check_block(block: Any, where: str, role: str) -> None:
    if not isinstance(block, dict) or block.get("type") not in _BLOCKS:
        raise invalid(f"{where}: unknown content block type")
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str) or not text.strip():
            raise invalid(f"{where}: text content blocks must contain non-whitespace text")
    elif kind == "image":
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
            raise invalid(f"{where}.source: unknown image source")
        if source["type"] == "base64" and source.get("media_type") not in (
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/webp",
        ):
            raise invalid(f"{where}.source.media_type: unsupported image type")
        if source["type"] == "url" and not str(source.get("url", "")).startswith("https://"):
            raise invalid(f"{where}.source.url: must be an https URL")
    elif kind == "tool_use":
        if role != "assistant":
            raise invalid(f"{where}: tool_use blocks are only allowed in assistant messages")
        if not isinstance(block.get("id"), str) or not isinstance(block.get("input"), dict):
            raise invalid(f"{where}: tool_use needs an id and an input object")
    elif kind == "tool_result" and role != "user":
        raise invalid(f"{where}: tool_result blocks are only allowed in user messages")
    control = block.get("cache_control")
    if control is not None and control.get("type") != "ephemeral":
        raise invalid(f"{where}.cache_control.type: must be 'ephemeral'")


def _check_messages(messages: Any) -> bool:
    """Whether the history holds tool blocks."""
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: at least one message is required")
    tool_blocks = False
    previous_uses: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise invalid(f"{where}.role: must be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise invalid("messages: first message must use the 'user' role")
        if i and messages[i - 1]["role"] == role:
            raise invalid("messages: roles must alternate between 'user' and 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            if not content:
                raise invalid(f"{where}: messages must have non-empty content")
            previous_uses = set()
            continue
        if not isinstance(content, list) or not content:
            raise invalid(f"{where}: messages must have non-empty content")
        seen_other = False
        uses: set[str] = set()
        for j, block in enumerate(content):
            _check_block(block, f"{where}.content.{j}", role)
            kind = block["type"]
            tool_blocks |= kind in ("tool_use", "tool_result")
            if kind == "tool_use":
                uses.add(block["id"])
            elif kind == "tool_result":
                if seen_other:
                    raise invalid(f"{where}: tool_result blocks must come first in the content")
                if block.get("tool_use_id") not in previous_uses:
                    raise invalid(
                        f"{where}.content.{j}: unexpected `tool_use_id` found in `tool_result`"
                        " blocks: each `tool_result` block must have a corresponding"
                        " `tool_use` block in the previous message."
                    )
            else:
                seen_other = True
        previous_uses = uses
    return tool_blocks


def _check_tools(body: Json, tool_blocks: bool) -> list[Json]:
    tools = body.get("tools")
    if tools is None:
        if tool_blocks:
            raise invalid(
                "Requests which include `tool_use` or `tool_result` blocks must define tools."
            )
        if body.get("tool_choice") is not None:
            raise invalid("tool_choice may only be specified while providing tools.")
        return []
    if not isinstance(tools, list):
        raise invalid("tools: must be a list")
    names = []
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise invalid(f"tools.{j}.name: Field required")
        if not isinstance(tool.get("input_schema"), dict):
            raise invalid(f"tools.{j}.input_schema: Field required")
        names.append(tool["name"])
    if len(set(names)) != len(names):
        raise invalid("tools: Tool names must be unique.")
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in (
            "auto",
            "any",
            "tool",
            "none",
        ):
            raise invalid("tool_choice.type: must be auto, any, tool or none")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise invalid(f"tool_choice.name: tool {choice.get('name')!r} not found in tools")
    return tools


def _check_thinking(body: Json) -> None:
    thinking = body.get("thinking")
    if thinking is None or thinking.get("type") == "disabled":
        return
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
        raise invalid(f"thinking.enabled.budget_tokens: Input should be >= {MIN_THINKING_BUDGET}")
    if budget >= body["max_tokens"]:
        raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        raise invalid("Thinking may not be enabled when tool_choice forces tool use.")
    if body.get("temperature") not in (None, 1):
        raise invalid("`temperature` may only be set to 1 when thinking is enabled.")


def check_messages_request(body: Json) -> list[Json]:
    """Anthropic's checks of a Messages body; returns its tools."""
    extra = sorted(set(body) - _TOP_LEVEL)
    if extra:
        raise invalid(f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid("model: Field required")
    limit = body.get("max_tokens")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise invalid("max_tokens: Field required")
    system = body.get("system")
    if isinstance(system, list):
        for j, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise invalid(f"system.{j}: only text blocks are allowed")
            _check_block(block, f"system.{j}", "system")
    tools = _check_tools(body, _check_messages(body.get("messages")))
    _check_thinking(body)
    stop = body.get("stop_sequences")
    if stop is not None and not all(isinstance(s, str) and s.strip() for s in stop):
        raise invalid("stop_sequences: each stop sequence must contain non-whitespace")
    return tools
