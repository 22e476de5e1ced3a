"""The Converse request for an OpenAI chat request, and the :class:`Plan` the response needs.

Converse's request shapes are typed here (:class:`ConverseRequest` and its parts; the tools' in
:mod:`.tools`, reasoning blocks in :mod:`.reasoning`, cache points in :mod:`.caching`) as far as
the gateway writes them; a client's schemas and tool inputs stay plain JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from extproc.bedrockmodels import Family as ModelFamily
from extproc.errors import bad_request, unsupported_parameter
from extproc.translate import chat_input
from extproc.translate.bedrock.caching import (
    CachePointBlock,
    after,
    cache_point,
    check_count,
    ends_with_point,
    marked,
)
from extproc.translate.bedrock.documents import DocumentBlock, document_block, number_repeated_names
from extproc.translate.bedrock.fields import CHAT_RULES
from extproc.translate.bedrock.guardrails import GuardrailConfig
from extproc.translate.bedrock.reasoning import (
    Reasoning,
    ReasoningBlock,
    reasoning,
    request_blocks,
)
from extproc.translate.bedrock.tiers import ServiceTier, openai_tier, service_tier
from extproc.translate.bedrock.tools import (
    PROVIDER,
    ToolChoice,
    ToolConfig,
    ToolSpec,
    answer_tool,
    tool_choice_mode,
    tool_list,
    tool_specs,
)
from extproc.translate.chat_fields import check_fields, number, positive_int, string

Json = dict[str, Any]
Role = Literal["user", "assistant"]


# --- the shapes of a Converse request ------------------------------------------------------


class TextBlock(TypedDict):
    text: str


class ImageSource(TypedDict):
    bytes: str  # base64, as the client's data: URI carries it


class Image(TypedDict):
    format: str
    source: ImageSource


class ImageBlock(TypedDict):
    image: Image


class ToolUse(TypedDict):
    toolUseId: str
    name: str
    input: Json


class ToolUseBlock(TypedDict):
    toolUse: ToolUse


class ToolResult(TypedDict):
    toolUseId: str
    content: list[TextBlock]


class ToolResultBlock(TypedDict):
    toolResult: ToolResult


ContentBlock = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ReasoningBlock
    | CachePointBlock
)
SystemBlock = TextBlock | CachePointBlock


class Message(TypedDict):
    role: Role
    content: list[ContentBlock]


class InferenceConfig(TypedDict, total=False):
    maxTokens: int
    temperature: float
    topP: float
    stopSequences: list[str]


class ConverseRequest(TypedDict):
    messages: list[Message]
    system: NotRequired[list[SystemBlock]]
    inferenceConfig: NotRequired[InferenceConfig]
    toolConfig: NotRequired[ToolConfig]
    additionalModelRequestFields: NotRequired[Json]
    serviceTier: NotRequired[ServiceTier]
    guardrailConfig: NotRequired[GuardrailConfig]


# --- from OpenAI's request -----------------------------------------------------------------


# Converse rejects blank text blocks, and a tool may legitimately return nothing.
_EMPTY_TOOL_RESULT = "(no output)"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the response side must know about the request."""

    stream: bool = False
    include_usage: bool = False
    answer_tool: str | None = None  # the tool whose input is the answer (response_format)
    single_call: bool = False  # parallel_tool_calls: false
    service_tier: str | None = None  # the tier asked for, by OpenAI's name (None: auto, unset)


def text_blocks(text: str) -> list[TextBlock]:
    # Converse rejects blank text blocks; whitespace carries nothing for the model anyway.
    return [{"text": text}] if text.strip() else []


def _texts(
    content: Any, param: str, kinds: tuple[str, ...] = ("text",)
) -> list[tuple[str, str | None]]:
    """The texts of a content made only of text-like parts (system, assistant, tool), each with
    where its part asks for a cache point (None: it does not)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [(content, None)]
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of content parts.", param)
    texts = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds:
            raise bad_request(
                f"Content part type {kind!r} is not supported here by this Bedrock backend.",
                f"{where}.type",
            )
        # {"type": "text", "text": ...} and {"type": "refusal", "refusal": ...}
        text = string(part.get(kind), f"{where}.{kind}", empty=True)
        texts.append((text, where if marked(part, where) else None))
    return texts


def _text_run(content: Any, param: str, blocks: list[Any], kinds: tuple[str, ...]) -> None:
    """Appends the text blocks of ``content`` to ``blocks``, a cache point after each marked
    part."""
    for text, mark in _texts(content, param, kinds):
        blocks += text_blocks(text)
        if mark is not None:
            blocks.append(after(blocks, mark))


def _image_block(image: Any, param: str) -> ImageBlock:
    return image_block(image.get("url") if isinstance(image, dict) else None, f"{param}.url")


def image_block(url: Any, param: str) -> ImageBlock:
    """The image of a data: URI; ``param`` names the URL."""
    if not isinstance(url, str):
        raise bad_request(f"'{param}' must be a string.", param)
    if url.startswith(("http://", "https://")):
        # Chat's image URLs reach here only when the backend does not fetch them
        # (fetch_image_urls, extproc/imagefetch.py).
        raise bad_request(
            "This Bedrock backend does not fetch image URLs (fetch_image_urls is off): send the"
            " image inline as a data: URI (data:image/png;base64,...).",
            param,
        )
    image_format, data = chat_input.data_image(url, param)
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _user_blocks(content: Any, param: str) -> list[ContentBlock]:
    if isinstance(content, str):
        return list(text_blocks(content))
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of content parts.", param)
    blocks: list[ContentBlock] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks += text_blocks(string(part.get("text"), f"{where}.text", empty=True))
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{where}.image_url"))
        elif kind == "file":
            blocks.append(document_block(part.get("file"), f"{where}.file"))
        else:
            raise bad_request(
                f"Content part type {kind!r} is not supported by this Bedrock backend.",
                f"{where}.type",
            )
        if marked(part, where):
            blocks.append(after(blocks, where))
    return blocks


def _assistant_blocks(msg: Json, param: str, textify: bool) -> list[ContentBlock]:
    for legacy in ("function_call", "audio"):
        if msg.get(legacy) is not None:
            raise unsupported_parameter(
                f"{param}.{legacy}", "not supported by this Bedrock backend."
            )
    # Thinking comes first in a turn: Claude refuses a tool-use turn that does not start so.
    blocks: list[ContentBlock] = [
        *request_blocks(msg.get("thinking_blocks"), f"{param}.thinking_blocks")
    ]
    _text_run(msg.get("content"), f"{param}.content", blocks, ("text", "refusal"))
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_request(f"'{param}.tool_calls' must be an array.", f"{param}.tool_calls")
    for j, call in enumerate(calls):
        where = f"{param}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise bad_request(f"'{where}.function' must be an object.", f"{where}.function")
        call_id = string(call.get("id"), f"{where}.id")
        name = string(function.get("name"), f"{where}.function.name")
        given = chat_input.arguments(function.get("arguments"), f"{where}.function.arguments")
        blocks.append(tool_use_block(call_id, name, given, textify))
    return blocks


def tool_use_block(call_id: str, name: str, given: Json, textify: bool) -> ContentBlock:
    """A call of an earlier turn; ``textify``: as text (no toolConfig will be sent)."""
    if textify:
        shown = orjson.dumps(given).decode()
        return {"text": f"[called tool {name} (call {call_id}) with {shown}]"}
    return {"toolUse": {"toolUseId": call_id, "name": name, "input": given}}


def tool_result_block(call_id: str, texts: list[str], textify: bool) -> ContentBlock:
    """A tool's result (its non-blank texts); ``textify`` as in :func:`tool_use_block`."""
    if textify:
        return {"text": f"[result of tool call {call_id}]: {''.join(texts) or _EMPTY_TOOL_RESULT}"}
    content: list[TextBlock] = [{"text": t} for t in texts] or [{"text": _EMPTY_TOOL_RESULT}]
    return {"toolResult": {"toolUseId": call_id, "content": content}}


def _tool_result_blocks(msg: Json, param: str, textify: bool) -> list[ContentBlock]:
    """The result block, and a cache point after it when a part of it is marked."""
    call_id = string(msg.get("tool_call_id"), f"{param}.tool_call_id")
    parts = _texts(msg.get("content"), f"{param}.content")
    block = tool_result_block(call_id, [t for t, _ in parts if t.strip()], textify)
    return [block, cache_point()] if any(mark for _, mark in parts) else [block]


def add_turn(turns: list[Message], role: Role, blocks: list[ContentBlock]) -> None:
    """Appends a turn's blocks; Converse requires strict user/assistant alternation, so a turn
    of the same role as the last is merged into it."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"] += blocks
    else:
        turns.append({"role": role, "content": blocks})


def _messages(raw: Any, textify_tools: bool) -> tuple[list[SystemBlock], list[Message]]:
    """(system blocks, alternating turns). ``textify_tools``: no toolConfig will be sent."""
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty array.", "messages")
    system: list[SystemBlock] = []
    turns: list[Message] = []
    for i, msg in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise bad_request(f"'{param}' must be an object.", param)
        role = msg.get("role")
        if role in ("system", "developer"):
            _text_run(msg.get("content"), f"{param}.content", system, ("text",))
            if marked(msg, param):
                system.append(after(system, param))
            continue
        blocks: list[ContentBlock]
        if role == "user":
            blocks = _user_blocks(msg.get("content"), f"{param}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(msg, param, textify_tools)
        elif role == "tool":
            blocks = _tool_result_blocks(msg, param, textify_tools)
        else:
            raise bad_request(f"Unsupported role {role!r}.", f"{param}.role")
        if marked(msg, param):
            blocks.append(after(blocks, param))
        add_turn(turns, "assistant" if role == "assistant" else "user", blocks)
    number_repeated_names(block for turn in turns for block in turn["content"])
    if not turns:
        # Converse refuses an empty `messages`: say which field, before a provider call.
        raise bad_request(
            "'messages' must contain at least one user, assistant or tool message with"
            " content: Bedrock does not answer system instructions alone.",
            "messages",
        )
    return system, turns


def _inference_config(doc: Json) -> InferenceConfig:
    completion_limit = positive_int(doc, "max_completion_tokens")
    legacy_limit = positive_int(doc, "max_tokens")
    config = sampling(doc, completion_limit if completion_limit is not None else legacy_limit)
    stop = doc.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise bad_request("'stop' must be a string or an array of strings.", "stop")
        if stop:
            config["stopSequences"] = stop
    return config


def sampling(doc: Json, limit: int | None) -> InferenceConfig:
    """The token limit and ``doc``'s ``temperature`` and ``top_p``."""
    config: InferenceConfig = {}
    if limit is not None:
        config["maxTokens"] = limit
    temperature = number(doc, "temperature")
    if temperature is not None:
        config["temperature"] = temperature
    top_p = number(doc, "top_p")
    if top_p is not None:
        config["topP"] = top_p
    return config


@dataclass(frozen=True, slots=True)
class Tools:
    """A request's tools as Converse gets them."""

    specs: list[ToolSpec]  # the client's tools ([] with tool_choice none)
    marked: set[int]  # indexes of the tools marked for a cache point
    mode: str  # of tool_choice_mode
    named: str | None
    answer: ToolSpec | None  # the tool carrying a response schema


def tools_for(
    specs: list[ToolSpec],
    marks: set[int],
    choice: tuple[str, str | None],
    answer: ToolSpec | None,
    answer_param: str,
) -> Tools:
    """The tools to send for ``choice`` (:func:`tool_choice_mode`'s); ``answer_param`` names the
    answer tool's name in the request."""
    mode, named = choice
    if mode == "none":
        specs = []
    if answer is not None and mode in ("required", "named"):
        # A client tool call is demanded: an answer tool would let the model skip it.
        answer = None
    if answer is not None and answer["name"] in (spec["name"] for spec in specs):
        raise bad_request(f"'{answer_param}' {answer['name']!r} is also a tool name.", answer_param)
    return Tools(specs, marks, mode, named, answer)


def assemble(
    system: list[SystemBlock],
    messages: list[Message],
    config: InferenceConfig,
    thought: Reasoning,
    tools: Tools,
    cache_points: tuple[str, ...],
) -> ConverseRequest:
    """The Converse request of a request's parts, translated."""
    body: ConverseRequest = {"messages": messages}
    if system and "system" in cache_points and not ends_with_point(system):
        system.append(cache_point())
    if system:
        body["system"] = system
    if thought.max_tokens is not None:
        config["maxTokens"] = thought.max_tokens
    if config:
        body["inferenceConfig"] = config
    if thought.fields:
        body["additionalModelRequestFields"] = thought.fields
    specs, answer = tools.specs, tools.answer
    tool_choice: ToolChoice | None = None
    if answer is not None:
        # With client tools too, `any` lets the model call one of them or answer through ours.
        tool_choice = {"any": {}} if specs else {"tool": {"name": answer["name"]}}
        specs = [*specs, answer]
    elif tools.mode == "auto":
        tool_choice = {"auto": {}}
    elif tools.mode == "required":
        tool_choice = {"any": {}}
    elif tools.named is not None:  # mode "named"
        tool_choice = {"tool": {"name": tools.named}}
    if specs:
        body["toolConfig"] = {"tools": tool_list(specs, tools.marked, "tools" in cache_points)}
        if tool_choice is not None:
            body["toolConfig"]["toolChoice"] = tool_choice
    check_count(
        system, body.get("toolConfig", {}).get("tools", []), *(m["content"] for m in messages)
    )
    return body


def stream_flag(doc: Json) -> bool:
    stream = doc.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", "stream")
    return bool(stream)


def converse(
    doc: Json,
    model: str = "",
    cache_points: tuple[str, ...] = (),
    declared: ModelFamily | None = None,
) -> tuple[ConverseRequest, Plan]:
    """The Converse request body for an OpenAI chat request to ``model`` (a Bedrock model id),
    and what the response needs; ``cache_points``: where the model entry adds cache points;
    ``declared``: the family the model entry declares (for an id naming none)."""
    check_fields(doc, CHAT_RULES, PROVIDER)
    stream = stream_flag(doc)
    specs = tool_specs(doc.get("tools"))
    marked_tools = {
        j for j, tool in enumerate(doc.get("tools") or []) if marked(tool, f"tools[{j}]")
    }
    choice = tool_choice_mode(doc.get("tool_choice"), [spec["name"] for spec in specs])
    answer = answer_tool(doc.get("response_format"))
    tools = tools_for(specs, marked_tools, choice, answer, "response_format.json_schema.name")
    system, messages = _messages(doc.get("messages"), textify_tools=not tools.specs)
    config = _inference_config(doc)
    limit_param = (
        "max_tokens" if doc.get("max_completion_tokens") is None else "max_completion_tokens"
    )
    thought = reasoning(doc, model, config.get("maxTokens"), limit_param, declared)
    body = assemble(system, messages, config, thought, tools, cache_points)
    tier = service_tier(doc)
    if tier is not None:
        body["serviceTier"] = tier
    options = doc.get("stream_options")
    plan = Plan(
        stream=stream,
        include_usage=stream and isinstance(options, dict) and options.get("include_usage") is True,
        answer_tool=tools.answer["name"] if tools.answer is not None else None,
        single_call=doc.get("parallel_tool_calls") is False,
        service_tier=openai_tier(tier),
    )
    return body, plan
