"""What the benchmark sends and what the fake upstream answers.

Bodies are fixed and deterministic so two runs, or two commits, measure the same bytes. They
look like real OpenAI traffic: a chat request of about 1 KB, a chat.completion of about 500 B
with usage, and a stream of 20 chat.completion.chunk events ending in ``data: [DONE]``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

CHAT_MODEL = "bench-chat"
STREAM_MODEL = "bench-stream"
# The upstream path prefixes, one per model: the gateway rewrites /v1 to the backend's prefix,
# so the upstream answering on distinct prefixes proves the rewrite happened.
CHAT_PREFIX = "/v1"
STREAM_PREFIX = "/stream/v1"
PACED_MODEL = "bench-paced"
PACED_PREFIX = "/paced/v1"
CHAT_PATH = "/chat/completions"
STREAM_CHUNKS = 20
_CREATED = 1735689600

_SYSTEM_PROMPT = (
    "You are a concise support assistant for an online bookshop. Answer in plain English, at "
    "most three sentences, and never invent order numbers, prices or delivery dates. If the "
    "customer asks about something you cannot see in the conversation, say so and suggest the "
    "order status page or the contact form."
)
_USER_PROMPT = (
    "Hello! I ordered two paperbacks last Tuesday, a cookbook and a travel guide, and the "
    "tracking page has said 'label created' for four days now. I paid for standard shipping. "
    "Is this normal, and is there anything I should do before I contact the carrier? I will be "
    "away next week, so I would also like to know whether a neighbour can sign for the parcel "
    "or whether I should ask for it to be held at a pickup point instead. The order was placed "
    "with my usual account and the confirmation e-mail arrived at once. Thank you very much."
)


def _compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def chat_request(model: str, stream: bool) -> bytes:
    """A ~1 KB chat completion request, the same bytes for bare Envoy and the gateway."""
    doc: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": _SYSTEM_PROMPT},
            {"role": "user", "content": _USER_PROMPT},
        ],
        "temperature": 0.2,
        "max_tokens": 256,
        "user": "bench-user-0001",
    }
    if stream:
        doc["stream"] = True
        doc["stream_options"] = {"include_usage": True}
    return _compact(doc)


_ANSWER = (
    "Four days at 'label created' is common with standard shipping. A neighbour can sign for "
    "the parcel, or the carrier can hold it at a pickup point."
)
_USAGE = {
    "prompt_tokens": 212,
    "completion_tokens": 36,
    "total_tokens": 248,
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def chat_response() -> bytes:
    """A non-streaming chat.completion with usage (~600 B)."""
    return _compact(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": _CREATED,
            "model": CHAT_MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _ANSWER, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    )


def _chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> bytes:
    return _compact(
        {
            "id": "chatcmpl-bench0002",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": STREAM_MODEL,
            "system_fingerprint": "fp_bench",
            "choices": choices,
            "usage": usage,
        }
    )


def stream_response() -> bytes:
    """20 ``data:`` chunk events then ``data: [DONE]``, as OpenAI sends with include_usage.

    Chunk 1 carries the role, chunks 2..18 the text, chunk 19 the finish reason and chunk 20 the
    usage (with ``choices: []``).
    """
    words = _ANSWER.split(" ")
    pieces = STREAM_CHUNKS - 3
    # Spread the words evenly over the text chunks, a word or two each, like token deltas.
    bounds = [i * len(words) // pieces for i in range(pieces + 1)]
    texts = [" ".join(words[a:b]) + " " for a, b in itertools.pairwise(bounds)]

    def delta(d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

    chunks = [_chunk(delta({"role": "assistant", "content": ""}), None)]
    chunks += [_chunk(delta({"content": t}), None) for t in texts]
    chunks.append(_chunk(delta({}, "stop"), None))
    chunks.append(_chunk([], _USAGE))
    assert len(chunks) == STREAM_CHUNKS
    events = [b"data: " + c + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
    return b"".join(events)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One kind of request: what the client sends, and what it must get back."""

    name: str
    model: str
    upstream_prefix: str
    request: bytes
    response: bytes
    content_type: str
    paced: bool = False  # served by the paced SSE upstream rather than Envoy


def scenarios(paced: bool) -> list[Scenario]:
    items = [
        Scenario(
            name="chat",
            model=CHAT_MODEL,
            upstream_prefix=CHAT_PREFIX,
            request=chat_request(CHAT_MODEL, stream=False),
            response=chat_response(),
            content_type="application/json",
        ),
        Scenario(
            name=f"stream-{STREAM_CHUNKS}",
            model=STREAM_MODEL,
            upstream_prefix=STREAM_PREFIX,
            request=chat_request(STREAM_MODEL, stream=True),
            response=stream_response(),
            content_type="text/event-stream",
        ),
    ]
    if paced:
        items.append(
            Scenario(
                name=f"stream-{STREAM_CHUNKS} paced",
                model=PACED_MODEL,
                upstream_prefix=PACED_PREFIX,
                request=chat_request(PACED_MODEL, stream=True),
                response=stream_response(),
                content_type="text/event-stream",
                paced=True,
            )
        )
    return items
