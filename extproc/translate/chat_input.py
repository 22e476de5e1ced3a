"""Readers of an OpenAI chat request shared by the translators that rewrite it into another
provider's API (Bedrock's Converse, Anthropic's Messages): each checks one part of the client's
body and returns it as plain values, or raises the 400 naming what is wrong. The providers'
shapes are built from these values by each translator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from extproc.errors import bad_request, unsupported_parameter
from extproc.translate.chat_fields import positive_int, string

Json = dict[str, Any]
ToolMode = Literal["absent", "auto", "none", "required", "named"]

ANSWER_TOOL = "json_response"
ANSWER_DESCRIPTION = (
    "Give your final answer to the user by calling this tool: its input is the complete answer,"
    " as JSON matching the schema."
)
_IMAGE_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "webp": "webp"}


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A function tool (or the answer tool of ``response_format``)."""

    name: str
    schema: Json  # the client's JSON schema of its input
    description: str | None = None  # None when blank


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One of an assistant message's ``tool_calls``."""

    id: str
    name: str
    arguments: Json


def texts(content: Any, param: str, provider: str, kinds: tuple[str, ...] = ("text",)) -> list[str]:
    """The texts of a content made only of text-like parts (system, assistant, tool)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of content parts.", param)
    out = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds:
            raise bad_request(
                f"Content part type {kind!r} is not supported here by this {provider} backend.",
                f"{param}[{j}].type",
            )
        # {"type": "text", "text": ...} and {"type": "refusal", "refusal": ...}
        out.append(string(part.get(kind), f"{param}[{j}].{kind}", empty=True))
    return out


def data_image(url: Any, param: str) -> tuple[str, str]:
    """(format, base64 data) of a ``data:`` image URI: ``png``, ``jpeg``, ``gif`` or ``webp``."""
    if not isinstance(url, str):
        raise bad_request(f"'{param}' must be a string.", param)
    head, _, data = url.partition(",")
    mime, _, encoding = head.removeprefix("data:").partition(";")
    image_format = _IMAGE_FORMATS.get(mime.removeprefix("image/").lower())
    if not head.startswith("data:image/") or encoding != "base64" or image_format is None:
        raise bad_request("Images must be base64 data: URIs of PNG, JPEG, GIF or WebP.", param)
    return image_format, data


def arguments(raw: Any, param: str) -> Json:
    """A tool call's ``arguments``: a string of a JSON object (blank: no arguments)."""
    if not isinstance(raw, str):
        raise bad_request(f"'{param}' must be a string of JSON.", param)
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request(f"'{param}' is not valid JSON.", param) from None
    if not isinstance(value, dict):
        raise bad_request(f"'{param}' must be a JSON object.", param)
    return value


def tool_calls(msg: Json, param: str, provider: str) -> list[ToolCall]:
    """An assistant message's tool calls; its legacy ``function_call`` and ``audio`` are 400s."""
    for legacy in ("function_call", "audio"):
        if msg.get(legacy) is not None:
            raise unsupported_parameter(
                f"{param}.{legacy}", f"not supported by this {provider} backend."
            )
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_request(f"'{param}.tool_calls' must be an array.", f"{param}.tool_calls")
    out = []
    for j, call in enumerate(calls):
        where = f"{param}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise bad_request(f"'{where}.function' must be an object.", f"{where}.function")
        out.append(
            ToolCall(
                string(call.get("id"), f"{where}.id"),
                string(function.get("name"), f"{where}.function.name"),
                arguments(function.get("arguments"), f"{where}.function.arguments"),
            )
        )
    return out


def _description(value: Any) -> str | None:
    # Converse rejects an empty description, and an empty one says nothing to any model.
    return value if isinstance(value, str) and value.strip() else None


def function_tools(tools: Any, provider: str) -> list[FunctionTool]:
    """The request's ``tools``: function tools only."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("'tools' must be an array.", "tools")
    out = []
    for j, tool in enumerate(tools):
        param = f"tools[{j}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise bad_request(
                f"Only function tools are supported by this {provider} backend.", f"{param}.type"
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise bad_request(f"'{param}.function' must be an object.", f"{param}.function")
        out.append(function_tool(function, f"{param}.function"))
    return out


def function_tool(function: Json, param: str) -> FunctionTool:
    """A function's ``name``, ``description`` and ``parameters`` (at ``param``): chat's
    ``tools[].function``, or a Responses function tool (the same members, one level up)."""
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise bad_request(f"'{param}.parameters' must be an object.", f"{param}.parameters")
    name = string(function.get("name"), f"{param}.name")
    return FunctionTool(name, schema, _description(function.get("description")))


def tool_choice(choice: Any, names: list[str]) -> tuple[ToolMode, str | None]:
    """(mode, tool name): the name only for mode ``named``."""
    if choice is None:
        return "absent", None
    if choice == "auto" or choice == "none":
        return choice, None
    if choice == "required":
        if not names:
            raise bad_request("'tool_choice' is 'required' but no tools are given.", "tool_choice")
        return "required", None
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if name not in names:
            raise bad_request(f"'tool_choice' names an unknown tool {name!r}.", "tool_choice")
        return "named", name
    raise bad_request(
        "'tool_choice' must be 'none', 'auto', 'required' or a function tool.", "tool_choice"
    )


def answer_tool(response_format: Any) -> FunctionTool | None:
    """The forced tool that carries a ``response_format`` schema, or None for plain text."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return OBJECT_TOOL
    if kind != "json_schema":
        raise bad_request(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
            "response_format.type",
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise bad_request(
            "'response_format.json_schema' must be an object.", "response_format.json_schema"
        )
    return schema_tool(spec, "response_format.json_schema")


# The answer tool of a schema-less JSON answer (``json_object``).
OBJECT_TOOL = FunctionTool(ANSWER_TOOL, {"type": "object"}, ANSWER_DESCRIPTION)


def schema_tool(spec: Json, param: str) -> FunctionTool:
    """The answer tool of a schema's ``name``, ``description`` and ``schema`` (at ``param``):
    chat's ``response_format.json_schema``, or a Responses ``text.format``."""
    schema = spec.get("schema") or {"type": "object"}
    # A tool's input is always an object, so only object schemas can travel as one.
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise bad_request(
            f"'{param}.schema' must describe a JSON object on this backend.", f"{param}.schema"
        )
    name = spec.get("name") or ANSWER_TOOL
    return FunctionTool(name, schema, _description(spec.get("description")) or ANSWER_DESCRIPTION)


def tools_and_answer(
    doc: Json, provider: str, *, withhold_on_none: bool = True
) -> tuple[list[FunctionTool], ToolMode, str | None, FunctionTool | None]:
    """(tools, tool_choice mode, named tool, answer tool): ``none`` withholds the tools (unless
    the provider has a ``none`` of its own), and a demanded client tool call (``required``,
    named) leaves out the answer tool."""
    tools = function_tools(doc.get("tools"), provider)
    mode, named = tool_choice(doc.get("tool_choice"), [tool.name for tool in tools])
    if mode == "none" and withhold_on_none:
        tools = []
    answer = answer_tool(doc.get("response_format"))
    if answer is not None and mode in ("required", "named"):
        # A client tool call is demanded: an answer tool would let the model skip it.
        answer = None
    if answer is not None and answer.name in (tool.name for tool in tools):
        raise bad_request(
            f"'response_format.json_schema.name' {answer.name!r} is also a tool name.",
            "response_format.json_schema.name",
        )
    return tools, mode, named, answer


def output_limit(doc: Json) -> int | None:
    """``max_completion_tokens``, else the legacy ``max_tokens``."""
    completion_limit = positive_int(doc, "max_completion_tokens")
    legacy_limit = positive_int(doc, "max_tokens")
    return completion_limit if completion_limit is not None else legacy_limit


def stop_sequences(doc: Json) -> list[str]:
    stop = doc.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise bad_request("'stop' must be a string or an array of strings.", "stop")
    return stop


def stream_flags(doc: Json) -> tuple[bool, bool]:
    """(stream, include_usage): whether the client asked for a stream, and for its usage."""
    stream = doc.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", "stream")
    options = doc.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return bool(stream), bool(stream) and include_usage
