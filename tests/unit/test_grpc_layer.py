"""The gRPC layer, driven by scripted ext_proc streams (see tests/extproc_script.py).

Each test plays the messages Envoy would send on one stream into ``ExternalProcessor.Process``
and reads the replies as Envoy would: which phase they answer, the mode overrides, the
dynamic metadata, and where the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from prometheus_client import CollectorRegistry

from extproc.config import parse_config
from extproc.router import Router
from extproc.server import ExternalProcessor
from extproc.telemetry import Telemetry
from extproc.wire import DETAILS, ERROR_DETAILS, MODEL_HEADER, ROUTER_STAGE, UPSTREAM_STAGE, Key
from tests.extproc_script import (
    Played,
    metadata,
    play,
    request_body,
    request_headers,
    response_body,
    response_headers,
    set_headers,
)
from tests.fakes.faulty import completion

_Mode = processing_mode_pb2.ProcessingMode

CONFIG: dict[str, Any] = {
    "backends": {
        "oa": {"schema": "openai", "url": "http://127.0.0.1:1/v1", "api_key": "${KEY}"},
        "ob": {"schema": "openai", "url": "http://127.0.0.1:2/v1", "api_key": "${KEY}"},
    },
    "models": [
        {"name": "solo", "backends": [{"backend": "oa", "model": "gpt-4o-mini"}]},
        {"name": "plain", "backends": [{"backend": "oa"}]},
        {"name": "pair", "backends": [{"backend": "oa"}, {"backend": "ob"}]},
    ],
}
KEY = "sk-test-key"
CHAT = {":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json"}
JSON = {":status": "200", "content-type": "application/json"}


def chat(model: str, stream: bool = False) -> bytes:
    return orjson.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    )


def scripted(test: Callable[[ExternalProcessor], Awaitable[None]], **overrides: Any) -> None:
    """Run ``test`` against a processor of its own, on a loop of its own."""

    async def main() -> None:
        config = parse_config({**CONFIG, **overrides}, {"KEY": KEY})
        telemetry = Telemetry(config, registry=CollectorRegistry())
        processor = ExternalProcessor(config, telemetry)
        try:
            await test(processor)
        finally:
            await processor.close()
            telemetry.shutdown()

    asyncio.run(main())


def immediate(played: Played) -> pb.ImmediateResponse:
    """The stream's one and last reply, an immediate response."""
    last = played.replies[-1]
    assert last.WhichOneof("response") == "immediate_response"
    return last.immediate_response


def error_of(answer: pb.ImmediateResponse) -> dict[str, Any]:
    assert answer.details == ERROR_DETAILS
    assert set_headers(answer.headers)["content-type"] == "application/json"
    error: dict[str, Any] = orjson.loads(answer.body)["error"]
    return error


def test_the_models_list_is_an_immediate_answer() -> None:
    async def test(processor: ExternalProcessor) -> None:
        get = {":method": "GET", ":path": "/v1/models"}
        played = await play(processor, [request_headers(get, end_of_stream=True)])
        assert len(played.replies) == 1 and played.unread == 0
        answer = immediate(played)
        assert (answer.status.code, answer.details) == (200, DETAILS)
        listed = orjson.loads(answer.body)
        assert listed["object"] == "list"
        assert [m["id"] for m in listed["data"]] == ["solo", "plain", "pair"]

    scripted(test)


def test_a_model_of_several_backends_is_routed_and_left_to_the_upstream_stage() -> None:
    async def test(processor: ExternalProcessor) -> None:
        body = chat("pair")
        script = [
            request_headers({**CHAT, "authorization": "Bearer gateway-key"}),
            request_body(body),
            response_headers(JSON),
        ]
        played = await play(processor, script)
        # The stream ends with the route: the response phases are the upstream stage's.
        assert len(played.replies) == 2 and played.unread == 1
        read_body, route = played.replies
        assert read_body.WhichOneof("response") == "request_headers"
        mode = read_body.mode_override
        assert (mode.request_body_mode, mode.response_header_mode) == (_Mode.BUFFERED, _Mode.SEND)
        assert route.WhichOneof("response") == "request_body"
        common = route.request_body.response
        assert common.clear_route_cache
        assert set_headers(common.header_mutation) == {MODEL_HEADER: "pair"}
        assert list(common.header_mutation.remove_headers) == ["authorization"]
        assert not common.HasField("body_mutation")
        assert not route.HasField("mode_override")
        assert metadata(route) == {
            Key.MODEL: "pair",
            Key.BODY_MODEL: "pair",
            Key.PATH: "/v1/chat/completions",
            Key.REQUEST_BYTES: len(body),
            Key.STREAM: "",
            Key.RATELIMIT: "",
        }

    scripted(test)


def test_a_model_of_one_backend_is_served_on_the_router_stream() -> None:
    async def test(processor: ExternalProcessor) -> None:
        answer = completion("Hello there")
        script = [
            request_headers(CHAT),
            request_body(chat("solo")),
            response_headers(JSON),
            response_body(answer, end_of_stream=True),
        ]
        played = await play(processor, script)
        assert len(played.replies) == 4 and played.unread == 0
        read_body, route, head, last = played.replies
        # The router's read of the body also turns on this stream's response phases.
        mode = read_body.mode_override
        assert (mode.request_body_mode, mode.response_header_mode) == (_Mode.BUFFERED, _Mode.SEND)
        assert mode.response_body_mode == _Mode.NONE
        common = route.request_body.response
        assert common.clear_route_cache
        headers = set_headers(common.header_mutation)
        assert headers[MODEL_HEADER] == "solo"
        assert headers[":authority"] == "127.0.0.1:1"
        assert headers[":path"] == "/v1/chat/completions"
        assert headers["authorization"] == f"Bearer {KEY}"
        sent = orjson.loads(common.body_mutation.body)
        assert sent["model"] == "gpt-4o-mini"  # the backend's model name, rewritten
        assert headers["content-length"] == str(len(common.body_mutation.body))
        assert metadata(route) == {Key.MODEL: "solo"}
        assert not route.HasField("mode_override")  # request modes are the router's own
        # A buffered answer: what fits the buffer comes before the head (see _mode_override).
        assert head.WhichOneof("response") == "response_headers"
        assert head.mode_override.response_body_mode == _Mode.BUFFERED_PARTIAL
        assert last.WhichOneof("response") == "response_body"
        assert not last.response_body.response.HasField("body_mutation")  # passed on unchanged
        record = metadata(last)
        assert (record[Key.BACKEND], record[Key.MODEL]) == ("oa", "solo")
        assert (record[Key.TOTAL_TOKENS], record[Key.USAGE_SOURCE]) == (8, "provider")

    scripted(test)


def test_envoy_accounting_hands_the_answer_off_and_ends_the_stream() -> None:
    async def test(processor: ExternalProcessor) -> None:
        script = [request_headers(CHAT), request_body(chat("plain")), response_headers(JSON)]
        played = await play(processor, script)
        assert len(played.replies) == 2 and played.unread == 1
        route = played.replies[1]
        common = route.request_body.response
        assert common.clear_route_cache
        assert not common.HasField("body_mutation")  # forwarded as the client sent it
        handed = metadata(route)
        assert handed[Key.HANDED_OFF] is True
        assert (handed[Key.BACKEND], handed[Key.MODEL], handed[Key.UPSTREAM_MODEL]) == (
            "oa",
            "plain",
            "plain",
        )
        assert (handed[Key.OPERATION], handed[Key.STREAM]) == ("chat", False)

    scripted(test, accounting={"mode": "envoy"})


@pytest.mark.parametrize(
    ("stage", "script"),
    [
        (ROUTER_STAGE, [pb.ProcessingRequest(request_trailers=pb.HttpTrailers())]),
        (ROUTER_STAGE, [request_body(b"{}")]),
        (
            ROUTER_STAGE,
            [request_headers(CHAT), pb.ProcessingRequest(request_trailers=pb.HttpTrailers())],
        ),
        (UPSTREAM_STAGE, [pb.ProcessingRequest(request_trailers=pb.HttpTrailers())]),
    ],
    ids=["router-trailers", "router-body-first", "router-trailers-for-body", "upstream-trailers"],
)
def test_an_unexpected_message_is_a_500(stage: str, script: list[pb.ProcessingRequest]) -> None:
    async def test(processor: ExternalProcessor) -> None:
        played = await play(processor, script, stage)
        answer = immediate(played)
        assert answer.status.code == 500
        assert error_of(answer)["type"] == "server_error"

    scripted(test)


def test_envoy_answering_before_the_route_is_let_through() -> None:
    async def test(processor: ExternalProcessor) -> None:
        too_large = {":status": "413", "content-type": "text/plain"}
        played = await play(processor, [request_headers(CHAT), response_headers(too_large)])
        assert len(played.replies) == 2
        assert played.replies[1] == pb.ProcessingResponse(response_headers=pb.HeadersResponse())

    scripted(test)


def test_an_exception_in_a_stage_costs_one_request_a_clean_500(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def fails_once(self: Router, *args: Any) -> Any:
        monkeypatch.undo()  # the next stream finds the router as it was
        raise RuntimeError("secret internals")

    async def test(processor: ExternalProcessor) -> None:
        monkeypatch.setattr(Router, "on_body", fails_once)
        script = [request_headers(CHAT), request_body(chat("pair"))]
        with caplog.at_level(logging.ERROR, "extproc.server"):
            failed = await play(processor, script)
        answer = immediate(failed)
        assert answer.status.code == 500
        error = error_of(answer)
        assert error["type"] == "server_error" and "secret" not in answer.body.decode()
        assert "ext_proc router stream failed" in caplog.text  # logged, with its traceback
        # The same processor serves the next stream as if nothing happened.
        again = await play(processor, script)
        assert again.replies[-1].request_body.response.clear_route_cache

    scripted(test)


def test_a_stream_ended_before_its_body_ends_quietly() -> None:
    async def test(processor: ExternalProcessor) -> None:
        played = await play(processor, [request_headers(CHAT)])
        assert len(played.replies) == 1  # the read-body reply; nothing once Envoy left

    scripted(test)


def test_a_reply_envoy_left_before_is_no_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fails(self: Router, *args: Any) -> Any:
        raise RuntimeError("the send grpc could not make")

    async def test(processor: ExternalProcessor) -> None:
        monkeypatch.setattr(Router, "on_body", fails)
        script = [request_headers(CHAT), request_body(chat("pair"))]
        played = await play(processor, script, ended=True)
        assert len(played.replies) == 1  # no 500 for a stream nobody reads

    scripted(test)


def _oversized(stage: str, head: dict[str, str]) -> list[pb.ProcessingRequest]:
    """A request and its buffered answer, of which Envoy sends a part: it outgrew the buffer
    limit (Envoy sends a buffered body before its end only then)."""
    if stage == UPSTREAM_STAGE:
        route = {
            Key.MODEL: "pair",
            Key.BODY_MODEL: "pair",
            Key.PATH: "/v1/chat/completions",
            Key.REQUEST_BYTES: 60,
            Key.STREAM: "",
            Key.RATELIMIT: "",
        }
        request = [request_headers({**CHAT, "x-envoy-attempt-count": "2"}, False, "ob", route)]
    else:
        request = [request_headers(CHAT), request_body(chat("plain"))]
    return [*request, response_headers(head), response_body(b'{"id": "' + b"x" * 64, False)]


def _sent_to(played: Played, stage: str) -> str:
    first = played.replies[0 if stage == UPSTREAM_STAGE else 1]
    sent = set_headers(getattr(first, first.WhichOneof("response")).response.header_mutation)
    return sent[":authority"]


AUTHORITY = {ROUTER_STAGE: "127.0.0.1:1", UPSTREAM_STAGE: "127.0.0.1:2"}


@pytest.mark.parametrize("stage", [ROUTER_STAGE, UPSTREAM_STAGE])
def test_a_buffered_answer_over_the_limit_that_must_be_read_whole_is_a_502(stage: str) -> None:
    async def test(processor: ExternalProcessor) -> None:
        # Compressed although the gateway asked for identity: only readable whole.
        played = await play(
            processor, _oversized(stage, {**JSON, "content-encoding": "gzip"}), stage
        )
        assert played.unread == 0 and _sent_to(played, stage) == AUTHORITY[stage]
        head = played.replies[-2]
        assert head.mode_override.response_body_mode == _Mode.BUFFERED_PARTIAL
        answer = immediate(played)
        assert answer.status.code == 502
        assert error_of(answer)["code"] == "response_too_large"

    scripted(test)


@pytest.mark.parametrize("stage", [ROUTER_STAGE, UPSTREAM_STAGE])
def test_a_buffered_answer_over_the_limit_that_needs_no_rewrite_is_passed_on(stage: str) -> None:
    async def test(processor: ExternalProcessor) -> None:
        played = await play(processor, _oversized(stage, JSON), stage)
        assert played.unread == 0 and _sent_to(played, stage) == AUTHORITY[stage]
        last = played.replies[-1]
        assert last.WhichOneof("response") == "response_body"
        assert not last.response_body.response.HasField("body_mutation")
        assert metadata(last)[Key.USAGE_SOURCE] == "estimated"

    scripted(test)
