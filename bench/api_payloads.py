"""The other APIs' bodies of the bench (see :mod:`bench.payloads` for chat's, embeddings' and
Bedrock's): the chat prompt and answer as a Responses request, document and stream of 20 typed
events, as a legacy text completion, and an image generation with gpt-image's token usage."""

from __future__ import annotations

import base64
import itertools
from typing import Any

from bench.payloads import (
    ANSWER,
    CHAT_USAGE,
    COMPLETIONS_MODEL,
    CREATED,
    IMAGE_BYTES,
    IMAGES_MODEL,
    IMAGES_USAGE,
    RESPONSES_MODEL,
    RESPONSES_STREAM_MODEL,
    STREAM_CHUNKS,
    SYSTEM_PROMPT,
    USER_PROMPT,
    compact,
)


def responses_request(model: str, stream: bool) -> bytes:
    """The chat request's prompt as a Responses request (instructions and one user input)."""
    doc: dict[str, Any] = {
        "model": model,
        "instructions": SYSTEM_PROMPT,
        "input": [{"role": "user", "content": USER_PROMPT}],
        "temperature": 0.2,
        "max_output_tokens": 256,
        "store": False,
    }
    if stream:
        doc["stream"] = True
    return compact(doc)


_RESPONSES_USAGE = {
    "input_tokens": 212,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 36,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 248,
}


def _response(model: str, done: bool) -> dict[str, Any]:
    text = {"type": "output_text", "text": ANSWER, "annotations": []}
    message = {
        "type": "message",
        "id": "msg_bench0001",
        "status": "completed",
        "role": "assistant",
        "content": [text],
    }
    return {
        "id": "resp_bench0001",
        "object": "response",
        "created_at": CREATED,
        "status": "completed" if done else "in_progress",
        "model": model,
        "output": [message] if done else [],
        "usage": _RESPONSES_USAGE if done else None,
    }


def responses_response() -> bytes:
    """A non-streaming Responses answer with usage (~700 B)."""
    return compact(_response(RESPONSES_MODEL, done=True))


def responses_stream_response() -> bytes:
    """20 typed events as OpenAI sends them: created, in_progress, the item and part opened, 14
    text deltas, the text, part and item done, completed (with the usage)."""
    words = ANSWER.split(" ")
    pieces = STREAM_CHUNKS - 6
    bounds = [i * len(words) // pieces for i in range(pieces + 1)]
    deltas = [" ".join(words[a:b]) + " " for a, b in itertools.pairwise(bounds)]
    at = {"item_id": "msg_bench0001", "output_index": 0, "content_index": 0}
    done = _response(RESPONSES_STREAM_MODEL, done=True)
    item = done["output"][0]
    start = _response(RESPONSES_STREAM_MODEL, done=False)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": start},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
        {"type": "response.content_part.added", **at, "part": {**item["content"][0], "text": ""}},
    ]
    events += [{"type": "response.output_text.delta", **at, "delta": d} for d in deltas]
    events += [
        {"type": "response.output_text.done", **at, "text": ANSWER},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": done},
    ]
    assert len(events) == STREAM_CHUNKS
    return b"".join(
        b"event: "
        + e["type"].encode()
        + b"\ndata: "
        + compact({**e, "sequence_number": n})
        + b"\n\n"
        for n, e in enumerate(events)
    )


def completions_request() -> bytes:
    """The chat request's prompt as one legacy text completion prompt."""
    prompt = f"{SYSTEM_PROMPT}\n\nCustomer: {USER_PROMPT}\nAgent:"
    doc = {"model": COMPLETIONS_MODEL, "prompt": prompt, "max_tokens": 256, "temperature": 0.2}
    return compact(doc)


def completions_response() -> bytes:
    """A text_completion with usage (~450 B)."""
    usage = {k: CHAT_USAGE[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    choice = {"text": ANSWER, "index": 0, "logprobs": None, "finish_reason": "stop"}
    return compact(
        {
            "id": "cmpl-bench0001",
            "object": "text_completion",
            "created": CREATED,
            "model": COMPLETIONS_MODEL,
            "choices": [choice],
            "usage": usage,
        }
    )


def images_request() -> bytes:
    doc = {
        "model": IMAGES_MODEL,
        "prompt": "A simple black-and-white line drawing of a cat playing with yarn",
        "size": "1024x1024",
        "quality": "low",
    }
    return compact(doc)


def images_response() -> bytes:
    """gpt-image's answer: one base64 image (~64 KB) and its token usage."""
    image = base64.b64encode(bytes(range(256)) * (IMAGE_BYTES // 256)).decode()
    return compact({"created": CREATED, "data": [{"b64_json": image}], "usage": IMAGES_USAGE})
