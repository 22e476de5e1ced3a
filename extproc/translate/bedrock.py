"""OpenAI API -> AWS Bedrock: chat via Converse / ConverseStream, embeddings via InvokeModel.

Requests are rewritten into Bedrock's shapes (the model id goes in the path, URL-encoded: ids
such as ``anthropic.claude-3-5-sonnet-20240620-v1:0`` or inference profile ARNs contain ``:``
and ``/``). Responses come back as OpenAI JSON; a ConverseStream body (binary
``application/vnd.amazon.eventstream``) is decoded frame by frame and each event is sent on at
once as an SSE chunk.

Decisions a client can observe:

- Every chat request field is listed in :data:`CHAT_FIELDS` as mapped, ignored (it cannot change
  the output) or rejected with a 400 naming it; an unknown field is a 400 too. Silently dropping
  a field that changes the output (``n``, ``logprobs``, ``seed``...) would return something the
  client did not ask for.
- ``response_format`` (``json_schema`` / ``json_object``) becomes a forced tool whose input
  schema is the requested schema; the tool's input is returned as the message content with
  ``finish_reason: stop``. Converse's native ``outputConfig.textFormat`` only exists for some
  models; forced tool use works on every model that supports ``toolChoice``.
- ``tool_choice: none`` cannot be expressed in Converse (no ``none`` member, and ``toolConfig``
  is mandatory as soon as the history holds tool blocks), so the tools are withheld and the tool
  history is sent as plain text: the model then cannot call a tool.
- An exception frame in the middle of a stream becomes ``data: {"error": {...}}`` (OpenAI's
  error shape, which the OpenAI SDKs raise as ``APIError``) and the stream ends *without*
  ``data: [DONE]``, so a client that only watches for ``[DONE]`` cannot mistake a truncated
  answer for a complete one. A stream that ends before ``messageStop`` is reported the same way.
- Reasoning blocks (models that reason by default) are passed on as ``reasoning_content``, the
  name the OpenAI-compatible servers that return reasoning use.
- Errors keep Bedrock's status, except those an OpenAI client or Envoy's retry policy (5xx and
  429) would misread: quota exhaustion becomes 429, a model error 502, a model timeout 504.
- A 2xx Converse or InvokeModel body the gateway cannot read becomes a 502
  (``bad_upstream_response``): the body is buffered, so the status has not left yet.
- Titan embeds one text per InvokeModel call, so a Titan batch is split into one call per input
  (:meth:`BedrockEmbeddings.fan_out`), which the sidecar sends itself, and the replies are
  merged in input order. If any call fails the client gets that error, translated as above,
  and no embeddings: a partial list would misalign the client's indexes.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from extproc import tokens
from extproc.errors import (
    AUTHENTICATION,
    INVALID_REQUEST,
    NOT_FOUND,
    PERMISSION,
    RATE_LIMIT,
    SERVER,
    UPSTREAM,
    bad_request,
    error_body,
    unsupported_parameter,
)
from extproc.eventstream import EventStreamDecoder, EventStreamError, Message
from extproc.translate import (
    BAD_UPSTREAM_RESPONSE,
    STREAM_TRUNCATED,
    UPSTREAM_ERROR,
    BodyMode,
    RequestContext,
    ResponseHead,
    Translator,
    UpstreamReply,
    UpstreamRequest,
    bad_upstream_response,
    dump_json,
    json_object,
    path_segment,
)
from extproc.usage import Usage, token_count

__all__ = [
    "CHAT_FIELDS",
    "EMBEDDINGS_FIELDS",
    "BedrockChat",
    "BedrockEmbeddings",
    "FieldRule",
    "fields_markdown",
    "translator",
]

Json = dict[str, Any]
Disposition = Literal["mapped", "ignored", "rejected"]

JSON = "application/json"
EVENT_STREAM = "application/vnd.amazon.eventstream"
SSE = "text/event-stream"
DONE = b"data: [DONE]\n\n"


# --- what happens to each OpenAI request field ------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRule:
    """How one OpenAI request field is handled.

    ``accepts`` (rejected fields only): the values that ask for nothing beyond the API default
    and therefore pass, e.g. ``n: 1``.
    """

    name: str
    disposition: Disposition
    note: str
    accepts: Callable[[Any], bool] | None = None


def _is(*values: object) -> Callable[[Any], bool]:
    return lambda value: any(value == v and type(value) is type(v) for v in values)


CHAT_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "messages",
        "mapped",
        "system/developer -> `system`; user text and `data:` image URIs (png, jpeg, gif, webp) ->"
        " content blocks; assistant `tool_calls` -> `toolUse`; tool results -> `toolResult` in a"
        " user turn; consecutive same-role turns merged. Image URLs are not fetched (400);"
        " system messages alone, with no user or assistant content, are a 400.",
    ),
    FieldRule("model", "mapped", "The route's Bedrock model id or inference profile, in the path."),
    FieldRule("stream", "mapped", "`converse-stream`; the event stream is sent on as SSE chunks."),
    FieldRule(
        "stream_options",
        "mapped",
        "`include_usage` adds the final usage chunk; `include_obfuscation` has nothing to act"
        " on (no obfuscation padding is added).",
    ),
    FieldRule("max_completion_tokens", "mapped", "`inferenceConfig.maxTokens`."),
    FieldRule(
        "max_tokens", "mapped", "`inferenceConfig.maxTokens` (`max_completion_tokens` wins)."
    ),
    FieldRule(
        "temperature", "mapped", "`inferenceConfig.temperature` (the model's own range applies)."
    ),
    FieldRule("top_p", "mapped", "`inferenceConfig.topP`."),
    FieldRule("stop", "mapped", "`inferenceConfig.stopSequences` (a string or a list)."),
    FieldRule("tools", "mapped", "Function tools -> `toolConfig.tools[].toolSpec`."),
    FieldRule(
        "tool_choice",
        "mapped",
        "`auto` -> `auto`, `required` -> `any`, a named function -> `tool`; `none` -> no"
        " `toolConfig`, and the tool history is sent as text.",
    ),
    FieldRule(
        "response_format",
        "mapped",
        "`json_schema` / `json_object` -> a forced tool carrying the schema; its input is"
        " returned as the message content.",
    ),
    FieldRule(
        "parallel_tool_calls",
        "mapped",
        "`false`: only the first tool call of a turn is returned (Converse has no such switch).",
    ),
    FieldRule("user", "ignored", "End-user id for OpenAI's abuse monitoring."),
    FieldRule("safety_identifier", "ignored", "End-user id for OpenAI's abuse monitoring."),
    FieldRule("metadata", "ignored", "Tags for OpenAI's stored completions."),
    FieldRule("store", "ignored", "OpenAI's stored completions; the gateway stores nothing."),
    FieldRule("service_tier", "ignored", "Billing and latency tier only."),
    FieldRule("prompt_cache_key", "ignored", "A caching hint: only cost and latency change."),
    FieldRule("prompt_cache_options", "ignored", "A caching hint: only cost and latency change."),
    FieldRule("prompt_cache_retention", "ignored", "A caching hint: only cost and latency change."),
    FieldRule("n", "rejected", "Bedrock returns one choice; `1` is accepted.", _is(1)),
    FieldRule(
        "logprobs",
        "rejected",
        "Bedrock returns no log probabilities; `false` is accepted.",
        _is(False),
    ),
    FieldRule(
        "top_logprobs",
        "rejected",
        "Bedrock returns no log probabilities; `0` is accepted.",
        _is(0),
    ),
    FieldRule("logit_bias", "rejected", "No equivalent in Converse; `{}` is accepted.", _is({})),
    FieldRule(
        "presence_penalty",
        "rejected",
        "No equivalent in Converse; `0` is accepted.",
        _is(0, 0.0),
    ),
    FieldRule(
        "frequency_penalty",
        "rejected",
        "No equivalent in Converse; `0` is accepted.",
        _is(0, 0.0),
    ),
    FieldRule("seed", "rejected", "Converse has no seed."),
    FieldRule("audio", "rejected", "Text output only."),
    FieldRule("modalities", "rejected", 'Text output only; `["text"]` is accepted.', _is(["text"])),
    FieldRule("prediction", "rejected", "No predicted outputs in Converse."),
    FieldRule("web_search_options", "rejected", "No web search in Converse."),
    FieldRule(
        "reasoning_effort",
        "rejected",
        "Reasoning is model-specific on Bedrock; `none` is accepted.",
        _is("none"),
    ),
    FieldRule(
        "verbosity", "rejected", "No equivalent in Converse; `medium` is accepted.", _is("medium")
    ),
    FieldRule("moderation", "rejected", "No moderation on this backend."),
    FieldRule("functions", "rejected", "Deprecated by OpenAI: use `tools`."),
    FieldRule("function_call", "rejected", "Deprecated by OpenAI: use `tool_choice`."),
)

# Inputs of one Titan embeddings request (each a call, CONCURRENCY at a time, within
# sidecar.message_timeout); more is a 400.
MAX_TITAN_INPUTS = 128


EMBEDDINGS_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "input",
        "mapped",
        "Titan: one call per string (`inputText`), a batch is sent as concurrent calls (8 at a"
        f" time) and merged in order, at most {MAX_TITAN_INPUTS} strings (more: 400"
        " `too_many_inputs`); Cohere: up to 96 strings (`texts`, `input_type: search_document`)."
        " Token arrays are rejected.",
    ),
    FieldRule("model", "mapped", "The route's Bedrock model id, in the path."),
    FieldRule(
        "encoding_format",
        "mapped",
        "`float`, or `base64` (little-endian float32, encoded by the gateway).",
    ),
    FieldRule(
        "dimensions",
        "mapped",
        "Titan v2: `dimensions` (256, 512, 1024); Cohere v4: `output_dimension` (256, 512, 1024,"
        " 1536); other models accept only their native size.",
    ),
    FieldRule("user", "ignored", "End-user id for OpenAI's abuse monitoring."),
)

_CHAT_RULES = {rule.name: rule for rule in CHAT_FIELDS}
_EMBEDDINGS_RULES = {rule.name: rule for rule in EMBEDDINGS_FIELDS}


def fields_markdown(rules: tuple[FieldRule, ...] = CHAT_FIELDS) -> str:
    """The field table as a Markdown table, for the README."""
    lines = ["| Field | Handling | Notes |", "|---|---|---|"]
    for rule in rules:
        note = rule.note.replace("|", r"\|")
        lines.append(f"| `{rule.name}` | {rule.disposition} | {note} |")
    return "\n".join(lines) + "\n"


def _check_fields(doc: Json, rules: Mapping[str, FieldRule]) -> None:
    unknown = sorted(name for name in doc if name not in rules)
    if unknown:
        raise bad_request(
            f"Unrecognized request argument(s): {', '.join(unknown)}.",
            unknown[0],
            "unknown_parameter",
        )
    for name, value in doc.items():
        rule = rules[name]
        if rule.disposition != "rejected" or value is None:
            continue
        if rule.accepts is None or not rule.accepts(value):
            raise unsupported_parameter(name, f"not supported by this Bedrock backend. {rule.note}")


# --- small request helpers ------------------------------------------------------------------


def _number(doc: Json, key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{key}' must be a number.", key)
    return value


def _positive_int(doc: Json, key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"'{key}' must be a positive integer.", key)
    return value


def _string(value: Any, param: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or not (value or empty):
        raise bad_request(f"'{param}' must be a non-empty string.", param)
    return value


# --- chat request -----------------------------------------------------------------------------

_ANSWER_TOOL = "json_response"
_ANSWER_DESCRIPTION = (
    "Give your final answer to the user by calling this tool: its input is the complete answer,"
    " as JSON matching the schema."
)
# Converse rejects blank text blocks, and a tool may legitimately return nothing.
_EMPTY_TOOL_RESULT = "(no output)"
_IMAGE_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "webp": "webp"}


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the response side must know about the request."""

    stream: bool = False
    include_usage: bool = False
    answer_tool: str | None = None  # the tool whose input is the answer (response_format)
    single_call: bool = False  # parallel_tool_calls: false


def _text_blocks(text: str) -> list[Json]:
    # Converse rejects blank text blocks; whitespace carries nothing for the model anyway.
    return [{"text": text}] if text.strip() else []


def _texts(content: Any, param: str, kinds: tuple[str, ...] = ("text",)) -> list[str]:
    """The texts of a content made only of text-like parts (system, assistant, tool)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of content parts.", param)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds:
            raise bad_request(
                f"Content part type {kind!r} is not supported here by this Bedrock backend.",
                f"{param}[{j}].type",
            )
        # {"type": "text", "text": ...} and {"type": "refusal", "refusal": ...}
        texts.append(_string(part.get(kind), f"{param}[{j}].{kind}", empty=True))
    return texts


def _image_block(image: Any, param: str) -> Json:
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str):
        raise bad_request(f"'{param}.url' must be a string.", f"{param}.url")
    if url.startswith(("http://", "https://")):
        raise bad_request(
            "The gateway does not fetch image URLs for Bedrock: send the image inline as a"
            " data: URI (data:image/png;base64,...).",
            f"{param}.url",
        )
    head, _, data = url.partition(",")
    mime, _, encoding = head.removeprefix("data:").partition(";")
    image_format = _IMAGE_FORMATS.get(mime.removeprefix("image/").lower())
    if not head.startswith("data:image/") or encoding != "base64" or image_format is None:
        raise bad_request(
            "Images must be base64 data: URIs of PNG, JPEG, GIF or WebP.", f"{param}.url"
        )
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _user_blocks(content: Any, param: str) -> list[Json]:
    if isinstance(content, str):
        return _text_blocks(content)
    if not isinstance(content, list):
        raise bad_request(f"'{param}' must be a string or an array of content parts.", param)
    blocks: list[Json] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks += _text_blocks(_string(part.get("text"), f"{where}.text", empty=True))
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{where}.image_url"))
        else:
            raise bad_request(
                f"Content part type {kind!r} is not supported by this Bedrock backend.",
                f"{where}.type",
            )
    return blocks


def _arguments(raw: Any, param: str) -> Json:
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


def _assistant_blocks(msg: Json, param: str, textify: bool) -> list[Json]:
    for legacy in ("function_call", "audio"):
        if msg.get(legacy) is not None:
            raise unsupported_parameter(
                f"{param}.{legacy}", "not supported by this Bedrock backend."
            )
    blocks: list[Json] = []
    for text in _texts(msg.get("content"), f"{param}.content", ("text", "refusal")):
        blocks += _text_blocks(text)
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_request(f"'{param}.tool_calls' must be an array.", f"{param}.tool_calls")
    for j, call in enumerate(calls):
        where = f"{param}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise bad_request(f"'{where}.function' must be an object.", f"{where}.function")
        call_id = _string(call.get("id"), f"{where}.id")
        name = _string(function.get("name"), f"{where}.function.name")
        arguments = _arguments(function.get("arguments"), f"{where}.function.arguments")
        if textify:
            shown = orjson.dumps(arguments).decode()
            blocks.append({"text": f"[called tool {name} (call {call_id}) with {shown}]"})
        else:
            blocks.append({"toolUse": {"toolUseId": call_id, "name": name, "input": arguments}})
    return blocks


def _tool_result_block(msg: Json, param: str, textify: bool) -> Json:
    call_id = _string(msg.get("tool_call_id"), f"{param}.tool_call_id")
    texts = [t for t in _texts(msg.get("content"), f"{param}.content") if t.strip()]
    if textify:
        return {"text": f"[result of tool call {call_id}]: {''.join(texts) or _EMPTY_TOOL_RESULT}"}
    content = [{"text": t} for t in texts] or [{"text": _EMPTY_TOOL_RESULT}]
    return {"toolResult": {"toolUseId": call_id, "content": content}}


def _messages(raw: Any, textify_tools: bool) -> tuple[list[Json], list[Json]]:
    """(system blocks, alternating turns). ``textify_tools``: no toolConfig will be sent."""
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
            for text in _texts(msg.get("content"), f"{param}.content"):
                system += _text_blocks(text)
            continue
        if role == "user":
            blocks = _user_blocks(msg.get("content"), f"{param}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(msg, param, textify_tools)
        elif role == "tool":
            blocks = [_tool_result_block(msg, param, textify_tools)]
        else:
            raise bad_request(f"Unsupported role {role!r}.", f"{param}.role")
        bedrock_role = "assistant" if role == "assistant" else "user"
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


def _tool_specs(tools: Any) -> list[Json]:
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
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(schema, dict):
            raise bad_request(
                f"'{param}.function.parameters' must be an object.", f"{param}.function.parameters"
            )
        spec: Json = {
            "name": _string(function.get("name"), f"{param}.function.name"),
            "inputSchema": {"json": schema},
        }
        description = function.get("description")
        # Converse rejects an empty description.
        if isinstance(description, str) and description.strip():
            spec["description"] = description
        specs.append(spec)
    return specs


def _tool_choice(choice: Any, names: list[str]) -> tuple[str, str | None]:
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


def _answer_tool(response_format: Any) -> Json | None:
    """The forced tool that carries a ``response_format`` schema, or None for plain text."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {
            "name": _ANSWER_TOOL,
            "description": _ANSWER_DESCRIPTION,
            "inputSchema": {"json": {"type": "object"}},
        }
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
    schema = spec.get("schema") or {"type": "object"}
    # A tool's input is always an object, so only object schemas can travel as one.
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise bad_request(
            "'response_format.json_schema.schema' must describe a JSON object on this backend.",
            "response_format.json_schema.schema",
        )
    description = spec.get("description")
    return {
        "name": spec.get("name") or _ANSWER_TOOL,
        "description": description
        if isinstance(description, str) and description.strip()
        else _ANSWER_DESCRIPTION,
        "inputSchema": {"json": schema},
    }


def _inference_config(doc: Json) -> Json:
    config: Json = {}
    completion_limit = _positive_int(doc, "max_completion_tokens")
    legacy_limit = _positive_int(doc, "max_tokens")
    limit = completion_limit if completion_limit is not None else legacy_limit
    if limit is not None:
        config["maxTokens"] = limit
    for key, field in (("temperature", "temperature"), ("top_p", "topP")):
        value = _number(doc, key)
        if value is not None:
            config[field] = value
    stop = doc.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise bad_request("'stop' must be a string or an array of strings.", "stop")
        if stop:
            config["stopSequences"] = stop
    return config


def _converse(doc: Json) -> tuple[Json, _Plan]:
    """The Converse request body for an OpenAI chat request, and what the response needs."""
    _check_fields(doc, _CHAT_RULES)
    stream = doc.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", "stream")
    tools = _tool_specs(doc.get("tools"))
    names = [spec["name"] for spec in tools]
    mode, named = _tool_choice(doc.get("tool_choice"), names)
    if mode == "none":
        tools = []
    answer = _answer_tool(doc.get("response_format"))
    if answer is not None and mode in ("required", "named"):
        # A client tool call is demanded: an answer tool would let the model skip it.
        answer = None
    if answer is not None and answer["name"] in (spec["name"] for spec in tools):
        raise bad_request(
            f"'response_format.json_schema.name' {answer['name']!r} is also a tool name.",
            "response_format.json_schema.name",
        )

    system, messages = _messages(doc.get("messages"), textify_tools=not tools)
    body: Json = {"messages": messages}
    if system:
        body["system"] = system
    config = _inference_config(doc)
    if config:
        body["inferenceConfig"] = config
    tool_choice: Json | None = None
    if answer is not None:
        # With client tools too, `any` lets the model call one of them or answer through ours.
        tool_choice = {"any": {}} if tools else {"tool": {"name": answer["name"]}}
        tools = [*tools, answer]
    elif mode == "auto":
        tool_choice = {"auto": {}}
    elif mode == "required":
        tool_choice = {"any": {}}
    elif mode == "named":
        tool_choice = {"tool": {"name": named}}
    if tools:
        body["toolConfig"] = {"tools": [{"toolSpec": spec} for spec in tools]}
        if tool_choice is not None:
            body["toolConfig"]["toolChoice"] = tool_choice

    options = doc.get("stream_options")
    plan = _Plan(
        stream=bool(stream),
        include_usage=bool(stream)
        and isinstance(options, dict)
        and options.get("include_usage") is True,
        answer_tool=answer["name"] if answer is not None else None,
        single_call=doc.get("parallel_tool_calls") is False,
    )
    return body, plan


# --- responses: shared ------------------------------------------------------------------------


def _usage(usage: Mapping[str, Any]) -> Usage:
    def count(key: str) -> int:
        return token_count(usage, key)

    # Bedrock counts cache reads and writes apart from inputTokens; OpenAI's prompt_tokens
    # includes cached tokens.
    cached = count("cacheReadInputTokens")
    prompt = count("inputTokens") + cached + count("cacheWriteInputTokens")
    completion = count("outputTokens")
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        total_tokens=prompt + completion,
        cached_input_tokens=cached,
    )


def _openai_usage(usage: Usage) -> Json:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }


_ERROR_TYPES = {
    "ValidationException": INVALID_REQUEST,
    "AccessDeniedException": PERMISSION,
    "UnrecognizedClientException": AUTHENTICATION,
    "InvalidSignatureException": AUTHENTICATION,
    "IncompleteSignatureException": AUTHENTICATION,
    "MissingAuthenticationTokenException": AUTHENTICATION,
    "ExpiredTokenException": AUTHENTICATION,
    "ResourceNotFoundException": NOT_FOUND,
    "ThrottlingException": RATE_LIMIT,
    "ServiceQuotaExceededException": RATE_LIMIT,
    "ModelNotReadyException": RATE_LIMIT,
    "ModelErrorException": UPSTREAM,
    "ModelStreamErrorException": UPSTREAM,
    "ModelTimeoutException": UPSTREAM,
    "InternalServerException": SERVER,
    "ServiceUnavailableException": SERVER,
}
# Bedrock answers quota exhaustion with 400, a failed model with 424 and a model timeout with
# 408: a client would not back off, and Envoy's retry policy (5xx, 429) would not fail over.
_ERROR_STATUS = {
    "ServiceQuotaExceededException": 429,
    "ModelErrorException": 502,
    "ModelTimeoutException": 504,
}
_STATUS_TYPES = {
    400: INVALID_REQUEST,
    401: AUTHENTICATION,
    403: PERMISSION,
    404: NOT_FOUND,
    429: RATE_LIMIT,
}


def _error_type(kind: str, status: int) -> str:
    return (
        _ERROR_TYPES.get(kind)
        or _STATUS_TYPES.get(status)
        or (SERVER if status >= 500 else UPSTREAM)
    )


def _error_message(payload: bytes, fallback: str) -> str:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        text = payload.decode(errors="replace").strip()
        return text[:1000] or fallback
    if isinstance(doc, dict):
        for key in ("message", "Message"):
            if isinstance(doc.get(key), str) and doc[key]:
                return str(doc[key])
    return fallback


def _error_kind(head: Mapping[str, str]) -> str:
    """The AWS error type of an error response's head (lower-case names)."""
    # e.g. "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    return head.get("x-amzn-errortype", "").partition(":")[0]


def _bedrock_error_body(kind: str, status: int, body: bytes) -> bytes:
    """The OpenAI error body for a Bedrock error response."""
    message = _error_message(body, f"Bedrock returned HTTP {status}.")
    return error_body(message, _error_type(kind, status), None, kind or None)


_UNREADABLE = "Bedrock returned a response the gateway cannot read."


class _Unreadable(Exception):
    """A 2xx Bedrock body that is not what Bedrock sends."""


def _parse_upstream(body: bytes) -> Json:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise _Unreadable
    return doc


class _Exchange(ABC):
    """The response handling both translators share: head bookkeeping, errors, buffering."""

    needs_request_body = True
    needs_response = True

    def __init__(self, ctx: RequestContext, prefix: str = "") -> None:
        self._ctx = ctx
        self._prefix = prefix
        self._status = 0
        self._head: dict[str, str] = {}
        self._buffer = bytearray()
        self.usage: Usage | None = None
        # Converse and InvokeModel responses do not name the model that served them.
        self.response_model: str | None = None
        self._ended = False  # the whole body was seen
        self._failure: str | None = None

    @property
    def complete(self) -> bool:
        return self._ended

    @property
    def failure(self) -> str | None:
        return self._failure

    @abstractmethod
    def _translate(self, body: bytes) -> bytes:
        """The OpenAI body for a complete 2xx Bedrock body; raises :class:`_Unreadable`."""

    def output_tokens(self, model: str) -> int:
        return 0

    def _see_head(self, status: int, headers: Mapping[str, str]) -> None:
        self._status = status
        self._head = {name.lower(): value for name, value in headers.items()}

    def _path(self, operation: str) -> str:
        return f"{self._prefix}/model/{path_segment(self._ctx.upstream_model)}/{operation}"

    @property
    def _ok(self) -> bool:
        return 200 <= self._status < 300

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        self._see_head(status, headers)
        return "buffered"

    def response_headers(self, status: int, headers: Mapping[str, str]) -> ResponseHead:
        self._see_head(status, headers)
        head = ResponseHead(set={"content-type": JSON}, remove=["content-length"])
        if not self._ok:
            mapped = _ERROR_STATUS.get(_error_kind(self._head), status)
            if mapped != status:
                head.status = mapped
        return head

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        self._buffer += chunk
        if not end_of_stream:
            return b""
        body = bytes(self._buffer)
        self._buffer.clear()
        self._ended = True
        if self._ok:
            try:
                return self._translate(body)
            except _Unreadable:
                # Buffered: the head has not left yet, so the client gets a proper 502.
                self._failure = BAD_UPSTREAM_RESPONSE
                raise bad_upstream_response(_UNREADABLE) from None
        return _bedrock_error_body(_error_kind(self._head), self._status, body)


# --- chat responses ---------------------------------------------------------------------------

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
# Stream bookkeeping for a content block that is not one of the client's tool calls.
_ANSWER_BLOCK = -1  # the response_format tool: its input deltas are content deltas
_DROPPED_BLOCK = -2  # a tool call beyond the first with parallel_tool_calls: false


def _block_index(payload: Json) -> int | None:
    """An event's ``contentBlockIndex``; None unless it is an integer, as Bedrock sends it."""
    index = payload.get("contentBlockIndex")
    return index if isinstance(index, int) and not isinstance(index, bool) else None


def _finish_reason(stop_reason: Any, has_calls: bool) -> str:
    finish = _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    if finish in ("stop", "tool_calls"):
        # The answer tool ends with tool_use but is no tool call for the client.
        return "tool_calls" if has_calls else "stop"
    return finish


class BedrockChat(_Exchange):
    """``/v1/chat/completions`` -> Converse (``stream: false``) or ConverseStream."""

    def __init__(self, ctx: RequestContext, prefix: str = "") -> None:
        super().__init__(ctx, prefix)
        self._plan = _Plan()
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._decoder = EventStreamDecoder()
        self._blocks: dict[int, int] = {}  # contentBlockIndex -> tool_calls index (or _*_BLOCK)
        self._calls = 0
        # What the answer said (text, reasoning, tool calls), for an estimate if it ends
        # without Bedrock's usage: the pieces as they came, joined only then.
        self._said: list[str] = []
        self._opened = self._stopped = self._closed = self._usage_sent = False
        self._done = False  # the stream ended with [DONE]

    def request(self, body: bytes | None) -> UpstreamRequest:
        converse, self._plan = _converse(json_object(body))
        operation = "converse-stream" if self._plan.stream else "converse"
        return UpstreamRequest(
            path=self._path(operation),
            body=dump_json(converse),
            headers={
                "content-type": JSON,
                "accept": EVENT_STREAM if self._plan.stream else JSON,
            },
        )

    @property
    def _streaming(self) -> bool:
        return self._plan.stream and self._ok

    @property
    def complete(self) -> bool:
        return self._done if self._streaming else self._ended

    def _see_head(self, status: int, headers: Mapping[str, str]) -> None:
        super()._see_head(status, headers)
        request_id = self._head.get("x-amzn-requestid")
        if request_id:
            self._id = f"chatcmpl-{request_id}"

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        self._see_head(status, headers)
        return "streamed" if self._streaming else "buffered"

    def response_headers(self, status: int, headers: Mapping[str, str]) -> ResponseHead:
        head = super().response_headers(status, headers)
        if self._streaming:
            head.set["content-type"] = SSE
        return head

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        if self._streaming:
            return self._stream(chunk, end_of_stream)
        return super().response_body(chunk, end_of_stream)

    # --- Converse (one JSON document) ---

    def _translate(self, body: bytes) -> bytes:
        doc = _parse_upstream(body)
        output = doc.get("output")
        message = output.get("message") if isinstance(output, dict) else None
        if not isinstance(message, dict):
            raise _Unreadable
        blocks = message.get("content")
        # Content is the text blocks and the answer tool's input, in the model's order.
        parts: list[str] = []
        reasoning: list[str] = []
        calls: list[Json] = []
        for block in blocks if isinstance(blocks, list) else []:
            if not isinstance(block, dict):
                continue
            tool = block.get("toolUse")
            thought = block.get("reasoningContent")
            if isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(tool, dict):
                arguments = orjson.dumps(tool.get("input", {})).decode()
                if tool.get("name") == self._plan.answer_tool:
                    parts.append(arguments)
                elif not (self._plan.single_call and calls):
                    function = {"name": tool.get("name"), "arguments": arguments}
                    calls.append(
                        {"id": tool.get("toolUseId"), "type": "function", "function": function}
                    )
            elif isinstance(thought, dict):
                said = thought.get("reasoningText")
                text = said.get("text") if isinstance(said, dict) else None
                if isinstance(text, str):
                    reasoning.append(text)
        content = "".join(parts)
        reply: Json = {
            "role": "assistant",
            "content": content or (None if calls else ""),
            "refusal": None,
        }
        if calls:
            reply["tool_calls"] = calls
        if reasoning:
            reply["reasoning_content"] = "".join(reasoning)
        self._said = list(tokens.message_texts(reply))
        completion: Json = {
            "id": self._id,
            "object": "chat.completion",
            "created": self._created,
            "model": self._ctx.route_model,
            "choices": [
                {
                    "index": 0,
                    "message": reply,
                    "logprobs": None,
                    "finish_reason": _finish_reason(doc.get("stopReason"), bool(calls)),
                }
            ],
        }
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self.usage = _usage(usage)
            completion["usage"] = _openai_usage(self.usage)
        return orjson.dumps(completion)

    # --- ConverseStream (event stream -> SSE) ---

    def _stream(self, chunk: bytes, end_of_stream: bool) -> bytes:
        if self._closed:
            return b""
        out: list[bytes] = []
        try:
            messages = self._decoder.feed(chunk)
        except EventStreamError as exc:
            messages = []
            out.append(self._malformed(f"Bedrock sent a malformed event stream ({exc})."))
        for message in messages:
            out.append(self._event(message))
            if self._closed:
                break
        if end_of_stream and not self._closed:
            if self._stopped and not self._decoder.pending:
                out.append(DONE)
                self._closed = self._done = True
            else:
                out.append(
                    self._fail(
                        "Bedrock ended the stream before the answer was complete.",
                        UPSTREAM,
                        STREAM_TRUNCATED,
                        STREAM_TRUNCATED,
                    )
                )
        return b"".join(out)

    def _event(self, message: Message) -> bytes:
        headers = message.headers
        kind = headers.get(":message-type", "event")
        if kind == "exception":
            # e.g. "throttlingException": the error's name with a lower-case initial.
            name = str(headers.get(":exception-type", ""))
            name = name[:1].upper() + name[1:]
            text = _error_message(message.payload, "Bedrock reported an error mid-stream.")
            # Telemetry gets AWS's own names only: an error type is a metric label.
            failure = name if name in _ERROR_TYPES else UPSTREAM_ERROR
            return self._fail(text, _error_type(name, 500), name or None, failure)
        if kind == "error":
            code = str(headers.get(":error-code", "")) or None
            text = str(headers.get(":error-message", "Bedrock reported an error mid-stream."))
            return self._fail(text, UPSTREAM, code, UPSTREAM_ERROR)
        try:
            payload = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            return self._malformed("Bedrock sent an event the gateway cannot read.")
        event = headers.get(":event-type")
        if event == "messageStart":
            return self._open()
        if event == "contentBlockStart":
            return self._block_start(payload)
        if event == "contentBlockDelta":
            return self._block_delta(payload)
        if event == "messageStop":
            return self._stop(payload)
        if event == "metadata":
            return self._metadata(payload)
        return b""  # contentBlockStop, and events a newer Bedrock may add, carry nothing for us

    def _chunk(self, delta: Json, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._sse([choice], None)

    def _sse(self, choices: list[Json], usage: Json | None) -> bytes:
        doc: Json = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._ctx.route_model,
            "choices": choices,
        }
        # With include_usage OpenAI puts `usage: null` in every chunk but the last.
        if self._plan.include_usage:
            doc["usage"] = usage
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    def _open(self) -> bytes:
        """The role chunk, before anything else (text blocks have no start event)."""
        if self._opened:
            return b""
        self._opened = True
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, payload: Json) -> bytes:
        start = payload.get("start")
        tool = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(tool, dict):
            return b""
        block = _block_index(payload)
        if block is None:
            # Its deltas could not be told apart from another block's.
            return self._malformed("Bedrock sent a tool call the gateway cannot read.")
        if tool.get("name") == self._plan.answer_tool:
            self._blocks[block] = _ANSWER_BLOCK
            return self._open()
        if self._plan.single_call and self._calls:
            self._blocks[block] = _DROPPED_BLOCK
            return b""
        index = self._blocks[block] = self._calls
        self._calls += 1
        if isinstance(tool.get("name"), str):
            self._said.append(tool["name"])
        call = {
            "index": index,
            "id": tool.get("toolUseId"),
            "type": "function",
            "function": {"name": tool.get("name"), "arguments": ""},
        }
        return self._open() + self._chunk({"tool_calls": [call]})

    def _block_delta(self, payload: Json) -> bytes:
        delta = self._openai_delta(payload.get("delta"), _block_index(payload))
        if delta is None:
            return b""
        self._said.extend(tokens.message_texts(delta))
        return self._open() + self._chunk(delta)

    def _openai_delta(self, delta: Any, block: int | None) -> Json | None:
        if not isinstance(delta, dict):
            return None
        text = delta.get("text")
        if isinstance(text, str) and text:
            return {"content": text}
        tool = delta.get("toolUse")
        fragment = tool.get("input") if isinstance(tool, dict) else None
        if isinstance(fragment, str) and fragment:
            # A block that never started (or whose index is unreadable) belongs to no call.
            target = _DROPPED_BLOCK if block is None else self._blocks.get(block, _DROPPED_BLOCK)
            if target == _ANSWER_BLOCK:
                return {"content": fragment}
            if target == _DROPPED_BLOCK:
                return None
            return {"tool_calls": [{"index": target, "function": {"arguments": fragment}}]}
        thought = delta.get("reasoningContent")
        text = thought.get("text") if isinstance(thought, dict) else None
        if isinstance(text, str) and text:
            return {"reasoning_content": text}
        return None

    def output_tokens(self, model: str) -> int:
        return tokens.count("".join(self._said), model)

    def _stop(self, payload: Json) -> bytes:
        self._stopped = True
        finish = _finish_reason(payload.get("stopReason"), self._calls > 0)
        return self._open() + self._chunk({}, finish) + self._usage_chunk()

    def _metadata(self, payload: Json) -> bytes:
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.usage = _usage(usage)
        # OpenAI sends usage after the finish chunk; Bedrock sends metadata after messageStop.
        return self._usage_chunk() if self._stopped else b""

    def _usage_chunk(self) -> bytes:
        if not self._plan.include_usage or self.usage is None or self._usage_sent:
            return b""
        self._usage_sent = True
        return self._sse([], _openai_usage(self.usage))

    def _fail(self, message: str, type_: str, code: str | None, failure: str) -> bytes:
        """The stream's last event: an error in OpenAI's shape (no [DONE] follows)."""
        self._closed = True
        self._failure = failure
        return b"data: " + error_body(message, type_, None, code) + b"\n\n"

    def _malformed(self, message: str) -> bytes:
        return self._fail(message, UPSTREAM, BAD_UPSTREAM_RESPONSE, BAD_UPSTREAM_RESPONSE)


# --- embeddings -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EmbeddingModel:
    marker: str  # found in the model id, which may carry a region prefix or be an ARN
    family: Literal["titan", "cohere"]
    dimensions: tuple[int, ...]  # the sizes the model can return
    dimensions_field: str | None  # the request field choosing one; None: fixed size


# Ordered: the first marker found in the model id wins.
_EMBEDDING_MODELS = (
    _EmbeddingModel("amazon.titan-embed-text-v2", "titan", (256, 512, 1024), "dimensions"),
    _EmbeddingModel("amazon.titan-embed-text-v1", "titan", (1536,), None),
    _EmbeddingModel("amazon.titan-embed-g1-text", "titan", (1536,), None),
    _EmbeddingModel("cohere.embed-v4", "cohere", (256, 512, 1024, 1536), "output_dimension"),
    _EmbeddingModel("cohere.embed-", "cohere", (1024,), None),
)
_INPUT_COUNT_HEADER = "x-amzn-bedrock-input-token-count"


def _embedding_model(model_id: str) -> _EmbeddingModel:
    for model in _EMBEDDING_MODELS:
        if model.marker in model_id:
            return model
    raise bad_request(
        f"Bedrock model {model_id!r} is not a supported embeddings model (Amazon Titan Text"
        " Embeddings or Cohere Embed).",
        "model",
    )


def _embedding_texts(raw: Any) -> list[str]:
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise bad_request("'input' must be a non-empty string or array of strings.", "input")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise bad_request(
                "Bedrock embeddings models take text: token arrays are not supported.",
                f"input[{i}]" if isinstance(raw, list) else "input",
            )
    return texts


def _packed(values: Any, kind: str) -> bytes | None:
    """A vector as packed floats (``f`` 32-bit, ``d`` 64-bit); None unless it is a list of
    numbers that fit: a provider's vector is checked as fast as it is encoded."""
    if not isinstance(values, list):
        return None
    try:
        return struct.pack(f"<{len(values)}{kind}", *values)
    except (struct.error, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class _EmbeddingsRequest:
    """An OpenAI embeddings request, checked against the Bedrock model it goes to."""

    model: _EmbeddingModel
    texts: list[str]
    dimensions: int | None
    base64: bool


def _embeddings_request(body: bytes | None, model_id: str) -> _EmbeddingsRequest:
    doc = json_object(body)
    _check_fields(doc, _EMBEDDINGS_RULES)
    model = _embedding_model(model_id)
    texts = _embedding_texts(doc.get("input"))
    encoding = doc.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    dimensions = _positive_int(doc, "dimensions")
    if dimensions is not None and dimensions not in model.dimensions:
        sizes = ", ".join(map(str, model.dimensions))
        raise bad_request(f"'dimensions' must be one of {sizes} for {model_id}.", "dimensions")
    return _EmbeddingsRequest(model, texts, dimensions, encoding == "base64")


class BedrockEmbeddings(_Exchange):
    """``/v1/embeddings`` -> InvokeModel on Amazon Titan Text Embeddings or Cohere Embed.

    Titan embeds one text per call, so a Titan batch is a :class:`~extproc.translate.FanOut`:
    one InvokeModel request per input, merged back into one OpenAI response.
    """

    def __init__(self, ctx: RequestContext, prefix: str = "") -> None:
        super().__init__(ctx, prefix)
        self._family: Literal["titan", "cohere"] = "titan"
        self._base64 = False

    def request(self, body: bytes | None) -> UpstreamRequest:
        read = self._read(body)
        if read.model.family == "cohere":
            invoke: Json = {
                "texts": read.texts,
                "input_type": "search_document",
                "embedding_types": ["float"],
            }
        elif len(read.texts) == 1:
            invoke = {"inputText": read.texts[0]}
        else:
            # One call cannot carry a Titan batch: the upstream stage sends it through fan_out(),
            # only a caller that cannot fan out gets here.
            raise bad_request(
                f"{self._ctx.upstream_model} embeds one input per request on Bedrock: send"
                " the inputs one by one, or use a Cohere Embed model for batches.",
                "input",
            )
        return self._invoke(invoke, read)

    def fan_out(self, body: bytes) -> list[UpstreamRequest] | None:
        read = self._read(body)
        if read.model.family != "titan" or len(read.texts) == 1:
            return None
        if len(read.texts) > MAX_TITAN_INPUTS:
            # Each input is a signed call of the sidecar's own: a batch must not turn one
            # request into thousands of them (nor outlast sidecar.message_timeout).
            raise bad_request(
                f"Amazon Titan embeds one input per call; the gateway sends at most"
                f" {MAX_TITAN_INPUTS} inputs of one request ({len(read.texts)} given):"
                " split the batch.",
                "input",
                "too_many_inputs",
            )
        return [self._invoke({"inputText": text}, read) for text in read.texts]

    def merge(self, replies: Sequence[UpstreamReply]) -> tuple[int, bytes]:
        self._ended = True
        vectors: list[Any] = []
        tokens = 0
        failure: tuple[int, bytes] | None = None
        for reply in replies:
            if 200 <= reply.status < 300:
                try:
                    embedded, count = self._vectors(reply.body, reply.headers)
                except _Unreadable:
                    # Unlike a forwarded response, no status has left yet: a proper 502.
                    if failure is None:
                        self._failure = BAD_UPSTREAM_RESPONSE
                        failure = (502, bad_upstream_response(_UNREADABLE).body())
                    continue
                vectors += embedded
                tokens += count
            elif failure is None:
                kind = _error_kind(reply.headers)
                failure = (
                    _ERROR_STATUS.get(kind, reply.status),
                    _bedrock_error_body(kind, reply.status, reply.body),
                )
        if failure is None:
            return 200, self._answer(vectors, tokens)
        if vectors:
            self.usage = Usage(input_tokens=tokens, total_tokens=tokens)
        return failure

    def _read(self, body: bytes | None) -> _EmbeddingsRequest:
        read = _embeddings_request(body, self._ctx.upstream_model)
        self._family = read.model.family
        self._base64 = read.base64
        return read

    def _invoke(self, invoke: Json, read: _EmbeddingsRequest) -> UpstreamRequest:
        if read.dimensions is not None and read.model.dimensions_field is not None:
            invoke[read.model.dimensions_field] = read.dimensions
        return UpstreamRequest(
            path=self._path("invoke"),
            body=dump_json(invoke),
            headers={"content-type": JSON, "accept": JSON},
        )

    def _translate(self, body: bytes) -> bytes:
        return self._answer(*self._vectors(body, self._head))

    def _vectors(self, body: bytes, head: Mapping[str, str]) -> tuple[list[Any], int]:
        """The vectors (as the client asked them encoded) and the input token count of one 2xx
        InvokeModel response."""
        doc = _parse_upstream(body)
        if self._family == "titan":
            vectors: Any = [doc.get("embedding")]
            tokens = doc.get("inputTextTokenCount")
        else:
            vectors = doc.get("embeddings")
            if isinstance(vectors, dict):  # response_type "embeddings_by_type"
                vectors = vectors.get("float")
            tokens = None
        if not isinstance(tokens, int):
            header = head.get(_INPUT_COUNT_HEADER, "")
            # ASCII and short: int() refuses other digits ("²") and more than 4300 of them.
            tokens = (
                int(header) if header.isascii() and header.isdigit() and len(header) < 19 else 0
            )
        if not isinstance(vectors, list):
            raise _Unreadable
        encoded: list[Any] = []
        for vector in vectors:
            raw = _packed(vector, "f" if self._base64 else "d")
            if raw is None:
                raise _Unreadable
            # OpenAI's base64 encoding: little-endian float32, what the SDKs decode.
            encoded.append(base64.b64encode(raw).decode() if self._base64 else vector)
        return encoded, tokens

    def _answer(self, vectors: list[Any], tokens: int) -> bytes:
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": vector,
            }
            for index, vector in enumerate(vectors)
        ]
        self.usage = Usage(input_tokens=tokens, total_tokens=tokens)
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": self._ctx.route_model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def translator(ctx: RequestContext, prefix: str = "") -> Translator:
    """The Bedrock translator for one attempt, by endpoint.

    ``prefix``: the path of the backend URL (a proxy in front of Bedrock), put before
    ``/model/...`` here because the signature must cover the final path.
    """
    if ctx.endpoint == "chat":
        return BedrockChat(ctx, prefix)
    return BedrockEmbeddings(ctx, prefix)
