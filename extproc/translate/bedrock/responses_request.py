"""The Converse request for a Responses API request (``POST /v1/responses``), built from the
chat translation's parts (:mod:`.request`, :mod:`.tools`, :mod:`.reasoning`); every error names
the Responses API's own parameter.

Reasoning items travel both ways as Claude needs them for a tool-use round trip: the reasoning
text as ``reasoning_text`` content, Claude's signature as ``encrypted_content``; a redacted block
(no text) as ``encrypted_content`` ``"redacted:" + data`` (signatures are base64: no colon).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from extproc.bedrockmodels import Family as ModelFamily
from extproc.errors import GatewayError, bad_request, unsupported_parameter
from extproc.translate.bedrock.reasoning import Reasoning, ReasoningBlock, ReasoningText, reasoning
from extproc.translate.bedrock.request import (
    ContentBlock,
    ConverseRequest,
    ImageBlock,
    Message,
    Plan,
    SystemBlock,
    TextBlock,
    add_turn,
    assemble,
    image_block,
    sampling,
    stream_flag,
    text_blocks,
    tool_result_block,
    tool_use_block,
    tools_for,
)
from extproc.translate.bedrock.responses_fields import RESPONSES_RULES
from extproc.translate.bedrock.tiers import openai_tier, service_tier
from extproc.translate.bedrock.tools import (
    OBJECT_TOOL,
    PROVIDER,
    ToolSpec,
    function_spec,
    schema_tool,
)
from extproc.translate.bedrock.tools import tool_choice_mode as chat_tool_choice
from extproc.translate.chat_fields import check_fields, positive_int, string
from extproc.translate.chat_input import arguments

Json = dict[str, Any]

REDACTED = "redacted:"
# Tools that run on OpenAI's side; named in the error so the client knows why.
_BUILT_IN = ("web_search", "file_search", "code_interpreter", "computer", "image_generation", "mcp")
# The content parts each holder of content takes (a tool's output: text only).
_PARTS = {
    "user": ("input_text", "input_image"),
    "system": ("input_text",),
    "developer": ("input_text",),
    "assistant": ("output_text", "refusal", "input_text"),
    "tool output": ("input_text",),
}
_ROLES = ("user", "system", "developer", "assistant")
_TEXT_KEYS = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
# reasoning() speaks chat's names; the Responses API's for its errors.
_NAMES = {
    "reasoning_effort": "reasoning.effort",
    "response_format": "text.format",
    "max_completion_tokens": "max_output_tokens",
}
_REASONING_KEYS = {"effort", "summary", "generate_summary"}


def _tools(raw: Any) -> list[ToolSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request("'tools' must be an array.", "tools")
    specs = []
    for j, tool in enumerate(raw):
        param = f"tools[{j}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            built_in = isinstance(kind, str) and kind.startswith(_BUILT_IN)
            why = " runs on OpenAI's side only" if built_in else " is not a function tool"
            raise bad_request(
                f"Tool type {kind!r}{why}: this Bedrock backend takes function tools only.",
                f"{param}.type",
            )
        specs.append(function_spec(tool, param))
    return specs


def _tool_choice(choice: Any, names: list[str]) -> tuple[str, str | None]:
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise bad_request(
                "'tool_choice' must be 'none', 'auto', 'required' or a function tool on this"
                " Bedrock backend.",
                "tool_choice",
            )
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    return chat_tool_choice(choice, names)


def _text_format(doc: Json) -> tuple[Json | None, ToolSpec | None]:
    """``text.format`` and the answer tool it asks for."""
    text = doc.get("text")
    if text is None:
        return None, None
    if not isinstance(text, dict):
        raise bad_request("'text' must be an object.", "text")
    extra = sorted(set(text) - {"format", "verbosity"})
    if extra:
        raise bad_request(f"Unrecognized argument 'text.{extra[0]}'.", f"text.{extra[0]}")
    if text.get("verbosity") not in (None, "medium"):
        raise unsupported_parameter(
            "text.verbosity", "no equivalent in Converse; `medium` is accepted."
        )
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None, None
    if kind == "json_object":
        return fmt, OBJECT_TOOL
    if kind != "json_schema" or not isinstance(fmt, dict):
        raise bad_request(
            "'text.format.type' must be 'text', 'json_object' or 'json_schema'.", "text.format.type"
        )
    string(fmt.get("name"), "text.format.name")
    return fmt, schema_tool(fmt, "text.format")


def _effort(doc: Json) -> Any:
    raw = doc.get("reasoning")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad_request("'reasoning' must be an object.", "reasoning")
    extra = sorted(set(raw) - _REASONING_KEYS)
    if extra:
        raise unsupported_parameter(f"reasoning.{extra[0]}", "not supported on this backend.")
    return raw.get("effort")


def _reasoning(
    doc: Json, text_format: Json | None, model: str, limit: int | None, declared: Any
) -> Reasoning:
    """Chat's reasoning controls, asked through a chat-shaped view of the request."""
    view = {
        "reasoning_effort": _effort(doc),
        "temperature": doc.get("temperature"),
        "top_p": doc.get("top_p"),
        "tool_choice": doc.get("tool_choice"),
        "response_format": text_format,
        "max_completion_tokens": doc.get("max_output_tokens"),
    }
    try:
        return reasoning(view, model, limit, "max_completion_tokens", declared)
    except GatewayError as exc:
        name = _NAMES.get(exc.param or "")
        if name is None or exc.param is None:
            raise
        message = exc.message.replace(exc.param, name)
        raise dataclasses.replace(exc, param=name, message=message) from None


def _parts(content: Any, holder: str, param: str) -> list[TextBlock | ImageBlock]:
    if isinstance(content, str):
        return list(text_blocks(content))
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of content parts.", param)
    blocks: list[TextBlock | ImageBlock] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PARTS[holder]:
            raise bad_request(
                f"Content part type {kind!r} is not supported in {holder} content by this"
                " Bedrock backend.",
                f"{where}.type",
            )
        if kind == "input_image":
            if part.get("image_url") is None and part.get("file_id") is not None:
                raise bad_request(
                    "Files are not stored on this Bedrock backend: send the image as a data:"
                    " URI in 'image_url'.",
                    f"{where}.file_id",
                )
            url = part.get("image_url")
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                raise bad_request(  # fetch_image_urls downloads chat completions' images only
                    "Image URLs are not fetched for the Responses API on Bedrock: send the image"
                    " inline as a data: URI (data:image/png;base64,...).",
                    f"{where}.image_url",
                )
            blocks.append(image_block(url, f"{where}.image_url"))
        else:
            key = _TEXT_KEYS[kind]
            blocks += text_blocks(string(part.get(key), f"{where}.{key}", empty=True))
    return blocks


def _output_texts(output: Any, param: str) -> list[str]:
    if isinstance(output, str):
        return [output] if output.strip() else []
    return _texts(_parts(output, "tool output", param))


def _texts(blocks: list[Any]) -> list[str]:
    """The texts of text blocks (content of roles whose parts are text only)."""
    return [block["text"] for block in blocks if "text" in block]


def _reasoning_block(item: Json, param: str) -> ReasoningBlock | None:
    sealed = item.get("encrypted_content")
    if sealed is not None:
        sealed = string(sealed, f"{param}.encrypted_content")
        if sealed.startswith(REDACTED):
            return {"reasoningContent": {"redactedContent": sealed.removeprefix(REDACTED)}}
    texts: list[str] = []
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key) or []
        if not isinstance(parts, list):
            raise bad_request(f"'{param}.{key}' must be an array.", f"{param}.{key}")
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or part.get("type") != kind:
                raise bad_request(f"'{param}.{key}[{j}].type' must be '{kind}'.", f"{param}.{key}")
            texts.append(string(part.get("text"), f"{param}.{key}[{j}].text", empty=True))
        if texts:
            break  # the reasoning itself wins over a summary of it
    if not texts and sealed is None:
        return None
    said: ReasoningText = {"text": "".join(texts)}
    if sealed is not None:
        said["signature"] = sealed
    return {"reasoningContent": {"reasoningText": said}}


def _item(item: Any, param: str, textify: bool) -> tuple[str, list[ContentBlock]]:
    """(role, blocks) of one input item; role ``system`` for system and developer text."""
    if not isinstance(item, dict):
        raise bad_request(f"'{param}' must be an object.", param)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise bad_request(f"Unsupported role {role!r}.", f"{param}.role")
        blocks: list[ContentBlock] = [*_parts(item.get("content"), role, f"{param}.content")]
        return ("system" if role == "developer" else role), blocks
    if kind == "function_call":
        call_id = string(item.get("call_id"), f"{param}.call_id")
        name = string(item.get("name"), f"{param}.name")
        given = arguments(item.get("arguments"), f"{param}.arguments")
        return "assistant", [tool_use_block(call_id, name, given, textify)]
    if kind == "function_call_output":
        call_id = string(item.get("call_id"), f"{param}.call_id")
        texts = _output_texts(item.get("output"), f"{param}.output")
        return "user", [tool_result_block(call_id, texts, textify)]
    if kind == "reasoning":
        block = _reasoning_block(item, param)
        return "assistant", [block] if block is not None else []
    if kind == "item_reference":
        raise bad_request(
            "Bedrock keeps no responses, so items cannot be referenced: send them whole.",
            f"{param}.type",
        )
    raise bad_request(
        f"Input item type {kind!r} is not supported by this Bedrock backend.", f"{param}.type"
    )


def _input(doc: Json, textify: bool) -> tuple[list[SystemBlock], list[Message]]:
    system: list[SystemBlock] = []
    instructions = doc.get("instructions")
    if instructions is not None:
        system += text_blocks(string(instructions, "instructions", empty=True))
    raw = doc.get("input")
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise bad_request("'input' must be a string or a non-empty array of items.", "input")
    turns: list[Message] = []
    for i, item in enumerate(raw):
        role, blocks = _item(item, f"input[{i}]", textify)
        if role == "system":
            system += [{"text": text} for text in _texts(blocks)]
        else:
            add_turn(turns, "assistant" if role == "assistant" else "user", blocks)
    if not turns:
        raise bad_request(
            "'input' must hold at least one user, assistant or tool item with content: Bedrock"
            " does not answer instructions alone.",
            "input",
        )
    return system, turns


def converse_responses(
    doc: Json,
    model: str = "",
    cache_points: tuple[str, ...] = (),
    declared: ModelFamily | None = None,
) -> tuple[ConverseRequest, Plan]:
    """The Converse request body for a Responses request to ``model`` (a Bedrock model id),
    and what the answer needs; ``cache_points`` and ``declared`` as for chat."""
    check_fields(doc, RESPONSES_RULES, PROVIDER)
    stream = stream_flag(doc)
    specs = _tools(doc.get("tools"))
    choice = _tool_choice(doc.get("tool_choice"), [spec["name"] for spec in specs])
    text_format, answer = _text_format(doc)
    tools = tools_for(specs, set(), choice, answer, "text.format.name")
    system, messages = _input(doc, textify=not tools.specs)
    limit = positive_int(doc, "max_output_tokens")
    thought = _reasoning(doc, text_format, model, limit, declared)
    body = assemble(system, messages, sampling(doc, limit), thought, tools, cache_points)
    tier = service_tier(doc)
    if tier is not None:
        body["serviceTier"] = tier
    plan = Plan(
        service_tier=openai_tier(tier),
        stream=stream,
        answer_tool=tools.answer["name"] if tools.answer is not None else None,
        single_call=doc.get("parallel_tool_calls") is False,
    )
    return body, plan
