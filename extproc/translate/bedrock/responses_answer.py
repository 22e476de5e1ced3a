"""Converse's answer as a Responses API document: its output items (``message``,
``function_call``, ``reasoning``), status, usage and the request settings it echoes; the pieces a
stream's events (:mod:`.responses_stream`) repeat."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from extproc.translate.bedrock.chat_response import converse_answer, finish_reason
from extproc.translate.bedrock.reasoning import thinking_block
from extproc.translate.bedrock.request import Plan
from extproc.translate.bedrock.responses_request import REDACTED
from extproc.translate.bedrock.tiers import openai_tier
from extproc.usage import Usage

Json = dict[str, Any]
Status = Literal["in_progress", "completed", "incomplete", "failed"]

# Chat's finish reasons that leave a response incomplete, and why.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def settings(doc: Json) -> Json:
    """The request's settings as a response repeats them (the SDKs read them back)."""
    parallel = doc.get("parallel_tool_calls")
    return {
        "instructions": doc.get("instructions"),
        "max_output_tokens": doc.get("max_output_tokens"),
        "metadata": doc.get("metadata") or {},
        "parallel_tool_calls": parallel if isinstance(parallel, bool) else True,
        "previous_response_id": None,
        "reasoning": doc.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": doc.get("service_tier"),
        "store": False,  # nothing is kept
        "temperature": doc.get("temperature"),
        "text": doc.get("text") or {"format": {"type": "text"}},
        "tool_choice": doc.get("tool_choice") or "auto",
        "tools": doc.get("tools") or [],
        "top_p": doc.get("top_p"),
        "truncation": "disabled",
        "user": doc.get("user"),
    }


@dataclass(frozen=True, slots=True)
class ResponseShell:
    """What every document of one response repeats."""

    id: str
    created_at: int
    model: str  # the route's model: Converse does not name the model that served
    settings: Json

    def document(
        self,
        status: Status,
        output: list[Json],
        usage: Usage | None = None,
        incomplete: str | None = None,
        error: Json | None = None,
    ) -> Json:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": self.model,
            "output": output,
            "usage": response_usage(usage) if usage is not None else None,
            **self.settings,
        }


def response_usage(usage: Usage) -> Json:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_input_tokens,
        },
        "output_tokens": usage.output_tokens,
        # Converse does not count reasoning tokens apart: they are in output_tokens.
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def outcome(stop_reason: Any) -> tuple[Status, str | None]:
    """The status of an answer that stopped for ``stop_reason``, and why it is incomplete."""
    reason = _INCOMPLETE.get(finish_reason(stop_reason, False))
    return ("incomplete" if reason else "completed"), reason


def text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": []}


def message_item(item_id: str, text: str | None, status: Status = "completed") -> Json:
    """A message; ``text`` None: just started, no part yet."""
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [] if text is None else [text_part(text)],
    }


def call_item(item_id: str, call_id: Any, name: Any, arguments: str, status: Status) -> Json:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning_part(text: str) -> Json:
    return {"type": "reasoning_text", "text": text}


def reasoning_item(item_id: str, block: Json | None) -> Json:
    """A reasoning item of a thinking block as :func:`.reasoning.thinking_block` gives it (None:
    just started): Claude's signature, or redacted data, as ``encrypted_content``."""
    item: Json = {"type": "reasoning", "id": item_id, "summary": [], "content": []}
    if block is None:
        return item
    if block["type"] == "redacted_thinking":
        item["encrypted_content"] = REDACTED + block["data"]
        return item
    item["content"] = [reasoning_part(block["thinking"])]
    if "signature" in block:
        item["encrypted_content"] = block["signature"]
    return item


def _items(blocks: Any, plan: Plan) -> list[Json]:
    """The output items of Converse's content blocks, one each, in the model's order."""
    items: list[Json] = []
    calls = 0
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        tool = block.get("toolUse")
        if isinstance(block.get("text"), str):
            if block["text"]:
                items.append(message_item(new_id("msg"), block["text"]))
        elif isinstance(tool, dict):
            arguments = orjson.dumps(tool.get("input", {})).decode()
            if tool.get("name") == plan.answer_tool:
                items.append(message_item(new_id("msg"), arguments))
            elif not (plan.single_call and calls):
                calls += 1
                name, call_id = tool.get("name"), tool.get("toolUseId")
                items.append(call_item(new_id("fc"), call_id, name, arguments, "completed"))
        else:
            thought = thinking_block(block.get("reasoningContent"))
            if thought is not None:
                items.append(reasoning_item(new_id("rs"), thought))
    return items


def said(items: list[Json]) -> list[str]:
    """The text the items hold, for an estimate of output tokens."""
    texts = []
    for item in items:
        texts += [part["text"] for part in item.get("content", [])]
        if item["type"] == "function_call":
            texts += [item["name"] or "", item["arguments"]]
    return texts


def response_document(doc: Json, plan: Plan, shell: ResponseShell) -> tuple[Json, Usage | None]:
    """The Responses document for a Converse response document, and its usage; raises
    :class:`~.buffered.Unreadable` for a document without a message."""
    blocks, usage = converse_answer(doc)
    status, incomplete = outcome(doc.get("stopReason"))
    document = shell.document(status, _items(blocks, plan), usage, incomplete)
    served = openai_tier(doc.get("serviceTier"))  # the tier that served it, when Bedrock says
    if served is not None:
        document["service_tier"] = served
    return document, usage
