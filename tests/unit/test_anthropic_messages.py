"""POST /v1/messages to an anthropic backend: the body and the answer pass through, watched for
the usage."""

from __future__ import annotations

import orjson
import pytest

from extproc.errors import GatewayError
from extproc.translate import RequestContext
from extproc.translate.anthropic.messages import MessagesPassThrough
from extproc.usage import MAX_EVENT_BYTES, Usage
from tests.anthropic_cases import HEAD, SONNET, STREAM_HEAD, message, text_stream, wire

BODY = orjson.dumps(
    {"model": "my-claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
)


def passthrough(body_model: str = "my-claude") -> MessagesPassThrough:
    ctx = RequestContext("messages", "my-claude", SONNET, body_model, "/v1/messages?beta=true")
    return MessagesPassThrough(ctx, "/proxy/v1/messages?beta=true")


def test_the_path_and_the_model_rewrite() -> None:
    t = passthrough()
    assert t.needs_request_body
    upstream = t.request(BODY)
    assert upstream.path == "/proxy/v1/messages?beta=true"
    assert upstream.body is not None and orjson.loads(upstream.body)["model"] == SONNET
    same = passthrough(body_model=SONNET)
    assert not same.needs_request_body
    assert same.request(None).body is None


def test_a_buffered_answer_passes_through_and_is_accounted() -> None:
    t = passthrough()
    t.request(BODY)
    assert t.response_body_mode(200, HEAD) == "buffered"
    assert t.response_headers(200, HEAD).set == {}
    body = orjson.dumps(message([{"type": "text", "text": "Hi"}], cache_read_input_tokens=3))
    assert t.response_body(body, True) == body
    assert t.usage == Usage(13, 5, 18, cached_input_tokens=3)
    assert t.response_model == SONNET and t.complete and t.failure is None


def test_errors_pass_through_in_anthropic_s_shape() -> None:
    t = passthrough()
    t.request(BODY)
    t.response_body_mode(529, HEAD)
    error = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "x"}})
    assert t.response_headers(529, HEAD).status is None
    assert t.response_body(error, True) == error
    assert t.usage is None and t.failure is None


def test_an_unreadable_2xx_answer_is_a_502() -> None:
    t = passthrough()
    t.request(BODY)
    t.response_body_mode(200, HEAD)
    with pytest.raises(GatewayError) as caught:
        t.response_body(b"<html>", True)
    assert caught.value.status == 502 and t.failure == "bad_upstream_response"


def test_a_stream_passes_byte_for_byte_and_its_usage_is_read() -> None:
    t = passthrough()
    t.request(BODY)
    assert t.response_body_mode(200, STREAM_HEAD) == "streamed"
    data = wire(text_stream("Hello there"))
    out = b"".join(t.response_body(data[i : i + 7], False) for i in range(0, len(data), 7))
    out += t.response_body(b"", True)
    assert out == data
    assert t.usage == Usage(14, 7, 21, cached_input_tokens=4)
    assert t.complete and t.failure is None


def test_a_cut_stream_is_estimated_and_a_truncated_one_says_so() -> None:
    t = passthrough()
    t.request(BODY)
    t.response_body_mode(200, STREAM_HEAD)
    data = wire(text_stream("Hello there")[:4])
    assert t.response_body(data, False) == data
    assert t.usage is None and not t.complete  # the client left here: estimated
    assert t.output_tokens("claude") >= 1
    tail = t.response_body(b"", True)
    assert tail.startswith(b"\n\nevent: error\ndata: ")
    assert orjson.loads(tail.split(b"data: ")[1])["error"]["type"] == "api_error"
    assert t.failure == "stream_truncated"


def test_an_error_event_is_the_client_s_and_the_attempt_s_failure() -> None:
    t = passthrough()
    t.request(BODY)
    t.response_body_mode(200, STREAM_HEAD)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    data = wire([*text_stream()[:3], error])
    assert t.response_body(data, True) == data
    assert t.failure == "overloaded_error" and not t.complete


def test_an_oversized_event_passes_unread() -> None:
    t = passthrough()
    t.request(BODY)
    t.response_body_mode(200, STREAM_HEAD)
    data = b"data: " + b"x" * (MAX_EVENT_BYTES + 1)
    assert t.response_body(data, False) == data
    assert t.failure == "event_too_large"
