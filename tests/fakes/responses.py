"""The OpenAI Responses API (``POST {prefix}/responses``) for the fake OpenAI and Azure.

The request is checked as OpenAI checks it (``model`` and ``input`` required, known item types,
every ``function_call_output`` answering a ``function_call`` of the same input, function tools
with a name), turned into the chat request it means, answered by :func:`chat_reply` (so the
same echo, tool calls and structured output as chat), and rendered as a Responses document or
as its typed event stream (``event:`` and ``data:`` lines, ``sequence_number`` from 0, no
``[DONE]``: ``response.completed`` is the last event).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai import (
    CREATED,
    SSE_CONTENT_TYPE,
    FakeOpenAI,
    Json,
    Reply,
    chat_reply,
    json_response,
    openai_error,
)
from tests.fakes.server import stream_chunks

RESPONSE_ID = "resp_fake"
MESSAGE_ID = "msg_fake"
_ITEM_TYPES = ("message", "function_call", "function_call_output")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _messages(body: Json) -> list[Json]:
    raw = body.get("input")
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise openai_error(
            400, "Missing required parameter: 'input'.", "input", "missing_required_parameter"
        )
    messages: list[Json] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    calls: set[str] = set()
    for index, item in enumerate(raw):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind not in _ITEM_TYPES or not isinstance(item, dict):
            raise openai_error(
                400,
                f"Invalid value for 'input[{index}].type': expected one of"
                f" {', '.join(_ITEM_TYPES)}.",
                f"input[{index}].type",
                "invalid_value",
            )
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _text(item.get("content"))})
        elif kind == "function_call":
            calls.add(str(item.get("call_id")))
            call = {"id": item.get("call_id"), "type": "function", "function": item}
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.get("call_id") not in calls:
            raise openai_error(
                400,
                f"No tool call found for function call output with call_id {item.get('call_id')}.",
                f"input[{index}]",
            )
        else:
            messages.append({"role": "tool", "content": str(item.get("output"))})
    return messages


def _chat_request(body: Json) -> Json:
    tools = []
    for index, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise openai_error(
                400, "Missing required parameter: 'tools[0].name'.", f"tools[{index}].name"
            )
        tools.append({"type": "function", "function": tool})
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    text_format = (body.get("text") or {}).get("format") or {}
    response_format: Json = {}
    if text_format.get("type") == "json_schema":
        response_format = {"type": "json_schema", "json_schema": text_format}
    elif text_format.get("type") == "json_object":
        response_format = {"type": "json_object"}
    return {
        "model": body["model"],
        "messages": _messages(body),
        "tools": tools,
        "tool_choice": choice,
        "response_format": response_format,
        "max_completion_tokens": body.get("max_output_tokens"),
    }


def responses_reply(body: Json) -> Reply:
    return chat_reply(_chat_request(body))


def _usage(reply: Reply) -> Json:
    return {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": reply.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _items(reply: Reply, done: bool) -> list[Json]:
    status = "completed" if done else "in_progress"
    if reply.content is not None:
        part = {"type": "output_text", "text": reply.content if done else "", "annotations": []}
        return [
            {
                "type": "message",
                "id": MESSAGE_ID,
                "status": status,
                "role": "assistant",
                "content": [part] if done else [],
            }
        ]
    return [
        {
            "type": "function_call",
            "id": f"fc_fake_{index}",
            "call_id": call["id"],
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"] if done else "",
            "status": status,
        }
        for index, call in enumerate(reply.tool_calls)
    ]


def response(reply: Reply, body: Json, done: bool = True, usage: bool = True) -> Json:
    incomplete = done and reply.finish_reason == "length"
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": CREATED,
        "status": ("incomplete" if incomplete else "completed") if done else "in_progress",
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "error": None,
        "model": reply.model,
        "output": _items(reply, done) if done else [],
        "parallel_tool_calls": True,
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "text": body.get("text") or {"format": {"type": "text"}},
        "usage": _usage(reply) if done and usage else None,
    }


def events(reply: Reply, body: Json, usage: bool = True) -> list[bytes]:
    """The stream of one answer: its events, as bytes, in OpenAI's order."""
    out: list[Json] = [
        {"type": "response.created", "response": response(reply, body, done=False)},
        {"type": "response.in_progress", "response": response(reply, body, done=False)},
    ]
    for index, (start, item) in enumerate(
        zip(_items(reply, False), _items(reply, True), strict=True)
    ):
        at = {"item_id": item["id"], "output_index": index}
        out.append({"type": "response.output_item.added", "output_index": index, "item": start})
        if item["type"] == "message":
            text = item["content"][0]["text"]
            empty = {"type": "output_text", "text": "", "annotations": []}
            out.append(
                {"type": "response.content_part.added", **at, "content_index": 0, "part": empty}
            )
            for piece in re.split(r"(?<=\s)(?=\S)", text):
                out.append(
                    {"type": "response.output_text.delta", **at, "content_index": 0, "delta": piece}
                )
            out.append(
                {"type": "response.output_text.done", **at, "content_index": 0, "text": text}
            )
            out.append(
                {
                    "type": "response.content_part.done",
                    **at,
                    "content_index": 0,
                    "part": item["content"][0],
                }
            )
        else:
            arguments = item["arguments"]
            for begin in range(0, len(arguments), 8):
                piece = arguments[begin : begin + 8]
                out.append({"type": "response.function_call_arguments.delta", **at, "delta": piece})
            out.append(
                {"type": "response.function_call_arguments.done", **at, "arguments": arguments}
            )
        out.append({"type": "response.output_item.done", "output_index": index, "item": item})
    last = response(reply, body, usage=usage)
    kind = "response.incomplete" if last["status"] == "incomplete" else "response.completed"
    out.append({"type": kind, "response": last})
    return [
        b"event: "
        + e["type"].encode()
        + b"\ndata: "
        + orjson.dumps({**e, "sequence_number": n})
        + b"\n\n"
        for n, e in enumerate(out)
    ]


def stored(store: dict[str, tuple[Json, Json]], method: str, path: str) -> Json:
    """The stored-response endpoints: ``GET``/``DELETE .../responses/{id}``, ``POST
    .../{id}/cancel`` (only a background response can be cancelled: none here) and ``GET
    .../{id}/input_items``, with OpenAI's 404 for an id it does not hold."""
    rest = path.partition("/responses/")[2]
    response_id, _, action = rest.partition("/")
    if response_id not in store:
        raise openai_error(404, f"Response with id '{response_id}' not found.", code="not_found")
    doc, body = store[response_id]
    if action == "cancel":
        raise openai_error(400, "Only responses created with background=true can be cancelled.")
    if action == "input_items":
        raw = body["input"]
        items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
        data = [{"id": f"msg_in_{n}", "type": "message", **item} for n, item in enumerate(items)]
        return {"object": "list", "data": data, "first_id": data[0]["id"],
                "last_id": data[-1]["id"], "has_more": False}  # fmt: skip
    if method == "DELETE":
        del store[response_id]
        return {"id": response_id, "object": "response.deleted", "deleted": True}
    return doc


def input_tokens(body: Json) -> Json:
    """``POST .../responses/input_tokens``: the prompt's tokens, as :func:`responses_reply`
    counts them."""
    return {"object": "response.input_tokens", "input_tokens": responses_reply(body).prompt_tokens}


def add_routes(fake: FakeOpenAI, app: web.Application) -> None:
    """The Responses API on ``fake``'s prefix: create, and the stored-response endpoints."""
    base = f"{fake.prefix}/responses"
    app.router.add_post(base, partial(_create, fake))
    app.router.add_post(f"{base}/input_tokens", partial(_input_tokens, fake))
    for method, path in (
        ("GET", "{id}"),
        ("DELETE", "{id}"),
        ("POST", "{id}/cancel"),
        ("GET", "{id}/input_items"),
    ):
        app.router.add_route(method, f"{base}/{path}", partial(_stored, fake))


async def _create(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    body = await fake.request_json(request)
    reply = responses_reply(body)
    usage = not fake.omit_usage
    doc = response(reply, body, usage=usage)
    if body.get("store", True):  # OpenAI stores a response unless told not to
        fake.stored[doc["id"]] = (doc, body)
    if not body.get("stream"):
        return json_response(doc)
    return await stream_chunks(
        request,
        events(reply, body, usage=usage),
        content_type=SSE_CONTENT_TYPE,
        delay=fake.chunk_delay,
        linger=fake.linger,
    )


async def _stored(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    fake.authorize(request)
    return json_response(stored(fake.stored, request.method, request.path))


async def _input_tokens(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    return json_response(input_tokens(await fake.request_json(request)))
