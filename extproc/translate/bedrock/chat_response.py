"""Converse's answer as OpenAI's chat completion: the whole document (``stream: false``), and
what a stream's chunks share with it (finish reasons, usage)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from extproc.translate import chat_output
from extproc.translate.bedrock.buffered import Unreadable
from extproc.translate.bedrock.guardrails import text_units
from extproc.translate.bedrock.reasoning import thinking_block
from extproc.translate.bedrock.request import Plan
from extproc.translate.bedrock.tiers import openai_tier
from extproc.translate.chat_output import CompletionId, openai_usage
from extproc.usage import Usage, token_count

Json = dict[str, Any]


def usage_of(usage: Mapping[str, Any], trace: Any = None) -> Usage:
    """Converse's ``usage``, and the guardrail units of its ``trace`` (if any)."""

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
        cache_write_input_tokens=count("cacheWriteInputTokens"),
        guardrail_units=text_units(trace),
    )


_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}


def finish_reason(stop_reason: Any, has_calls: bool) -> str:
    return chat_output.finish_reason(_FINISH_REASONS, stop_reason, has_calls)


def converse_answer(doc: Json) -> tuple[Any, Usage | None]:
    """The content blocks and usage of a Converse response document; raises
    :class:`Unreadable` for a document without a message."""
    output = doc.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    if not isinstance(message, dict):
        raise Unreadable
    reported = doc.get("usage")
    usage = usage_of(reported, doc.get("trace")) if isinstance(reported, dict) else None
    return message.get("content"), usage


def chat_completion(doc: Json, plan: Plan, ident: CompletionId) -> tuple[Json, Usage | None]:
    """The OpenAI chat completion for a Converse response document, and its usage; raises
    :class:`Unreadable` for a document without a message."""
    blocks, usage = converse_answer(doc)
    # Content is the text blocks and the answer tool's input, in the model's order.
    parts: list[str] = []
    thinking: list[Json] = []  # the reasoning blocks, to be sent back (thinking_blocks)
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
            if tool.get("name") == plan.answer_tool:
                parts.append(arguments)
            elif not (plan.single_call and calls):
                function = {"name": tool.get("name"), "arguments": arguments}
                calls.append(
                    {"id": tool.get("toolUseId"), "type": "function", "function": function}
                )
        else:
            said = thinking_block(thought)
            if said is not None:
                thinking.append(said)
    content = "".join(parts)
    reply: Json = {
        "role": "assistant",
        "content": content or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = calls
    texts = [block["thinking"] for block in thinking if block["type"] == "thinking"]
    if texts:
        reply["reasoning_content"] = "".join(texts)
    if thinking:
        reply["thinking_blocks"] = thinking
    choice = {
        "index": 0,
        "message": reply,
        "logprobs": None,
        "finish_reason": finish_reason(doc.get("stopReason"), bool(calls)),
    }
    completion = ident.document("chat.completion", [choice])
    # The tier that served it, when Bedrock says.
    served = openai_tier(doc.get("serviceTier"))
    if served is not None:
        completion["service_tier"] = served
    if usage is not None:
        completion["usage"] = openai_usage(usage)
    return completion, usage
