"""What the benchmark sends and what the fake upstreams answer.

Bodies are fixed and deterministic so two runs, or two commits, measure the same bytes. They
look like real traffic: a chat request of about 1 KB, a chat.completion of about 500 B with
usage, a stream of 20 chat.completion.chunk events ending in ``data: [DONE]``, an embeddings
batch of 16 inputs answered with 16 vectors of 256 floats, the Bedrock Converse answer the
gateway translates a chat request into. The other APIs' bodies: :mod:`bench.api_payloads`; the
scenarios made of them: :mod:`bench.scenarios`; what a correct answer contains:
:mod:`bench.answers`.
"""

from __future__ import annotations

import itertools
import json
import urllib.parse
from typing import Any

CHAT_MODEL = "bench-chat"
STREAM_MODEL = "bench-stream"
EMBED_MODEL = "bench-embed"
BEDROCK_MODEL = "bench-bedrock"
PACED_MODEL = "bench-paced"
HOLD_MODEL = "bench-hold"
RESPONSES_MODEL = "bench-responses"
RESPONSES_STREAM_MODEL = "bench-responses-stream"
COMPLETIONS_MODEL = "bench-completions"
IMAGES_MODEL = "bench-images"
# The upstream path prefixes, one per model: the gateway rewrites /v1 to the backend's prefix,
# so the upstream answering on distinct prefixes proves the rewrite happened.
CHAT_PREFIX = "/v1"
STREAM_PREFIX = "/stream/v1"
EMBED_PREFIX = "/embed/v1"
PACED_PREFIX = "/paced/v1"
HOLD_PREFIX = "/hold/v1"
RESPONSES_PREFIX = "/responses/v1"
RESPONSES_STREAM_PREFIX = "/rstream/v1"
COMPLETIONS_PREFIX = "/completions/v1"
IMAGES_PREFIX = "/images/v1"
BEDROCK_PREFIX = "/model"
CHAT_PATH = "/chat/completions"
EMBEDDINGS_PATH = "/embeddings"
RESPONSES_PATH = "/responses"
COMPLETIONS_PATH = "/completions"
IMAGES_PATH = "/images/generations"
IMAGE_BYTES = 48 * 1024  # one small image, base64 in the answer
IMAGES_USAGE = {"input_tokens": 9, "output_tokens": 272, "total_tokens": 281}
STREAM_CHUNKS = 20
EMBED_INPUTS = 16
EMBED_DIMENSIONS = 256
# The Bedrock model the gateway translates to, and the (fake) credentials it signs with. The
# static upstream checks that a SigV4 Authorization header for this key id arrived, not the
# signature itself: verifying it would make the upstream the bottleneck (the test suite's
# tests/fakes/bedrock.py verifies every signature; tests/integration/test_bedrock.py runs it).
BEDROCK_MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
BEDROCK_ACCESS_KEY = "AKIDBENCHBEDROCK"
BEDROCK_REGION = "us-east-1"
CREATED = 1735689600

SYSTEM_PROMPT = (
    "You are a concise support assistant for an online bookshop. Answer in plain English, at "
    "most three sentences, and never invent order numbers, prices or delivery dates. If the "
    "customer asks about something you cannot see in the conversation, say so and suggest the "
    "order status page or the contact form."
)
USER_PROMPT = (
    "Hello! I ordered two paperbacks last Tuesday, a cookbook and a travel guide, and the "
    "tracking page has said 'label created' for four days now. I paid for standard shipping. "
    "Is this normal, and is there anything I should do before I contact the carrier? I will be "
    "away next week, so I would also like to know whether a neighbour can sign for the parcel "
    "or whether I should ask for it to be held at a pickup point instead. The order was placed "
    "with my usual account and the confirmation e-mail arrived at once. Thank you very much."
)


def compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def chat_request(model: str, stream: bool) -> bytes:
    """A ~1 KB chat completion request, the same bytes for bare Envoy and the gateway."""
    doc: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT},
        ],
        "temperature": 0.2,
        "max_tokens": 256,
        "user": "bench-user-0001",
    }
    if stream:
        doc["stream"] = True
        doc["stream_options"] = {"include_usage": True}
    return compact(doc)


ANSWER = (
    "Four days at 'label created' is common with standard shipping. A neighbour can sign for "
    "the parcel, or the carrier can hold it at a pickup point."
)
CHAT_USAGE = {
    "prompt_tokens": 212,
    "completion_tokens": 36,
    "total_tokens": 248,
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def chat_response() -> bytes:
    """A non-streaming chat.completion with usage (~600 B)."""
    return compact(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": CREATED,
            "model": CHAT_MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": CHAT_USAGE,
        }
    )


def _chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> bytes:
    return compact(
        {
            "id": "chatcmpl-bench0002",
            "object": "chat.completion.chunk",
            "created": CREATED,
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
    words = ANSWER.split(" ")
    pieces = STREAM_CHUNKS - 3
    # Spread the words evenly over the text chunks, a word or two each, like token deltas.
    bounds = [i * len(words) // pieces for i in range(pieces + 1)]
    texts = [" ".join(words[a:b]) + " " for a, b in itertools.pairwise(bounds)]

    def delta(d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

    chunks = [_chunk(delta({"role": "assistant", "content": ""}), None)]
    chunks += [_chunk(delta({"content": t}), None) for t in texts]
    chunks.append(_chunk(delta({}, "stop"), None))
    chunks.append(_chunk([], CHAT_USAGE))
    assert len(chunks) == STREAM_CHUNKS
    events = [b"data: " + c + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
    return b"".join(events)


_EMBED_TEXTS = (
    "How do I return a damaged paperback?",
    "Standard shipping takes three to five working days.",
    "Can a neighbour sign for my parcel?",
    "The tracking page says label created.",
    "Gift cards cannot be exchanged for cash.",
    "Where is my order confirmation e-mail?",
    "Pickup points hold parcels for seven days.",
    "Cookbooks with spiral bindings ship flat.",
    "How do I change my delivery address?",
    "Travel guides are updated every spring.",
    "Orders over forty euros ship for free.",
    "Can I cancel an order that has shipped?",
    "E-books are delivered to your library at once.",
    "Our support team answers within one day.",
    "Pre-orders are charged when they ship.",
    "Which carriers deliver on Saturdays?",
)


def embeddings_request() -> bytes:
    """A batch of 16 short texts, floats (the OpenAI SDK sends base64 unless told otherwise).

    No ``dimensions``: LiteLLM refuses it for a model it does not know as text-embedding-3.
    """
    assert len(_EMBED_TEXTS) == EMBED_INPUTS
    return compact(
        {
            "model": EMBED_MODEL,
            "input": list(_EMBED_TEXTS),
            "encoding_format": "float",
            "user": "bench-user-0001",
        }
    )


def vector(seed: int) -> list[float]:
    # A small linear congruential generator: the same floats on every run, printed at full
    # precision as OpenAI's are (about 20 characters each).
    state = seed * 2654435761 % 2**32 or 1
    out = []
    for _ in range(EMBED_DIMENSIONS):
        state = (1103515245 * state + 12345) % 2**31
        out.append((state / 2**31 - 0.5) * 0.1)
    return out


EMBED_USAGE = {"prompt_tokens": 134, "total_tokens": 134}


def embeddings_response() -> bytes:
    """16 embedding objects of 256 floats with usage (~80 KB), as OpenAI answers."""
    return compact(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector(i + 1)}
                for i in range(EMBED_INPUTS)
            ],
            "model": EMBED_MODEL,
            "usage": EMBED_USAGE,
        }
    )


def converse_request() -> bytes:
    """The Converse body equivalent to :func:`chat_request`: what bare Envoy is sent in the
    Bedrock scenario (the gateway builds its own from the OpenAI request)."""
    return compact(
        {
            "messages": [{"role": "user", "content": [{"text": USER_PROMPT}]}],
            "system": [{"text": SYSTEM_PROMPT}],
            "inferenceConfig": {"maxTokens": 256, "temperature": 0.2},
        }
    )


def converse_response() -> bytes:
    """Bedrock's Converse answer: the same text and token counts as :func:`chat_response`."""
    return compact(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": ANSWER}]}},
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": CHAT_USAGE["prompt_tokens"],
                "outputTokens": CHAT_USAGE["completion_tokens"],
                "totalTokens": CHAT_USAGE["total_tokens"],
            },
            "metrics": {"latencyMs": 412},
        }
    )


def bedrock_path() -> str:
    """The Converse path the gateway signs and sends: the model id URL-encoded (``:``)."""
    return f"{BEDROCK_PREFIX}/{urllib.parse.quote(BEDROCK_MODEL_ID, safe='')}/converse"
