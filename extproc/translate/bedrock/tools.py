"""Tools on Converse: the client's function tools as ``toolSpec``s, ``tool_choice`` as
Converse's choice, and the forced tool that carries a ``response_format`` schema."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from extproc.translate import chat_input
from extproc.translate.bedrock.caching import CachePointBlock, cache_point, ends_with_point
from extproc.translate.chat_input import FunctionTool

Json = dict[str, Any]


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
    tools: list[Tool | CachePointBlock]
    toolChoice: NotRequired[ToolChoice]


PROVIDER = "Bedrock"  # how the shared readers' errors name this backend


def _spec(tool: FunctionTool) -> ToolSpec:
    spec: ToolSpec = {"name": tool.name, "inputSchema": {"json": tool.schema}}
    if tool.description is not None:  # Converse rejects an empty description
        spec["description"] = tool.description
    return spec


# The answer tool of a schema-less JSON answer (``json_object``).
OBJECT_TOOL = _spec(chat_input.OBJECT_TOOL)


def tool_specs(tools: Any) -> list[ToolSpec]:
    return [_spec(tool) for tool in chat_input.function_tools(tools, PROVIDER)]


def function_spec(function: Json, param: str) -> ToolSpec:
    """The ``toolSpec`` of a function's ``name``, ``description`` and ``parameters``."""
    return _spec(chat_input.function_tool(function, param))


def tool_choice_mode(choice: Any, names: list[str]) -> tuple[str, str | None]:
    """(mode, tool name): mode is absent, auto, none, required or named."""
    return chat_input.tool_choice(choice, names)


def answer_tool(response_format: Any) -> ToolSpec | None:
    """The forced tool that carries a ``response_format`` schema, or None for plain text."""
    tool = chat_input.answer_tool(response_format)
    return _spec(tool) if tool is not None else None


def schema_tool(spec: Json, param: str) -> ToolSpec:
    """The answer tool of a schema's ``name``, ``description`` and ``schema`` (at ``param``)."""
    return _spec(chat_input.schema_tool(spec, param))


def tool_list(specs: list[ToolSpec], marks: set[int], auto: bool) -> list[Tool | CachePointBlock]:
    """The tools, a cache point after each marked one and, with ``auto``, after the last."""
    tools: list[Tool | CachePointBlock] = []
    for j, spec in enumerate(specs):
        tools.append({"toolSpec": spec})
        if j in marks:
            tools.append(cache_point())
    if auto and not ends_with_point(tools):
        tools.append(cache_point())
    return tools
