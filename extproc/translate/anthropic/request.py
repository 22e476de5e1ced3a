"""The Messages request for an OpenAI chat request, and the :class:`Plan` the response needs.

Anthropic's blocks are written as plain JSON objects (``{"type": ...}``): the client's schemas,
tool inputs and ``cache_control`` objects travel inside them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from extproc.errors import bad_request
from extproc.translate.anthropic.fields import CHAT_RULES, MIN_THINKING_BUDGET, THINKING_BUDGETS
from extproc.translate.chat_fields import check_fields, number, string
from extproc.translate.chat_input import (
    FunctionTool,
    ToolMode,
    data_image,
    output_limit,
    stop_sequences,
    stream_flags,
    texts,
    tool_calls,
    tools_and_answer,
)

Json = dict[str, Any]
PROVIDER = "Anthropic"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the response side must know about the request."""

    stream: bool = False
    include_usage: bool = False
    answer_tool: str | None = None  # the tool whose input is the answer (response_format)


def _cache_control(part: Json, param: str) -> Json:
    """A part's ``cache_control``, passed on as Anthropic's own (``{"type": "ephemeral"}``)."""
    control = part.get("cache_control")
    if control is None:
        return {}
    if not isinstance(control, dict) or not isinstance(control.get("type"), str):
        raise bad_request(
            f"'{param}.cache_control' must be an object with a 'type'.", f"{param}.cache_control"
        )
    return {"cache_control": control}


def _text_block(text: str, extra: Json | None = None) -> list[Json]:
    # Anthropic rejects blank text blocks; whitespace carries nothing for the model anyway.
    return [{"type": "text", "text": text, **(extra or {})}] if text.strip() else []


def _text_parts(content: Any, param: str, kinds: tuple[str, ...] = ("text",)) -> list[Json]:
    """Text blocks of a content of text-like parts, each part's ``cache_control`` kept."""
    said = texts(content, param, PROVIDER, kinds)
    if not isinstance(content, list):
        return [block for text in said for block in _text_block(text)]
    blocks = []
    for j, (part, text) in enumerate(zip(content, said, strict=True)):
        blocks += _text_block(text, _cache_control(part, f"{param}[{j}]"))
    return blocks


def _image_block(image: Any, param: str) -> Json:
    url = image.get("url") if isinstance(image, dict) else None
    if isinstance(url, str) and url.startswith("https://"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    image_format, data = data_image(url, f"{param}.url")
    source = {"type": "base64", "media_type": f"image/{image_format}", "data": data}
    return {"type": "image", "source": source}


def _user_blocks(content: Any, param: str) -> list[Json]:
    if isinstance(content, str):
        return _text_block(content)
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of content parts.", param)
    blocks: list[Json] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = string(part.get("text"), f"{where}.text", empty=True)
            blocks += _text_block(text, _cache_control(part, where))
        elif kind == "image_url":
            image = _image_block(part.get("image_url"), f"{where}.image_url")
            blocks.append({**image, **_cache_control(part, where)})
        else:
            raise bad_request(
                f"Content part type {kind!r} is not supported by this Anthropic backend.",
                f"{where}.type",
            )
    return blocks


def _assistant_blocks(msg: Json, param: str) -> list[Json]:
    calls = tool_calls(msg, param, PROVIDER)
    blocks = _text_parts(msg.get("content"), f"{param}.content", ("text", "refusal"))
    for call in calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        )
    return blocks


def _tool_result_block(msg: Json, param: str) -> Json:
    call_id = string(msg.get("tool_call_id"), f"{param}.tool_call_id")
    block: Json = {"type": "tool_result", "tool_use_id": call_id}
    content = _text_parts(msg.get("content"), f"{param}.content")
    if content:
        block["content"] = content
    return block


def _add(turns: list[Json], role: str, blocks: list[Json]) -> None:
    """Append blocks to the conversation: Anthropic requires strict user/assistant
    alternation (same-role turns merged) and a user turn's tool results before its text."""
    if not (turns and turns[-1]["role"] == role):
        turns.append({"role": role, "content": []})
    content: list[Json] = turns[-1]["content"]
    for block in blocks:
        if block["type"] == "tool_result":
            first_other = next(
                (i for i, b in enumerate(content) if b["type"] != "tool_result"), len(content)
            )
            content.insert(first_other, block)
        else:
            content.append(block)


def _messages(raw: Any) -> tuple[list[Json], list[Json]]:
    """(system blocks, alternating turns)."""
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty array.", "messages")
    system: list[Json] = []
    turns: list[Json] = []
    for i, msg in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise bad_request(f"'{param}' must be an object.", param)
        role = msg.get("role")
        if role in ("system", "developer"):
            system += _text_parts(msg.get("content"), f"{param}.content")
            continue
        if role == "user":
            blocks = _user_blocks(msg.get("content"), f"{param}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(msg, param)
        elif role == "tool":
            blocks = [_tool_result_block(msg, param)]
        else:
            raise bad_request(f"Unsupported role {role!r}.", f"{param}.role")
        if blocks:
            _add(turns, "assistant" if role == "assistant" else "user", blocks)
    if not turns:
        # Anthropic refuses an empty `messages`: say which field, before a provider call.
        raise bad_request(
            "'messages' must contain at least one user, assistant or tool message with"
            " content: Anthropic does not answer system instructions alone.",
            "messages",
        )
    return system, turns


def _tool(tool: FunctionTool, raw: Any, param: str) -> Json:
    out: Json = {"name": tool.name, "input_schema": tool.schema}
    if tool.description is not None:
        out["description"] = tool.description
    if isinstance(raw, dict):
        function = raw.get("function")
        out |= _cache_control(raw, param) or (
            _cache_control(function, f"{param}.function") if isinstance(function, dict) else {}
        )
    return out


def _tool_choice(mode: ToolMode, named: str | None, answer: str | None, tools: int) -> Json | None:
    if answer is not None:
        # With client tools too, `any` lets the model call one of them or answer through ours.
        return {"type": "any"} if tools > 1 else {"type": "tool", "name": answer}
    if mode == "required":
        return {"type": "any"}
    if mode == "named" and named is not None:
        return {"type": "tool", "name": named}
    if mode in ("auto", "none"):
        return {"type": mode}
    return None


def _thinking(doc: Json, body: Json, client_limit: int | None, default_limit: int) -> None:
    """``reasoning_effort`` as an extended thinking budget, kept below ``max_tokens``."""
    effort = doc.get("reasoning_effort")
    if effort is None or effort == "none":
        return
    if effort not in THINKING_BUDGETS:
        raise bad_request(
            f"'reasoning_effort' must be one of none, {', '.join(THINKING_BUDGETS)}.",
            "reasoning_effort",
        )
    budget = THINKING_BUDGETS[effort]
    if client_limit is None:
        if budget >= body["max_tokens"]:
            body["max_tokens"] = budget + default_limit
    elif client_limit <= MIN_THINKING_BUDGET:
        raise bad_request(
            f"'reasoning_effort' needs a token limit over {MIN_THINKING_BUDGET} on Anthropic"
            f" (thinking takes at least {MIN_THINKING_BUDGET} tokens of it).",
            "max_completion_tokens" if doc.get("max_completion_tokens") else "max_tokens",
        )
    else:
        budget = min(budget, client_limit - 1)
    choice = body.get("tool_choice", {}).get("type")
    if choice in ("any", "tool"):
        raise bad_request(
            "Anthropic does not allow a forced tool call (tool_choice 'required' or named, or"
            " response_format) with thinking ('reasoning_effort').",
            "reasoning_effort",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise bad_request(
            "Anthropic allows only temperature 1 with thinking ('reasoning_effort').",
            "temperature",
        )
    body["thinking"] = {"type": "enabled", "budget_tokens": budget}


def messages_request(doc: Json, model: str, default_limit: int) -> tuple[Json, Plan]:
    """The Messages request body for an OpenAI chat request, and what the response needs.
    ``default_limit``: ``max_tokens`` when the client sets no limit."""
    check_fields(doc, CHAT_RULES, PROVIDER)
    stream, include_usage = stream_flags(doc)
    tools, mode, named, answer = tools_and_answer(doc, PROVIDER, withhold_on_none=False)
    system, turns = _messages(doc.get("messages"))
    limit = output_limit(doc)
    body: Json = {"model": model, "max_tokens": limit or default_limit, "messages": turns}
    if system:
        body["system"] = system
    for key in ("temperature", "top_p"):
        value = number(doc, key)
        if value is not None:
            body[key] = value
    stop = stop_sequences(doc)
    if stop:
        body["stop_sequences"] = stop
    raw_tools = doc.get("tools") or []
    sent = [_tool(tool, raw_tools[j], f"tools[{j}]") for j, tool in enumerate(tools)]
    if answer is not None:
        sent.append(_tool(answer, None, "response_format"))
    if sent:
        body["tools"] = sent
    choice = _tool_choice(mode, named, answer.name if answer else None, len(sent))
    if doc.get("parallel_tool_calls") is False and sent and choice is None:
        choice = {"type": "auto"}
    if choice is not None and sent:
        if doc.get("parallel_tool_calls") is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    who = "user" if doc.get("user") else "safety_identifier"
    if doc.get(who) is not None:
        body["metadata"] = {"user_id": string(doc[who], who)}
    _thinking(doc, body, limit, default_limit)
    if stream:
        body["stream"] = True
    plan = Plan(stream, include_usage, answer.name if answer is not None else None)
    return body, plan
