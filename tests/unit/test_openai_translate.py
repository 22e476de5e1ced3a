"""The OpenAI pass-through translator's response side: what it forwards, what fails an attempt.

The body passes untouched, except a 2xx stream the provider closes before ``data: [DONE]`` (a
last error event is added) and a 2xx buffered body that is not a JSON object (a 502 replaces
it). ``failure`` says which, for telemetry; ``complete`` says the answer was seen to its end.
"""

from __future__ import annotations

import orjson
import pytest

from extproc.errors import GatewayError
from extproc.translate import RequestContext
from extproc.translate.openai import PassThrough
from extproc.usage import MAX_EVENT_BYTES
from tests.fakes.openai import chat_reply, completion_chunks, sse_events

JSON = {"content-type": "application/json"}
SSE = {"content-type": "text/event-stream"}
COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)
EMBEDDING = orjson.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
)


def pass_through(stream: bool = False, endpoint: str = "chat") -> PassThrough:
    ctx = RequestContext(
        "chat" if endpoint == "chat" else "embeddings",
        "m",
        "m",
        "m",
        "/v1/chat/completions" if endpoint == "chat" else "/v1/embeddings",
        stream=stream,
        include_usage=stream,
    )
    return PassThrough(ctx, "/v1/chat/completions")


def buffered(t: PassThrough, status: int, body: bytes) -> bytes:
    t.response_headers(status, JSON)
    assert t.response_body_mode(status, JSON) == "buffered"
    return t.response_body(body, True)


def streamed(t: PassThrough, status: int, parts: list[bytes]) -> bytes:
    t.response_headers(status, SSE)
    assert t.response_body_mode(status, SSE) == "streamed"
    return b"".join(t.response_body(p, i == len(parts) - 1) for i, p in enumerate(parts))


def stream_of(text: str) -> list[bytes]:
    reply = chat_reply({"model": "m", "messages": [{"role": "user", "content": text}]})
    return sse_events(completion_chunks(reply, include_usage=True))


@pytest.mark.parametrize(("endpoint", "body"), [("chat", COMPLETION), ("embeddings", EMBEDDING)])
def test_a_json_answer_passes_untouched(endpoint: str, body: bytes) -> None:
    t = pass_through(endpoint=endpoint)
    assert not t.complete and t.failure is None
    assert buffered(t, 200, body) is body
    assert t.usage is not None and t.usage.total_tokens > 0
    assert t.complete and t.failure is None


@pytest.mark.parametrize(
    "body",
    [COMPLETION[: len(COMPLETION) // 2], b"", b"<html>502</html>", b"[1, 2]", b'"text"'],
    ids=["truncated", "empty", "html", "array", "string"],
)
def test_an_unreadable_2xx_body_is_a_502(body: bytes) -> None:
    t = pass_through()
    with pytest.raises(GatewayError) as raised:
        buffered(t, 200, body)
    err = raised.value
    assert (err.status, err.type, err.code) == (502, "upstream_error", "bad_upstream_response")
    error = orjson.loads(err.body())["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert t.failure == "bad_upstream_response"


@pytest.mark.parametrize("status", [400, 404, 429, 500, 502, 503])
@pytest.mark.parametrize("body", [b"<html>Bad Gateway</html>", b'{"error": {"message": "no"}}'])
def test_provider_errors_pass_through_as_they_are(status: int, body: bytes) -> None:
    t = pass_through()
    assert buffered(t, status, body) is body
    assert t.failure is None  # the status tells what happened


def test_a_complete_stream_is_complete() -> None:
    t = pass_through(stream=True)
    parts = stream_of("a b c")
    assert streamed(t, 200, parts) == b"".join(parts)
    assert t.complete and t.failure is None and t.usage is not None


def test_a_stream_cut_before_done_fails_with_an_error_event() -> None:
    t = pass_through(stream=True)
    parts = stream_of("a b c")[:2]
    out = streamed(t, 200, parts)
    last = orjson.loads(out.rstrip(b"\n").rpartition(b"\n\n")[2][6:])
    assert last["error"]["code"] == "stream_truncated"
    assert t.failure == "stream_truncated" and not t.complete


def test_a_stream_under_way_has_no_failure_yet() -> None:
    t = pass_through(stream=True)
    t.response_headers(200, SSE)
    t.response_body_mode(200, SSE)
    t.response_body(stream_of("a b")[0], False)
    assert t.failure is None and not t.complete


def test_an_error_event_from_the_provider_fails_the_attempt() -> None:
    t = pass_through(stream=True)
    error = b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    parts = [stream_of("a b")[0], error, b"data: [DONE]\n\n"]
    assert streamed(t, 200, parts) == b"".join(parts)  # forwarded as it is
    assert t.failure == "upstream_error"


def test_a_non_2xx_stream_is_no_translator_failure() -> None:
    t = pass_through(stream=True)
    streamed(t, 500, [b'data: {"error": {"message": "x"}}\n\n'])
    assert t.failure is None


def _endless(client_asked_usage: bool) -> tuple[PassThrough, list[bytes]]:
    ctx = RequestContext(
        "chat", "m", "m", "m", "/v1/chat/completions", stream=True,
        include_usage=client_asked_usage,
    )  # fmt: skip
    first = stream_of("hello")[0]
    piece = b"x" * 65536
    parts = [first, b'data: {"choices":[{"delta":"', *[piece] * (2 * MAX_EVENT_BYTES // len(piece))]
    return PassThrough(ctx, "/v1/chat/completions"), parts


@pytest.mark.parametrize("client_asked_usage", [True, False])
def test_an_event_that_never_ends_ends_the_stream_with_an_error(client_asked_usage: bool) -> None:
    t, parts = _endless(client_asked_usage)
    t.response_headers(200, SSE)
    assert t.response_body_mode(200, SSE) == "streamed"
    outs = [t.response_body(p, False) for p in parts]
    cut = next(i for i, out in enumerate(outs) if b"event_too_large" in out)
    assert cut <= MAX_EVENT_BYTES // 65536 + 2  # at the bound, not at the stream's end
    assert all(out == b"" for out in outs[cut + 1 :])  # nothing after the error
    assert t.response_body(b"\n\ndata: [DONE]\n\n", True) == b""
    body = b"".join(outs)
    last = body.rstrip(b"\n").rpartition(b"\n\n")[2]
    error = orjson.loads(last.removeprefix(b"data: "))["error"]
    assert error["code"] == "event_too_large" and str(MAX_EVENT_BYTES) in error["message"]
    assert t.failure == "event_too_large" and not t.complete
    assert b"stream_truncated" not in body  # one error, not two
    if client_asked_usage:
        # Bytes passed through as they came: the event's start reached the client, and a
        # blank line closes it before the error event.
        assert body.startswith(parts[0] + parts[1])
    else:
        # Whole events only: the unfinished one never left the gateway.
        assert b"xxxx" not in body and body.count(b"\n\n") == 2  # the first event, the error
