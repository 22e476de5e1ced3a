"""Crashes, shutdown and misbehaving providers, through real Envoy + sidecar.

- A sidecar worker killed with SIGKILL under load: the other worker keeps serving, the
  supervisor restarts the dead one, the requests it held fail cleanly (an OpenAI-shaped 503, or
  a cut stream), none hangs, and every completed request is accounted.
- SIGTERM drains: open streams finish, new connections are refused, the drain time bounds the
  wait, telemetry is flushed before the processes exit.
- Providers that answer badly (truncated JSON, SSE without [DONE], corrupt event-stream frames,
  oversized answers, silence): the client gets a clear error within the configured timeouts and
  the attempt is recorded as failed.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
import yaml

from tests.fakes.faulty import USAGE, Behaviour, FaultyUpstream
from tests.fakes.openai import FakeOpenAI
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway
from tests.integration.probes import (
    failed_requests,
    metric,
    openai_error,
    wait_for,
    workers,
)

# "No hang": a generous bound on anything the gateway answers, far above every timeout used.
NO_HANG = 10.0
REPO = Path(__file__).resolve().parents[2]


def _chat(model: str, words: int = 8, stream: bool = False) -> dict[str, Any]:
    text = " ".join(f"w{i}" for i in range(words))
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


# --- a worker killed under load ---------------------------------------------------------------


@dataclass
class Outcome:
    started: float
    ended: float
    stream: bool
    status: int | None  # None: the connection broke
    complete: bool  # a 200 with the whole answer ([DONE] for streams)
    body: bytes


def _one(client: httpx2.Client, url: str, stream: bool) -> Outcome:
    started = time.monotonic()
    try:
        with client.stream("POST", url, json=_chat("m", 6, stream)) as response:
            body = b"".join(response.iter_raw())
        status: int | None = response.status_code
        if stream:
            complete = status == 200 and body.endswith(b"data: [DONE]\n\n")
        else:
            complete = status == 200 and orjson.loads(body)["object"] == "chat.completion"
    except httpx2.TimeoutException:
        raise AssertionError("a request hung") from None
    except httpx2.TransportError:
        status, complete, body = None, False, b""
    return Outcome(started, time.monotonic(), stream, status, complete, body)


def _listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def test_worker_killed_under_load_is_restarted_and_nothing_completed_is_lost() -> None:
    with FakeOpenAI(chunk_delay=0.02) as fake:
        config = {
            "backends": {"oa": {"schema": "openai", "url": f"{fake.url}/v1"}},
            "models": [{"name": "m", "backends": [{"backend": "oa"}], "retry": {"attempts": 1}}],
        }
        with Gateway(config, workers=2) as gw:
            url = f"{gw.url}/v1/chat/completions"
            before = workers(gw)
            assert set(before) == {"worker-0", "worker-1"}
            outcomes: list[Outcome] = []
            lock = threading.Lock()
            stop = threading.Event()

            def client(i: int) -> None:
                with httpx2.Client(timeout=NO_HANG) as http:
                    n = 0
                    while not stop.is_set():
                        outcome = _one(http, url, stream=(i + n) % 2 == 0)
                        with lock:
                            outcomes.append(outcome)
                        n += 1

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                running = [pool.submit(client, i) for i in range(8)]
                time.sleep(1.0)
                killed_at = time.monotonic()
                os.kill(before["worker-0"], signal.SIGKILL)
                wait_for(
                    lambda: workers(gw).get("worker-0") not in (None, before["worker-0"]),
                    what="the supervisor to restart worker-0",
                )
                socket_path = str(gw.config_path.parent / "state" / "worker-0.sock")
                wait_for(lambda: _listening(socket_path), what="the new worker's socket")
                restarted_at = time.monotonic()
                time.sleep(1.0)
                stop.set()
                for future in running:
                    future.result()

            # The worker-1 process was never touched.
            assert workers(gw)["worker-1"] == before["worker-1"]
            assert any("worker-0 exited with status -9; restarting" in line for line in gw.output)
            # No request hung; every failure is a clean one.
            assert all(o.ended - o.started < NO_HANG for o in outcomes)
            for o in outcomes:
                if o.complete or o.status is None:
                    continue  # a success, or a stream cut when its worker died
                assert o.status == 503, (o.status, o.body[:300])
                assert openai_error(o.body)["code"] == "sidecar_unavailable"
            broken = [o for o in outcomes if o.status is None]
            assert all(o.stream and o.started < restarted_at for o in broken)
            # Only requests the dead worker already held fail: a new request that meets the
            # dead worker's socket is retried on the other one (render_common.py _SIDECAR_RETRY).
            late = [o.started - killed_at for o in outcomes if o.status == 503]
            assert all(t < 0.05 for t in late), late
            # Requests went on being served while worker-0 was down, and after its restart.
            assert any(o.complete and killed_at < o.ended < restarted_at for o in outcomes)
            assert any(o.complete and o.started > restarted_at for o in outcomes)
            with httpx2.Client(timeout=NO_HANG) as http:
                after = [_one(http, url, stream=i % 2 == 0) for i in range(20)]
            assert all(o.complete for o in after)
            # Every request the client saw complete was accounted (Prometheus's multiprocess
            # files outlive a SIGKILLed worker).
            completed = sum(o.complete for o in outcomes + after)
            wait_for(
                lambda: metric(gw, "ai_gateway_requests_total", error_type="") >= completed,
                what="the completed requests' records",
            )


def test_compose_restarts_a_dead_sidecar() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for service in ("sidecar", "envoy"):
        assert compose["services"][service]["restart"] in ("always", "unless-stopped")


# --- graceful shutdown ------------------------------------------------------------------------


def _stream_in_thread(url: str, body: dict[str, Any], out: dict[str, Any], key: str) -> None:
    try:
        with httpx2.stream("POST", url, json=body, timeout=30) as response:
            first = True
            data = b""
            for part in response.iter_raw():
                if first:
                    out[f"{key}-started"] = time.monotonic()
                    first = False
                data += part
        out[key] = (response.status_code, data)
    except httpx2.TransportError as exc:
        out[key] = (None, repr(exc).encode())


def _content(sse: bytes) -> str:
    text = ""
    for event in sse.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for choice in orjson.loads(event[6:]).get("choices") or []:
                text += choice["delta"].get("content") or ""
    return text


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_drains_open_streams_refuses_new_connections_and_flushes_telemetry() -> None:
    with OTLPReceiver() as otlp, FakeOpenAI(chunk_delay=0.2) as fake:
        config = {
            "backends": {"oa": {"schema": "openai", "url": f"{fake.url}/v1"}},
            "models": [{"name": "m", "backends": [{"backend": "oa"}]}],
            "http": {"drain_time": "20s"},
        }
        # Metrics are exported only at exit: what arrives proves the flush.
        env = otlp.env(interval_ms=600_000)
        with Gateway(config, env=env) as gw:
            url = f"{gw.url}/v1/chat/completions"
            results: dict[str, Any] = {}
            threads = [
                threading.Thread(
                    target=_stream_in_thread, args=(url, _chat("m", 10, True), results, f"s{i}")
                )
                for i in range(3)
            ]
            for t in threads:
                t.start()
            wait_for(lambda: all(f"s{i}-started" in results for i in range(3)), what="streams")
            proc = gw._proc
            assert proc is not None
            sigterm_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: _refused(gw.port), timeout=5, what="new connections refused")
            for t in threads:
                t.join(NO_HANG)
            for i in range(3):
                status, data = results[f"s{i}"]
                assert status == 200 and data.endswith(b"data: [DONE]\n\n"), data[-200:]
                assert _content(data) == "Echo: " + " ".join(f"w{j}" for j in range(10))
            proc.wait(NO_HANG)
            assert proc.returncode == 0
            # The streams took ~2 s more after SIGTERM; the gateway waited for them, no longer.
            assert time.monotonic() - sigterm_at < NO_HANG
        assert otlp.sum("ai_gateway.requests", **{"gen_ai.request.model": "m"}) == 3
        # None of the drained streams was cut, nor failed.
        assert otlp.sum("ai_gateway.requests", **{"ai_gateway.cut": True}) == 0
        for error_type in ("interrupted", "stream_truncated", "no_response"):
            assert otlp.sum("ai_gateway.requests", **{"error.type": error_type}) == 0


def test_drain_time_bounds_the_wait_for_open_streams() -> None:
    with FakeOpenAI(chunk_delay=0.25) as fake:
        config = {
            "backends": {"oa": {"schema": "openai", "url": f"{fake.url}/v1"}},
            "models": [{"name": "m", "backends": [{"backend": "oa"}]}],
            "http": {"drain_time": "1s"},
        }
        with Gateway(config) as gw:
            results: dict[str, Any] = {}
            body = _chat("m", 60, True)  # about 15 s of stream
            thread = threading.Thread(
                target=_stream_in_thread,
                args=(f"{gw.url}/v1/chat/completions", body, results, "s"),
            )
            thread.start()
            wait_for(lambda: "s-started" in results, what="the stream")
            proc = gw._proc
            assert proc is not None
            sigterm_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(NO_HANG)
            stopped_after = time.monotonic() - sigterm_at
            thread.join(NO_HANG)
        assert stopped_after < 6  # the 1 s drain time, then Envoy and the workers stop
        status, data = results["s"]
        assert status is None or not data.endswith(b"data: [DONE]\n\n")  # cut, not complete


# --- misbehaving providers --------------------------------------------------------------------

FAULTS: list[Behaviour] = [
    "stall",
    "stall_body",
    "cut",
    "reset",
    "truncated_json",
    "short_body",
    "huge_json",
    "huge_converse",
    "huge_sse",
    "endless_event",
    "bad_crc",
    "eventstream_cut",
    "garbage",
]
BEDROCK_FAULTS = {"bad_crc", "eventstream_cut", "huge_converse"}
IDLE_TIMEOUT = 3.0
BUFFER_LIMIT = 1024 * 1024  # http.max_request_bytes: the answers below are 10x that


@pytest.fixture(scope="module")
def faulty() -> Iterator[dict[str, FaultyUpstream]]:
    upstreams = {kind: FaultyUpstream(kind, size=10 * BUFFER_LIMIT) for kind in FAULTS}
    for upstream in upstreams.values():
        upstream.__enter__()
    try:
        yield upstreams
    finally:
        for upstream in upstreams.values():
            upstream.__exit__(None, None, None)


@pytest.fixture(scope="module")
def misbehaving(faulty: dict[str, FaultyUpstream]) -> Iterator[Gateway]:
    backends: dict[str, Any] = {}
    models = []
    for kind, upstream in faulty.items():
        if kind in BEDROCK_FAULTS:
            backends[kind] = {
                "schema": "aws_bedrock",
                "url": upstream.url,
                "region": "us-east-1",
                "access_key_id": "${FAULTY_AWS_KEY}",
                "secret_access_key": "${FAULTY_AWS_KEY}",
            }
            entry = {"backend": kind, "model": "anthropic.claude-3-haiku-20240307-v1:0"}
        else:
            backends[kind] = {"schema": "openai", "url": f"{upstream.url}/v1"}
            entry = {"backend": kind}
        models.append(
            {"name": kind, "backends": [entry], "retry": {"attempts": 1}, "timeout": "6s"}
        )
    # Two backends: Envoy picks one per attempt and the upstream stage (not the router stage)
    # translates the answer.
    backends["truncated_json_2"] = backends["truncated_json"]
    models.append(
        {
            "name": "truncated_json_upstream",
            "backends": [{"backend": "truncated_json"}, {"backend": "truncated_json_2"}],
            "retry": {"attempts": 1},
            "timeout": "6s",
        }
    )
    config = {
        "backends": backends,
        "models": models,
        "timeouts": {"idle": f"{IDLE_TIMEOUT:g}s"},
        "http": {"max_request_bytes": BUFFER_LIMIT},
    }
    with Gateway(config, env={"FAULTY_AWS_KEY": "unused"}) as gw:
        yield gw


def _call(gw: Gateway, kind: str, stream: bool) -> tuple[int | None, bytes, float]:
    started = time.monotonic()
    try:
        with httpx2.stream(
            "POST", f"{gw.url}/v1/chat/completions", json=_chat(kind, 2, stream), timeout=NO_HANG
        ) as response:
            body = b"".join(response.iter_raw())
        status: int | None = response.status_code
    except httpx2.TimeoutException:
        raise AssertionError(f"{kind}: the client waited {NO_HANG}s") from None
    except httpx2.TransportError:
        status, body = None, b""
    return status, body, time.monotonic() - started


def _sse_error(body: bytes) -> dict[str, Any] | None:
    """The error event a stream ended with, if it did."""
    last = body.rstrip(b"\n").rpartition(b"\n\n")[2]
    if last.startswith(b"data: {") and b'"error"' in last:
        return openai_error(last[6:])
    return None


# (kind, stream) -> what the client must see: "5xx" an OpenAI-shaped 5xx status, "event" a 200
# stream ending with an OpenAI error event, "cut" a broken connection, "ok" a complete answer.
CLIENT_SEES = [
    ("stall", False, "5xx"),
    ("stall", True, "5xx"),
    ("stall_body", True, "cut"),
    ("cut", True, "event"),
    ("reset", True, "cut"),
    ("short_body", False, "5xx"),
    ("garbage", False, "5xx"),
    ("huge_sse", True, "ok"),
    ("endless_event", True, "event"),
    ("bad_crc", True, "event"),
    ("eventstream_cut", True, "event"),
]


@pytest.mark.parametrize(("kind", "stream", "expected"), CLIENT_SEES)
def test_client_gets_a_clear_error_within_the_timeouts(
    misbehaving: Gateway, kind: str, stream: bool, expected: str
) -> None:
    status, body, took = _call(misbehaving, kind, stream)
    assert took < NO_HANG
    if expected == "5xx":
        assert status is not None and status >= 500, (status, body[:200])
        error = openai_error(body)
        assert error["message"]
        if kind == "stall":
            assert status == 504 and error["code"] == "upstream_timeout"
    elif expected == "event":
        assert status == 200
        event = _sse_error(body)
        assert event is not None and event["message"], body[-300:]
        if kind == "endless_event":
            assert event["code"] == "event_too_large"
            assert len(body) < 64 * 1024  # the event that never ended was held, then dropped
        assert b"data: [DONE]" not in body
    elif expected == "cut":
        assert status is None
    else:
        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
        assert len(body) > 10 * BUFFER_LIMIT * 0.9


@pytest.mark.parametrize(
    ("kind", "stream"),
    [
        ("stall", False),
        ("stall_body", True),
        ("reset", True),
        ("short_body", False),
        ("garbage", False),
        # 2xx answers the translator ended with an error (event): Translator.failure.
        ("cut", True),
        ("bad_crc", True),
        ("eventstream_cut", True),
        ("truncated_json", False),
    ],
)
def test_the_attempt_is_recorded_as_failed(misbehaving: Gateway, kind: str, stream: bool) -> None:
    before = failed_requests(misbehaving, kind)
    _call(misbehaving, kind, stream)
    wait_for(lambda: failed_requests(misbehaving, kind) > before, timeout=5, what="a record")


@pytest.mark.parametrize(
    ("kind", "stream", "error_type"),
    [
        ("cut", True, "stream_truncated"),
        ("eventstream_cut", True, "stream_truncated"),
        ("bad_crc", True, "bad_upstream_response"),
        ("truncated_json", False, "bad_upstream_response"),
        ("huge_converse", False, "response_too_large"),
        ("endless_event", True, "event_too_large"),
        ("reset", True, "interrupted"),  # Envoy cannot tell the sidecar who broke the stream
    ],
)
def test_the_failure_is_named(
    misbehaving: Gateway, kind: str, stream: bool, error_type: str
) -> None:
    def named() -> float:
        return metric(
            misbehaving,
            "ai_gateway_requests_total",
            gen_ai_request_model=kind,
            error_type=error_type,
        )

    before = named()
    _call(misbehaving, kind, stream)
    wait_for(lambda: named() > before, timeout=5, what=f"a {error_type} record")


def test_a_huge_stream_is_passed_on_and_accounted(misbehaving: Gateway) -> None:
    before = metric(misbehaving, "ai_gateway_requests_total", gen_ai_request_model="huge_sse")
    status, body, _ = _call(misbehaving, "huge_sse", True)
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    wait_for(
        lambda: (
            metric(misbehaving, "ai_gateway_requests_total", gen_ai_request_model="huge_sse")
            > before
        ),
        what="the record",
    )
    tokens = metric(
        misbehaving,
        "gen_ai_client_token_usage_sum",
        gen_ai_request_model="huge_sse",
        gen_ai_token_type="output",
    )
    assert tokens >= USAGE["completion_tokens"]


def test_truncated_json_is_a_502(misbehaving: Gateway) -> None:
    status, body, _ = _call(misbehaving, "truncated_json", False)
    assert status == 502
    error = openai_error(body)
    assert (error["type"], error["code"]) == ("upstream_error", "bad_upstream_response")


def test_truncated_json_is_a_502_in_the_upstream_stage_too(misbehaving: Gateway) -> None:
    model = "truncated_json_upstream"
    before = failed_requests(misbehaving, model)
    status, body, _ = _call(misbehaving, model, False)
    assert status == 502, (status, body[:300])
    assert openai_error(body)["code"] == "bad_upstream_response"
    wait_for(lambda: failed_requests(misbehaving, model) > before, timeout=5, what="a record")


def test_unreadable_bedrock_answer_is_a_502(misbehaving: Gateway) -> None:
    status, body, _ = _call(misbehaving, "bad_crc", False)  # an event stream where JSON is due
    assert status == 502
    error = openai_error(body)
    assert (error["type"], error["code"]) == ("upstream_error", "bad_upstream_response")


def test_answer_10x_larger_than_the_buffer_to_translate_is_a_prompt_502(
    misbehaving: Gateway,
) -> None:
    status, body, _ = _call(misbehaving, "huge_converse", False)
    assert status == 502, (status, body[:200])
    assert "large" in openai_error(body)["message"]


def test_answer_10x_larger_than_the_buffer_that_needs_no_rewrite_is_passed_on(
    misbehaving: Gateway,
) -> None:
    status, raw, _ = _call(misbehaving, "huge_json", False)
    body = gzip.decompress(raw)  # by the gateway's compressor, as the client asked
    assert status == 200 and len(body) > 10 * BUFFER_LIMIT, (status, body[:200])
    assert orjson.loads(body)["usage"] == USAGE
