"""Tools on Converse: the client's function tools as ``toolSpec``s, ``tool_choice`` as
Converse's choice, and the forced tool that carries a ``response_format`` schema."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from extproc.errors import bad_request
from extproc.translate.bedrock.caching import CachePointBlock, cache_point, ends_with_point
from extproc.translate.bedrock.fields import string

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


_ANSWER_TOOL = "json_response"
_ANSWER_DESCRIPTION = (
    "Give your final answer to the user by calling this tool: its input is the complete answer,"
    " as JSON matching the schema."
)
# The answer tool of a schema-less JSON answer (``json_object``).
OBJECT_TOOL: ToolSpec = {
    "name": _ANSWER_TOOL,
    "description": _ANSWER_DESCRIPTION,
    "inputSchema": {"json": {"type": "object"}},
}


def tool_specs(tools: Any) -> list[ToolSpec]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("'tools' must be an array.", "tools")
    specs = []
    for j, tool in enumerate(tools):
        param = f"tools[{j}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise bad_request(
                "Only function tools are supported by this Bedrock backend.", f"{param}.type"
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise bad_request(f"'{param}.function' must be an object.", f"{param}.function")
        specs.append(function_spec(function, f"{param}.function"))
    return specs


def function_spec(function: Json, param: str) -> ToolSpec:
    """The ``toolSpec`` of a function's ``name``, ``description`` and ``parameters``."""
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise bad_request(f"'{param}.parameters' must be an object.", f"{param}.parameters")
    spec: ToolSpec = {
        "name": string(function.get("name"), f"{param}.name"),
        "inputSchema": {"json": schema},
    }
    description = function.get("description")
    # Converse rejects an empty description.
    if isinstance(description, str) and description.strip():
        spec["description"] = description
    return spec


def tool_choice_mode(choice: Any, names: list[str]) -> tuple[str, str | None]:
    """(mode, tool name): mode is absent, auto, none, required or named."""
    if choice is None:
        return "absent", None
    if choice in ("auto", "none", "required"):
        if choice == "required" and not names:
            raise bad_request("'tool_choice' is 'required' but no tools are given.", "tool_choice")
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if name not in names:
            raise bad_request(f"'tool_choice' names an unknown tool {name!r}.", "tool_choice")
        return "named", name
    raise bad_request(
        "'tool_choice' must be 'none', 'auto', 'required' or a function tool.", "tool_choice"
    )


def answer_tool(response_format: Any) -> ToolSpec | None:
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


def schema_tool(spec: Json, param: str) -> ToolSpec:
    """The answer tool of a schema's ``name``, ``description`` and ``schema`` (at ``param``)."""
    schema = spec.get("schema") or {"type": "object"}
    # A tool's input is always an object, so only object schemas can travel as one.
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise bad_request(
            f"'{param}.schema' must describe a JSON object on this backend.", f"{param}.schema"
        )
    description = spec.get("description")
    return {
        "name": spec.get("name") or _ANSWER_TOOL,
        "description": description
        if isinstance(description, str) and description.strip()
        else _ANSWER_DESCRIPTION,
        "inputSchema": {"json": schema},
    }


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
