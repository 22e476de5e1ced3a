"""The upstream stage's record of an attempt: what its outcome says, whoever ended it.

Driven like the gRPC layer drives it (request headers, response head, body chunks, or an early
end), with a telemetry that keeps the records.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from extproc.config import parse_config
from extproc.eventstream import encode_message
from extproc.router import RouteState
from extproc.telemetry import Record, Telemetry
from extproc.upstream import Exchange, UpstreamStage
from tests.fakes.faulty import FIRST_CHUNK, USAGE, bedrock_frames, completion

CONFIG = {
    "backends": {
        "oa": {"schema": "openai", "url": "http://127.0.0.1:1/v1"},
        "br": {
            "schema": "aws_bedrock",
            "url": "http://127.0.0.1:1",
            "region": "us-east-1",
            "access_key_id": "${KEY}",
            "secret_access_key": "${KEY}",
        },
    },
    "models": [
        {"name": "m", "backends": [{"backend": "oa"}]},
        {
            "name": "claude",
            "backends": [{"backend": "br", "model": "anthropic.claude-3-haiku-20240307-v1:0"}],
        },
    ],
}
SSE = {":status": "200", "content-type": "text/event-stream"}
JSON = {":status": "200", "content-type": "application/json"}
EVENT_STREAM = {":status": "200", "content-type": "application/vnd.amazon.eventstream"}
DONE = b"data: [DONE]\n\n"
USAGE_CHUNK = (
    b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
)


class Recorded(Telemetry):
    def __init__(self) -> None:
        super().__init__(parse_config(CONFIG, {"KEY": "unused"}), registry=CollectorRegistry())
        self.records: list[Record] = []

    def record(self, rec: Record) -> None:
        self.records.append(rec)
        super().record(rec)


@pytest.fixture
def telemetry() -> Recorded:
    return Recorded()


def exchange(
    telemetry: Recorded, model: str = "m", stream: bool = False, router_stage: bool = False
) -> Exchange:
    stage = UpstreamStage(parse_config(CONFIG, {"KEY": "unused"}), telemetry)
    ex = stage.exchange(router_stage=router_stage)
    state = RouteState(model, model, "/v1/chat/completions", 0, "usage" if stream else "")
    backend = "oa" if model == "m" else "br"
    step = asyncio.run(ex.request_headers({}, backend, state))
    assert step.error is None
    if step.request_body == "buffered":
        body = b'{"messages": [{"role": "user", "content": "hi"}], "stream": %s}' % (
            b"true" if stream else b"false"
        )
        assert asyncio.run(ex.request_body(body)).error is None
    return ex


def only(telemetry: Recorded) -> Record:
    assert len(telemetry.records) == 1
    return telemetry.records[0]


def test_a_complete_stream_is_a_success(telemetry: Recorded) -> None:
    ex = exchange(telemetry, stream=True)
    assert ex.response_headers(SSE, False).response_body == "streamed"
    ex.response_body(FIRST_CHUNK + USAGE_CHUNK + DONE, False)
    ex.response_body(b"", True)
    rec = only(telemetry)
    assert rec.error_type is None and not rec.cut and rec.usage is not None


def test_a_stream_without_done_is_a_failed_attempt(telemetry: Recorded) -> None:
    ex = exchange(telemetry, stream=True)
    ex.response_headers(SSE, False)
    ex.response_body(FIRST_CHUNK, False)
    step = ex.response_body(b"", True)
    assert step.body is not None and b"stream_truncated" in step.body
    rec = only(telemetry)
    assert (rec.status, rec.error_type, rec.cut) == (200, "stream_truncated", False)


def test_an_unreadable_json_answer_is_replaced_by_a_502(telemetry: Recorded) -> None:
    ex = exchange(telemetry)
    assert ex.response_headers(JSON, False).response_body == "buffered"
    body = completion("Hello there")
    step = ex.response_body(body[: len(body) // 2], True)
    assert step.error is not None and step.done
    assert (step.error.status, step.error.code) == (502, "bad_upstream_response")
    rec = only(telemetry)
    assert (rec.status, rec.error_type) == (502, "bad_upstream_response")


def test_a_json_answer_over_the_buffer_limit_that_needs_no_rewrite_is_passed_on(
    telemetry: Recorded,
) -> None:
    ex = exchange(telemetry)
    ex.response_headers(JSON, False)
    # Envoy sends a buffered body before its end only once it outgrew the buffer limit, and
    # passes the rest on without the sidecar: the attempt is accounted from what was seen.
    step = ex.response_body(b'{"id": "' + b"x" * 4096, False)
    assert step.error is None and step.body is None and step.done
    rec = only(telemetry)
    assert (rec.status, rec.error_type) == (200, None)
    assert rec.usage is not None and rec.usage.estimated


def test_a_json_answer_announced_over_the_buffer_limit_is_read_as_it_passes(
    telemetry: Recorded,
) -> None:
    ex = exchange(telemetry, router_stage=True)
    body = completion("x" * (33 * 1024 * 1024))
    head = {**JSON, "content-length": str(len(body))}
    assert ex.response_headers(head, False).response_body == "streamed"
    pieces = [body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20)]
    for piece in pieces[:-1]:
        assert ex.response_body(piece, False).body is None
    assert ex.response_body(pieces[-1], True).done
    rec = only(telemetry)
    assert rec.error_type is None and rec.usage is not None and not rec.usage.estimated
    assert rec.usage.total_tokens == USAGE["total_tokens"]


def test_in_the_upstream_stage_envoy_passes_it_on_alone(telemetry: Recorded) -> None:
    ex = exchange(telemetry)
    head = {**JSON, "content-length": str(33 * 1024 * 1024)}
    step = ex.response_headers(head, False)
    assert step.response_body == "none" and step.done
    rec = only(telemetry)
    assert rec.error_type is None and rec.usage is not None and rec.usage.estimated


def test_a_json_answer_to_translate_over_the_buffer_limit_is_a_502(telemetry: Recorded) -> None:
    ex = exchange(telemetry, model="claude")
    ex.response_headers(JSON, False)
    step = ex.response_body(b'{"output": "' + b"x" * 4096, False)
    assert step.error is not None and step.done
    assert (step.error.status, step.error.code) == (502, "response_too_large")
    assert "4108 bytes" in step.error.message
    rec = only(telemetry)
    assert (rec.status, rec.error_type) == (502, "response_too_large")
    # Billed by the provider all the same.
    assert rec.usage is not None and rec.usage.estimated and rec.usage.input_tokens > 0


def test_a_readable_json_answer_is_a_success(telemetry: Recorded) -> None:
    ex = exchange(telemetry)
    ex.response_headers(JSON, False)
    body = completion("Hello there")
    step = ex.response_body(body, True)
    assert step.error is None and step.body is None  # untouched
    rec = only(telemetry)
    assert rec.error_type is None and rec.usage is not None and rec.usage.total_tokens == 8


def test_a_provider_error_keeps_its_status_as_error_type(telemetry: Recorded) -> None:
    ex = exchange(telemetry)
    ex.response_headers({**JSON, ":status": "503"}, False)
    step = ex.response_body(b"<html>busy</html>", True)
    assert step.error is None and step.body is None  # passed on as it is
    assert only(telemetry).error_type == "503"


def test_a_stream_ended_early_is_interrupted_not_blamed_on_the_client(
    telemetry: Recorded,
) -> None:
    """Envoy closes the ext_proc stream alike when the client leaves, the provider resets or a
    timeout fires: the record says the answer was cut, not who cut it."""
    ex = exchange(telemetry, stream=True)
    ex.response_headers(SSE, False)
    ex.response_body(FIRST_CHUNK, False)
    ex.abort()
    rec = only(telemetry)
    assert (rec.error_type, rec.cut) == ("interrupted", True)
    assert rec.usage is not None and rec.usage.estimated and rec.usage.output_tokens == 1


def test_an_attempt_ended_before_any_answer_is_no_response(telemetry: Recorded) -> None:
    ex = exchange(telemetry, stream=True)
    ex.abort()
    rec = only(telemetry)
    assert (rec.status, rec.error_type, rec.cut) == (0, "no_response", True)


@pytest.mark.parametrize(
    "seen",
    [[FIRST_CHUNK, USAGE_CHUNK], [FIRST_CHUNK, DONE]],
    ids=["usage", "done"],
)
def test_a_stream_closed_after_its_answer_cut_nothing(telemetry: Recorded, seen: Any) -> None:
    ex = exchange(telemetry, stream=True)
    ex.response_headers(SSE, False)
    for part in seen:
        ex.response_body(part, False)
    ex.abort()  # the end_of_stream message never came
    rec = only(telemetry)
    assert rec.error_type is None and not rec.cut


def test_a_failure_seen_before_the_stream_was_cut_is_kept(telemetry: Recorded) -> None:
    ex = exchange(telemetry, model="claude", stream=True)
    ex.response_headers(EVENT_STREAM, False)
    frames = bedrock_frames()
    corrupt = frames[1][:-5] + bytes([frames[1][-5] ^ 1]) + frames[1][-4:]
    ex.response_body(frames[0] + corrupt, False)
    ex.abort()
    rec = only(telemetry)
    assert rec.error_type == "bad_upstream_response" and rec.cut


@pytest.mark.parametrize(
    ("frames", "error_type"),
    [
        (bedrock_frames(), None),
        (bedrock_frames()[:3], "stream_truncated"),
        (
            [
                *bedrock_frames()[:2],
                encode_message(
                    {":message-type": "exception", ":exception-type": "throttlingException"},
                    b'{"message": "Slow down"}',
                ),
            ],
            "ThrottlingException",
        ),
    ],
    ids=["complete", "truncated", "exception"],
)
def test_bedrock_stream_outcomes(
    telemetry: Recorded, frames: list[bytes], error_type: str | None
) -> None:
    ex = exchange(telemetry, model="claude", stream=True)
    ex.response_headers(EVENT_STREAM, False)
    ex.response_body(b"".join(frames), False)
    ex.response_body(b"", True)
    rec = only(telemetry)
    assert (rec.status, rec.error_type, rec.cut) == (200, error_type, False)


def test_an_unreadable_bedrock_answer_is_replaced_by_a_502(telemetry: Recorded) -> None:
    ex = exchange(telemetry, model="claude")
    ex.response_headers(JSON, False)
    step = ex.response_body(b"".join(bedrock_frames()), True)  # an event stream where JSON is due
    assert step.error is not None and step.error.status == 502
    assert step.error.type == "upstream_error" and step.error.code == "bad_upstream_response"
    assert only(telemetry).error_type == "bad_upstream_response"


def test_an_answer_compressed_unasked_is_read_and_sent_decoded(telemetry: Recorded) -> None:
    ex = exchange(telemetry)
    body = completion("Hello there")
    head = ex.response_headers({**JSON, "content-encoding": "gzip"}, False)
    assert {"content-encoding", "content-length"} <= set(head.remove_headers)
    step = ex.response_body(gzip.compress(body), True)
    assert step.error is None and step.body == body
    rec = only(telemetry)
    assert rec.error_type is None and rec.usage is not None and rec.usage.total_tokens > 0


def test_a_compressed_stream_is_decoded_chunk_by_chunk(telemetry: Recorded) -> None:
    ex = exchange(telemetry, stream=True)
    ex.response_headers({**SSE, "content-encoding": "gzip"}, False)
    z = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    out = b""
    for piece in (FIRST_CHUNK, USAGE_CHUNK, DONE):
        step = ex.response_body(z.compress(piece) + z.flush(zlib.Z_SYNC_FLUSH), False)
        out += step.body or b""
    out += ex.response_body(z.flush(), True).body or b""
    assert out == FIRST_CHUNK + USAGE_CHUNK + DONE
    rec = only(telemetry)
    assert rec.error_type is None and rec.usage is not None


@pytest.mark.parametrize("coding", ["br", "gzip, br"])
def test_an_answer_in_a_coding_the_gateway_cannot_read_is_a_502(
    telemetry: Recorded, coding: str
) -> None:
    ex = exchange(telemetry)
    step = ex.response_headers({**JSON, "content-encoding": coding}, False)
    assert step.error is not None and step.error.status == 502 and "br" in step.error.message
    assert only(telemetry).error_type == "bad_upstream_response"
