"""What the benchmark sends and what the fake upstreams answer.

Bodies are fixed and deterministic so two runs, or two commits, measure the same bytes. They
look like real traffic: a chat request of about 1 KB, a chat.completion of about 500 B with
usage, a stream of 20 chat.completion.chunk events ending in ``data: [DONE]``, an embeddings
batch of 16 inputs answered with 16 vectors of 256 floats, the Bedrock Converse answer the
gateway translates a chat request into, and the same prompt and answer in the Responses API's
shapes (a document, and a stream of 20 typed events). What a correct answer contains:
:mod:`bench.answers`.
"""

from __future__ import annotations

import base64
import itertools
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

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


ANSWER = (
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
                    "message": {"role": "assistant", "content": ANSWER, "refusal": None},
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
    chunks.append(_chunk([], _USAGE))
    assert len(chunks) == STREAM_CHUNKS
    events = [b"data: " + c + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
    return b"".join(events)


def responses_request(model: str, stream: bool) -> bytes:
    """The chat request's prompt as a Responses request (instructions and one user input)."""
    doc: dict[str, Any] = {
        "model": model,
        "instructions": _SYSTEM_PROMPT,
        "input": [{"role": "user", "content": _USER_PROMPT}],
        "temperature": 0.2,
        "max_output_tokens": 256,
        "store": False,
    }
    if stream:
        doc["stream"] = True
    return _compact(doc)


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
        "created_at": _CREATED,
        "status": "completed" if done else "in_progress",
        "model": model,
        "output": [message] if done else [],
        "usage": _RESPONSES_USAGE if done else None,
    }


def responses_response() -> bytes:
    """A non-streaming Responses answer with usage (~700 B)."""
    return _compact(_response(RESPONSES_MODEL, done=True))


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
        + _compact({**e, "sequence_number": n})
        + b"\n\n"
        for n, e in enumerate(events)
    )


def completions_request() -> bytes:
    """The chat request's prompt as one legacy text completion prompt."""
    prompt = f"{_SYSTEM_PROMPT}\n\nCustomer: {_USER_PROMPT}\nAgent:"
    doc = {"model": COMPLETIONS_MODEL, "prompt": prompt, "max_tokens": 256, "temperature": 0.2}
    return _compact(doc)


def completions_response() -> bytes:
    """A text_completion with usage (~450 B)."""
    usage = {k: _USAGE[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    choice = {"text": ANSWER, "index": 0, "logprobs": None, "finish_reason": "stop"}
    return _compact(
        {
            "id": "cmpl-bench0001",
            "object": "text_completion",
            "created": _CREATED,
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
    return _compact(doc)


def images_response() -> bytes:
    """gpt-image's answer: one base64 image (~64 KB) and its token usage."""
    image = base64.b64encode(bytes(range(256)) * (IMAGE_BYTES // 256)).decode()
    return _compact({"created": _CREATED, "data": [{"b64_json": image}], "usage": IMAGES_USAGE})


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
    return _compact(
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
    return _compact(
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
    return _compact(
        {
            "messages": [{"role": "user", "content": [{"text": _USER_PROMPT}]}],
            "system": [{"text": _SYSTEM_PROMPT}],
            "inferenceConfig": {"maxTokens": 256, "temperature": 0.2},
        }
    )


def converse_response() -> bytes:
    """Bedrock's Converse answer: the same text and token counts as :func:`chat_response`."""
    return _compact(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": ANSWER}]}},
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": _USAGE["prompt_tokens"],
                "outputTokens": _USAGE["completion_tokens"],
                "totalTokens": _USAGE["total_tokens"],
            },
            "metrics": {"latencyMs": 412},
        }
    )


def bedrock_path() -> str:
    """The Converse path the gateway signs and sends: the model id URL-encoded (``:``)."""
    return f"{BEDROCK_PREFIX}/{urllib.parse.quote(BEDROCK_MODEL_ID, safe='')}/converse"


Kind = Literal[
    "chat", "stream", "embeddings", "responses", "responses-stream", "completions", "images"
]
_PATHS: dict[Kind, str] = {
    "chat": CHAT_PATH,
    "stream": CHAT_PATH,
    "embeddings": EMBEDDINGS_PATH,
    "responses": RESPONSES_PATH,
    "responses-stream": RESPONSES_PATH,
    "completions": COMPLETIONS_PATH,
    "images": IMAGES_PATH,
}
Upstream = Literal["envoy", "paced", "hold"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One kind of request: what the client sends, and what it must get back."""

    key: str  # what --scenarios selects
    name: str  # what the report shows
    kind: Kind
    model: str
    upstream_prefix: str
    request: bytes  # the OpenAI request every system but bare Envoy (bedrock) gets
    response: bytes  # what the upstream answers
    content_type: str
    upstream: Upstream = "envoy"  # Envoy direct_response, or the Python paced upstream
    bedrock: bool = False  # the gateway translates it to Converse; peers do not run it
    bare_request: bytes | None = None  # bare Envoy's body when it is not ``request``

    @property
    def client_path(self) -> str:
        return "/v1" + _PATHS[self.kind]

    @property
    def upstream_path(self) -> str:
        if self.bedrock:
            return bedrock_path()
        return self.upstream_prefix + _PATHS[self.kind]

    @property
    def streaming(self) -> bool:
        return self.kind in ("stream", "responses-stream")

    @property
    def peers(self) -> bool:
        """LiteLLM and Portkey run it: the chat and embeddings pass-through scenarios (the
        Responses API is measured against bare Envoy and the floor only)."""
        return not self.bedrock and self.kind in ("chat", "stream", "embeddings")


SCENARIO_KEYS = (
    "chat",
    "stream",
    "embeddings",
    "bedrock",
    "paced",
    "responses",
    "rstream",
    "completions",
    "images",
)


def all_scenarios() -> list[Scenario]:
    """Every measured scenario, in report order."""
    stream = f"stream-{STREAM_CHUNKS}"
    return [
        Scenario(
            key="chat",
            name="chat",
            kind="chat",
            model=CHAT_MODEL,
            upstream_prefix=CHAT_PREFIX,
            request=chat_request(CHAT_MODEL, stream=False),
            response=chat_response(),
            content_type="application/json",
        ),
        Scenario(
            key="stream",
            name=stream,
            kind="stream",
            model=STREAM_MODEL,
            upstream_prefix=STREAM_PREFIX,
            request=chat_request(STREAM_MODEL, stream=True),
            response=stream_response(),
            content_type="text/event-stream",
        ),
        Scenario(
            key="embeddings",
            name=f"embeddings x{EMBED_INPUTS}",
            kind="embeddings",
            model=EMBED_MODEL,
            upstream_prefix=EMBED_PREFIX,
            request=embeddings_request(),
            response=embeddings_response(),
            content_type="application/json",
        ),
        Scenario(
            key="bedrock",
            name="chat -> bedrock",
            kind="chat",
            model=BEDROCK_MODEL,
            upstream_prefix=BEDROCK_PREFIX,
            request=chat_request(BEDROCK_MODEL, stream=False),
            response=converse_response(),
            content_type="application/json",
            bedrock=True,
            bare_request=converse_request(),
        ),
        Scenario(
            key="paced",
            name=f"{stream} paced",
            kind="stream",
            model=PACED_MODEL,
            upstream_prefix=PACED_PREFIX,
            request=chat_request(PACED_MODEL, stream=True),
            response=stream_response(),
            content_type="text/event-stream",
            upstream="paced",
        ),
        Scenario(
            key="responses",
            name="responses",
            kind="responses",
            model=RESPONSES_MODEL,
            upstream_prefix=RESPONSES_PREFIX,
            request=responses_request(RESPONSES_MODEL, stream=False),
            response=responses_response(),
            content_type="application/json",
        ),
        Scenario(
            key="rstream",
            name=f"responses stream-{STREAM_CHUNKS}",
            kind="responses-stream",
            model=RESPONSES_STREAM_MODEL,
            upstream_prefix=RESPONSES_STREAM_PREFIX,
            request=responses_request(RESPONSES_STREAM_MODEL, stream=True),
            response=responses_stream_response(),
            content_type="text/event-stream",
        ),
        Scenario(
            key="completions",
            name="completions",
            kind="completions",
            model=COMPLETIONS_MODEL,
            upstream_prefix=COMPLETIONS_PREFIX,
            request=completions_request(),
            response=completions_response(),
            content_type="application/json",
        ),
        Scenario(
            key="images",
            name="image generation",
            kind="images",
            model=IMAGES_MODEL,
            upstream_prefix=IMAGES_PREFIX,
            request=images_request(),
            response=images_response(),
            content_type="application/json",
        ),
    ]


def hold_scenario() -> Scenario:
    """The stream the 1,000-open-streams test holds open: a slow paced upstream."""
    return Scenario(
        key="hold",
        name="held streams",
        kind="stream",
        model=HOLD_MODEL,
        upstream_prefix=HOLD_PREFIX,
        request=chat_request(HOLD_MODEL, stream=True),
        response=stream_response(),
        content_type="text/event-stream",
        upstream="hold",
    )
