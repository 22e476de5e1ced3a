"""The response translators: Bedrock Converse, ConverseStream, InvokeModel; OpenAI pass-through.

The provider is the attacker here: any status, any body, any event-stream frames in any
chunking. Invariants: nothing raises but the 502 ``bad_upstream_response`` that replaces an
unreadable buffered 2xx answer; a buffered answer is otherwise one JSON document; a stream is
made of SSE events whose data is JSON or ``[DONE]``; usage, when reported, is made of integers.
"""

from __future__ import annotations

import atheris
import orjson
from _common import argv, guard, json_object

with atheris.instrument_imports():
    from extproc.errors import GatewayError
    from extproc.eventstream import encode_message
    from extproc.translate import RequestContext, Translator, UpstreamReply
    from extproc.translate.bedrock.chat import BedrockChat
    from extproc.translate.bedrock.embeddings import BedrockEmbeddings
    from extproc.translate.openai import PassThrough

EVENTS = [
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
    "somethingNew",
]
EXCEPTIONS = ["throttlingException", "modelStreamErrorException", "validationException", ""]
STATUSES = [200, 200, 200, 400, 403, 404, 408, 424, 429, 500, 503]
ERROR_TYPES = ["", "ValidationException", "ThrottlingException", "ModelErrorException:x"]
REQUESTS: list[dict[str, object]] = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}},
    {
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"},
    },
    {
        "messages": [{"role": "user", "content": "hi"}],
        "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    },
]


def _context(endpoint: str, stream: bool, model: str = "m") -> RequestContext:
    return RequestContext(
        endpoint="chat" if endpoint == "chat" else "embeddings",
        route_model="client-model",
        upstream_model=model,
        body_model="client-model",
        path="/v1/chat/completions" if endpoint == "chat" else "/v1/embeddings",
        stream=stream,
    )


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _feed(translator: Translator, parts: list[bytes]) -> bytes:
    return b"".join(translator.response_body(p, i == len(parts) - 1) for i, p in enumerate(parts))


def _feed_buffered(translator: Translator, body: bytes, status: int) -> bytes | None:
    """A buffered answer (one chunk, as Envoy sends it); None when it became a 502."""
    try:
        return translator.response_body(body, True)
    except GatewayError as err:
        if not 200 <= status < 300 or (err.status, err.code) != (502, "bad_upstream_response"):
            raise
        return None


def _check_sse(out: bytes) -> None:
    for event in out.split(b"\n\n"):
        if not event:
            continue
        if not event.startswith(b"data: "):
            raise AssertionError(f"not an SSE data event: {event[:80]!r}")
        payload = event[6:]
        if payload != b"[DONE]":
            orjson.loads(payload)


def _check_usage(translator: object) -> None:
    usage = getattr(translator, "usage", None)
    if usage is None:
        return
    for name in ("input_tokens", "output_tokens", "total_tokens", "cached_input_tokens"):
        if not isinstance(getattr(usage, name), int):
            raise AssertionError(f"usage.{name} is not an int")


def _frames(fdp: atheris.FuzzedDataProvider) -> bytes:
    """Well-framed events (so the translator, not the decoder, is exercised) and a tail."""
    out = b""
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        kind = fdp.ConsumeIntInRange(0, 9)
        if kind == 0:
            exception = EXCEPTIONS[fdp.ConsumeIntInRange(0, len(EXCEPTIONS) - 1)]
            headers = {":message-type": "exception", ":exception-type": exception}
        elif kind == 1:
            headers = {":message-type": "error", ":error-code": "x", ":error-message": "y"}
        else:
            event = EVENTS[fdp.ConsumeIntInRange(0, len(EVENTS) - 1)]
            headers = {":message-type": "event", ":event-type": event}
        payload = json_object(fdp) if fdp.ConsumeBool() else fdp.ConsumeBytes(64)
        out += encode_message(headers, payload)
    if fdp.ConsumeIntInRange(0, 7) == 0:  # a broken tail: bad CRC, truncation, garbage
        out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    return out


def _bedrock_chat(head: bytes, rest: bytes) -> None:
    stream = bool(head[1] & 1)
    request = REQUESTS[(head[1] >> 1) % len(REQUESTS)]
    chat = BedrockChat(_context("chat", stream))
    chat.request(orjson.dumps({**request, "stream": stream}))
    status = STATUSES[head[2] % len(STATUSES)]
    kind = "application/vnd.amazon.eventstream" if stream else "application/json"
    headers = {"content-type": kind, "x-amzn-errortype": ERROR_TYPES[head[3] % len(ERROR_TYPES)]}
    chat.response_headers(status, headers)
    chat.response_body_mode(status, headers)
    structured = head[4] & 1
    if structured:
        fdp = atheris.FuzzedDataProvider(rest)
        body = _frames(fdp) if stream else json_object(fdp)
    else:
        body = rest
    if stream and 200 <= status < 300:
        _check_sse(_feed(chat, _split(body, 1 + head[5] * 7)))
    else:
        out = _feed_buffered(chat, body, status)
        if out is not None:
            orjson.loads(out)
    _check_usage(chat)
    chat.output_tokens("m")


def _bedrock_embeddings(head: bytes, rest: bytes) -> None:
    model = "amazon.titan-embed-text-v2:0" if head[1] & 1 else "cohere.embed-v4:0"
    embeddings = BedrockEmbeddings(_context("embeddings", False, model))
    embeddings.request(orjson.dumps({"input": "hi", "encoding_format": "base64"}))
    if head[4] & 1:
        fdp = atheris.FuzzedDataProvider(rest)
        bodies = [json_object(fdp) for _ in range(1 + head[5] % 3)]
    else:
        bodies = rest.split(b"\n--\n")[:3]
    replies = [
        UpstreamReply(
            STATUSES[(head[2] + i) % len(STATUSES)],
            {"x-amzn-bedrock-input-token-count": str(head[3] + i - 1)},
            body,
        )
        for i, body in enumerate(bodies)
    ]
    status, answer = embeddings.merge(replies)
    if not 200 <= status < 600:
        raise AssertionError(f"merge answered {status}")
    orjson.loads(answer)
    first = replies[0]
    embeddings.response_headers(first.status, first.headers)
    out = _feed_buffered(embeddings, first.body, first.status)
    if out is not None:
        orjson.loads(out)
    _check_usage(embeddings)


def _pass_through(head: bytes, rest: bytes) -> None:
    ctx = _context("chat", bool(head[1] & 1))
    ctx.include_usage = bool(head[1] & 2)
    translator = PassThrough(ctx, "/v1/chat/completions")
    status = STATUSES[head[2] % len(STATUSES)]
    kind = "text/event-stream" if head[1] & 4 else "application/json"
    translator.response_headers(status, {"content-type": kind})
    translator.response_body_mode(status, {"content-type": kind})
    body = json_object(atheris.FuzzedDataProvider(rest)) if head[4] & 1 else rest
    if kind == "application/json":
        out = _feed_buffered(translator, body, status)
        if out is not None and out != body:
            raise AssertionError("a JSON answer was changed")
    else:
        _feed(translator, _split(body, 1 + head[5] * 7))
    _check_usage(translator)
    translator.output_tokens("m")


def check(data: bytes) -> None:
    # Six selector bytes (translator, variant, status, error type, body mode, chunk size);
    # the rest is the provider's body as is, or the seed of generated documents and frames.
    head = data[:6].ljust(6, b"\0")
    rest = data[6:]
    which = head[0] % 3
    if which == 0:
        _bedrock_chat(head, rest)
    elif which == 1:
        _bedrock_embeddings(head, rest)
    else:
        _pass_through(head, rest)


def main() -> None:
    atheris.Setup(argv(), guard("response", check))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
