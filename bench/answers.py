"""What a correct answer to each bench scenario contains: checked on every system's answers
before a scenario is measured (peers re-serialize, the gateway translates Bedrock's answer).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from bench.payloads import (
    ANSWER,
    EMBED_DIMENSIONS,
    EMBED_INPUTS,
    EMBED_USAGE,
    IMAGE_BYTES,
    IMAGES_USAGE,
    vector,
)
from bench.scenarios import Scenario


def sse_data(body: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order."""
    out = []
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:
            out.append(b"\n".join(data))
    return out


def _chat_problems(doc: Any) -> list[str]:
    try:
        content = doc["choices"][0]["message"]["content"]
        usage = doc["usage"]
    except (KeyError, IndexError, TypeError):
        return ["not a chat.completion with usage"]
    problems = []
    if content != ANSWER:
        problems.append(f"content {content!r}")
    if (usage.get("prompt_tokens"), usage.get("completion_tokens")) != (212, 36):
        problems.append(f"usage {usage!r}")
    return problems


def _stream_problems(body: bytes) -> list[str]:
    events = sse_data(body)
    if not events or events[-1] != b"[DONE]":
        return [f"no data: [DONE] at the end ({len(events)} events)"]
    text, usage = "", None
    try:
        for data in events[:-1]:
            doc = json.loads(data)
            for choice in doc.get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
            usage = doc.get("usage") or usage
    except (ValueError, AttributeError, TypeError):
        return ["an event is not a chat.completion.chunk"]
    problems = []
    if text.strip() != ANSWER:
        problems.append(f"streamed text {text!r}")
    if not isinstance(usage, dict) or usage.get("completion_tokens") != 36:
        problems.append(f"usage {usage!r}")
    return problems


def _completions_problems(doc: Any) -> list[str]:
    try:
        text = doc["choices"][0]["text"]
        usage = doc["usage"]
    except (KeyError, IndexError, TypeError):
        return ["not a text_completion with usage"]
    problems = []
    if text != ANSWER:
        problems.append(f"text {text!r}")
    if (usage.get("prompt_tokens"), usage.get("completion_tokens")) != (212, 36):
        problems.append(f"usage {usage!r}")
    return problems


def _images_problems(doc: Any) -> list[str]:
    try:
        image = base64.b64decode(doc["data"][0]["b64_json"])
        usage = doc["usage"]
    except (KeyError, IndexError, TypeError, ValueError):
        return ["not an image generation with usage"]
    problems = []
    if len(doc["data"]) != 1 or len(image) != IMAGE_BYTES:
        problems.append(f"{len(doc['data'])} images, the first of {len(image)} bytes")
    if usage != IMAGES_USAGE:
        problems.append(f"usage {usage!r}")
    return problems


def _responses_problems(doc: Any) -> list[str]:
    try:
        text = doc["output"][0]["content"][0]["text"]
        usage = doc["usage"]
    except (KeyError, IndexError, TypeError):
        return ["not a Responses answer with usage"]
    problems = []
    if text != ANSWER:
        problems.append(f"text {text!r}")
    if (usage.get("input_tokens"), usage.get("output_tokens")) != (212, 36):
        problems.append(f"usage {usage!r}")
    return problems


def _responses_stream_problems(body: bytes) -> list[str]:
    try:
        events = [json.loads(data) for data in sse_data(body)]
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        last = events[-1]
    except (ValueError, KeyError, IndexError, TypeError):
        return ["not a stream of Responses events"]
    if last.get("type") != "response.completed":
        return [f"last event {last.get('type')!r}"]
    problems = []
    if text.strip() != ANSWER:
        problems.append(f"streamed text {text!r}")
    if last["response"].get("usage", {}).get("output_tokens") != 36:
        problems.append(f"usage {last['response'].get('usage')!r}")
    return problems


def _embeddings_problems(doc: Any) -> list[str]:
    try:
        vectors = [item["embedding"] for item in doc["data"]]
        usage = doc["usage"]
    except (KeyError, TypeError):
        return ["not an embeddings list with usage"]
    problems = []
    if len(vectors) != EMBED_INPUTS or any(len(v) != EMBED_DIMENSIONS for v in vectors):
        problems.append(f"{len(vectors)} vectors, sizes {sorted({len(v) for v in vectors})}")
    elif any(abs(a - b) > 1e-6 for a, b in zip(vectors[3], vector(4), strict=True)):
        problems.append("vector 3 differs from the upstream's")
    if usage.get("prompt_tokens") != EMBED_USAGE["prompt_tokens"]:
        problems.append(f"usage {usage!r}")
    return problems


def answer_problems(scenario: Scenario, body: bytes) -> list[str]:
    """What is wrong with an OpenAI answer to ``scenario`` that need not be byte-exact.

    Peers re-serialize what the upstream sent (field order, added fields, re-chunked streams)
    and the gateway translates Bedrock's answer: what must survive is the text (or vectors)
    and the token usage.
    """
    if scenario.kind == "responses-stream":
        return _responses_stream_problems(body)
    if scenario.streaming:
        return _stream_problems(body)
    try:
        doc = json.loads(body)
    except ValueError:
        return [f"not JSON: {body[:200]!r}"]
    if scenario.kind == "embeddings":
        return _embeddings_problems(doc)
    if scenario.kind == "responses":
        return _responses_problems(doc)
    if scenario.kind == "completions":
        return _completions_problems(doc)
    if scenario.kind == "images":
        return _images_problems(doc)
    return _chat_problems(doc)
