"""The Converse request for an OpenAI chat request, and the :class:`Plan` the response needs.

Converse's request shapes are typed here (:class:`ConverseRequest` and its parts) as far as the
gateway writes them; a client's schemas and tool inputs stay plain JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from extproc.errors import bad_request
from extproc.translate.bedrock.fields import CHAT_RULES
from extproc.translate.chat_fields import check_fields, number, string
from extproc.translate.chat_input import (
    FunctionTool,
    data_image,
    output_limit,
    stop_sequences,
    stream_flags,
    texts,
    tool_calls,
    tools_and_answer,
)

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


ContentBlock = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock


class Message(TypedDict):
    role: Role
    content: list[ContentBlock]


class InferenceConfig(TypedDict, total=False):
    maxTokens: int
    temperature: float
    topP: float
    stopSequences: list[str]


class InputSchema(TypedDict):
    json: Json  # the client's JSON schema


class ToolSpec(TypedDict):
    name: str
    inputSchema: InputSchema
    description: NotRequired[str]


class Tool(TypedDict):
    toolSpec: ToolSpec


class ToolName(TypedDict):
    name: str


class ToolChoice(TypedDict, total=False):
    """One member: ``auto``, ``any`` (some tool) or ``tool`` (this one)."""

    auto: Json
    any: Json
    tool: ToolName


class ToolConfig(TypedDict):
    tools: list[Tool]
    toolChoice: NotRequired[ToolChoice]


class ConverseRequest(TypedDict):
    messages: list[Message]
    system: NotRequired[list[TextBlock]]
    inferenceConfig: NotRequired[InferenceConfig]
    toolConfig: NotRequired[ToolConfig]


# --- from OpenAI's request -----------------------------------------------------------------

PROVIDER = "Bedrock"
# Converse rejects blank text blocks, and a tool may legitimately return nothing.
_EMPTY_TOOL_RESULT = "(no output)"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the response side must know about the request."""

    stream: bool = False
    include_usage: bool = False
    answer_tool: str | None = None  # the tool whose input is the answer (response_format)
    single_call: bool = False  # parallel_tool_calls: false


def _text_blocks(text: str) -> list[TextBlock]:
    # Converse rejects blank text blocks; whitespace carries nothing for the model anyway.
    return [{"text": text}] if text.strip() else []


def _image_block(image: Any, param: str) -> ImageBlock:
    url = image.get("url") if isinstance(image, dict) else None
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        raise bad_request(
            "The gateway does not fetch image URLs for Bedrock: send the image inline as a"
            " data: URI (data:image/png;base64,...).",
            f"{param}.url",
        )
    image_format, data = data_image(url, f"{param}.url")
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _user_blocks(content: Any, param: str) -> list[ContentBlock]:
    if isinstance(content, str):
        return list(_text_blocks(content))
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of content parts.", param)
    blocks: list[ContentBlock] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks += _text_blocks(string(part.get("text"), f"{where}.text", empty=True))
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{where}.image_url"))
        else:
            raise bad_request(
                f"Content part type {kind!r} is not supported by this Bedrock backend.",
                f"{where}.type",
            )
    return blocks


def _assistant_blocks(msg: Json, param: str, textify: bool) -> list[ContentBlock]:
    calls = tool_calls(msg, param, PROVIDER)
    blocks: list[ContentBlock] = []
    for text in texts(msg.get("content"), f"{param}.content", PROVIDER, ("text", "refusal")):
        blocks += _text_blocks(text)
    for call in calls:
        if textify:
            shown = orjson.dumps(call.arguments).decode()
            blocks.append({"text": f"[called tool {call.name} (call {call.id}) with {shown}]"})
        else:
            use: ToolUse = {"toolUseId": call.id, "name": call.name, "input": call.arguments}
            blocks.append({"toolUse": use})
    return blocks


def _tool_result_block(msg: Json, param: str, textify: bool) -> TextBlock | ToolResultBlock:
    call_id = string(msg.get("tool_call_id"), f"{param}.tool_call_id")
    said = [t for t in texts(msg.get("content"), f"{param}.content", PROVIDER) if t.strip()]
    if textify:
        return {"text": f"[result of tool call {call_id}]: {''.join(said) or _EMPTY_TOOL_RESULT}"}
    content: list[TextBlock] = [{"text": t} for t in said] or [{"text": _EMPTY_TOOL_RESULT}]
    return {"toolResult": {"toolUseId": call_id, "content": content}}


def _messages(raw: Any, textify_tools: bool) -> tuple[list[TextBlock], list[Message]]:
    """(system blocks, alternating turns). ``textify_tools``: no toolConfig will be sent."""
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty array.", "messages")
    system: list[TextBlock] = []
    turns: list[Message] = []
    for i, msg in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise bad_request(f"'{param}' must be an object.", param)
        role = msg.get("role")
        if role in ("system", "developer"):
            for text in texts(msg.get("content"), f"{param}.content", PROVIDER):
                system += _text_blocks(text)
            continue
        blocks: list[ContentBlock]
        if role == "user":
            blocks = _user_blocks(msg.get("content"), f"{param}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(msg, param, textify_tools)
        elif role == "tool":
            blocks = [_tool_result_block(msg, param, textify_tools)]
        else:
            raise bad_request(f"Unsupported role {role!r}.", f"{param}.role")
        bedrock_role: Role = "assistant" if role == "assistant" else "user"
        if not blocks:
            continue
        # Converse requires strict user/assistant alternation.
        if turns and turns[-1]["role"] == bedrock_role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": bedrock_role, "content": blocks})
    if not turns:
        # Converse refuses an empty `messages`: say which field, before a provider call.
        raise bad_request(
            "'messages' must contain at least one user, assistant or tool message with"
            " content: Bedrock does not answer system instructions alone.",
            "messages",
        )
    return system, turns


def _tool_spec(tool: FunctionTool) -> ToolSpec:
    spec: ToolSpec = {"name": tool.name, "inputSchema": {"json": tool.schema}}
    if tool.description is not None:
        spec["description"] = tool.description
    return spec


def _inference_config(doc: Json) -> InferenceConfig:
    config: InferenceConfig = {}
    limit = output_limit(doc)
    if limit is not None:
        config["maxTokens"] = limit
    temperature = number(doc, "temperature")
    if temperature is not None:
        config["temperature"] = temperature
    top_p = number(doc, "top_p")
    if top_p is not None:
        config["topP"] = top_p
    stop = stop_sequences(doc)
    if stop:
        config["stopSequences"] = stop
    return config


def converse(doc: Json) -> tuple[ConverseRequest, Plan]:
    """The Converse request body for an OpenAI chat request, and what the response needs."""
    check_fields(doc, CHAT_RULES, PROVIDER)
    stream, include_usage = stream_flags(doc)
    client_tools, mode, named, answer_tool = tools_and_answer(doc, PROVIDER)
    tools = [_tool_spec(tool) for tool in client_tools]
    answer = _tool_spec(answer_tool) if answer_tool is not None else None

    system, messages = _messages(doc.get("messages"), textify_tools=not tools)
    body: ConverseRequest = {"messages": messages}
    if system:
        body["system"] = system
    config = _inference_config(doc)
    if config:
        body["inferenceConfig"] = config
    tool_choice: ToolChoice | None = None
    if answer is not None:
        # With client tools too, `any` lets the model call one of them or answer through ours.
        tool_choice = {"any": {}} if tools else {"tool": {"name": answer["name"]}}
        tools = [*tools, answer]
    elif mode == "auto":
        tool_choice = {"auto": {}}
    elif mode == "required":
        tool_choice = {"any": {}}
    elif named is not None:  # mode "named"
        tool_choice = {"tool": {"name": named}}
    if tools:
        body["toolConfig"] = {"tools": [{"toolSpec": spec} for spec in tools]}
        if tool_choice is not None:
            body["toolConfig"]["toolChoice"] = tool_choice

    plan = Plan(
        stream=stream,
        include_usage=include_usage,
        answer_tool=answer["name"] if answer is not None else None,
        single_call=doc.get("parallel_tool_calls") is False,
    )
    return body, plan
