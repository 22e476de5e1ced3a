"""Request and answer shapes a client or provider can vary to slip past the gateway (issue 29),
through real Envoy and sidecar:

- a non-boolean ``stream`` (``"true"``, ``1``) is a 400 naming it: the gateway would not treat
  it as a stream while a lenient provider would, and its usage would go unaccounted;
- a body giving ``model`` (or ``stream``) twice is a 400: the gateway and the provider could
  read different ones, and the client be admitted for one model and billed for another;
- a POST with ``Upgrade: websocket`` is a 400 at once (Envoy took it for an upgraded stream whose
  body never ends: the client waited for ``timeouts.upload``, 60 s);
- ``accounting.mode: envoy`` reads the usage of ``application/json; charset=utf-8`` answers
  (and the other spellings of a JSON content type) as it does of ``application/json``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx2
import openai
import pytest

from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway
from tests.integration.probes import metric, rss_bytes, wait_for, workers

CHARSETS = ["application/json; charset=utf-8", "application/json;charset=UTF-8"]


@pytest.fixture(scope="module")
def fakes() -> Iterator[list[FakeOpenAI]]:
    servers = [FakeOpenAI(json_content_type=t) for t in CHARSETS]
    for server in servers:
        server.start()
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def gateway(fakes: list[FakeOpenAI]) -> Iterator[Gateway]:
    backends = {f"b{i}": {"schema": "openai", "url": f"{f.url}/v1"} for i, f in enumerate(fakes)}
    config = {
        "accounting": {"mode": "envoy", "flush_interval": "50ms"},
        "backends": backends,
        "models": [
            {"name": f"m{i}", "backends": [{"backend": f"b{i}"}]} for i in range(len(fakes))
        ],
    }
    with Gateway(config, workers=1) as gw:
        yield gw


@pytest.mark.parametrize("value", ['"true"', "1", '"false"', "{}"])
def test_a_stream_flag_that_is_not_a_boolean_is_refused(gateway: Gateway, value: str) -> None:
    response = httpx2.post(
        f"{gateway.url}/v1/chat/completions",
        content=b'{"model": "m0", "messages": [{"role": "user", "content": "x"}], "stream": '
        + value.encode()
        + b"}",
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (
        "stream",
        "invalid_type",
        "invalid_request_error",
    )


@pytest.mark.parametrize("index", range(len(CHARSETS)))
def test_json_with_a_charset_is_accounted_by_envoy(gateway: Gateway, index: int) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    model = f"m{index}"
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "one two three"}]
    )
    assert answer.usage is not None
    tokens = answer.usage.total_tokens

    def recorded() -> float:
        return metric(
            gateway,
            "gen_ai_client_token_usage_sum",
            gen_ai_request_model=model,
        )

    wait_for(lambda: recorded() > 0, timeout=10, what="the answer's tokens")
    assert recorded() == tokens
    ok = metric(gateway, "ai_gateway_requests_total", gen_ai_request_model=model, error_type="")
    assert ok == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m0", "model": "m1", "messages": []}',
        b'{"mod\\u0065l": "m0", "model": "m1", "messages": []}',
    ],
)
def test_a_repeated_model_is_refused(
    gateway: Gateway, fakes: list[FakeOpenAI], body: bytes
) -> None:
    seen = sum(len(f.requests) for f in fakes)
    response = httpx2.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("model", "duplicate_parameter")
    assert sum(len(f.requests) for f in fakes) == seen


def test_a_websocket_upgrade_is_refused_at_once(gateway: Gateway) -> None:
    body = b'{"model": "m0", "messages": [{"role": "user", "content": "x"}]}'
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as conn:
        conn.sendall(head.encode() + body)
        # Well below timeouts.upload (60 s), which is how long the request used to hang.
        conn.settimeout(20)
        answer = conn.recv(65536)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert b'"code":"upgrade_not_supported"' in rest


# The body of the attack: 28.6 MB of ten million empty objects, within http.max_request_bytes.
BOMB = b'{"model": "m0", "messages": [' + b",".join([b"{}"] * 10_000_000) + b"]}"
# What the worker's peak memory may grow by reading it: a few copies of the body (gRPC message,
# bytes, the body with its strings taken out), never the objects. Measured: +161 MiB, and
# +956 MiB without the bound.
BOMB_RSS_BOUND = 8 * len(BOMB)


def test_a_body_of_ten_million_objects_is_refused_before_it_is_parsed(gateway: Gateway) -> None:
    pids = list(workers(gateway).values())
    before = {pid: rss_bytes(pid, "VmHWM") for pid in pids}
    response = httpx2.post(
        f"{gateway.url}/v1/chat/completions",
        content=BOMB,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "request_too_complex"
    grown = max(rss_bytes(pid, "VmHWM") - before[pid] for pid in pids)
    assert grown < BOMB_RSS_BOUND, f"a worker's peak grew by {grown / 2**20:.0f} MiB"
    # The worker is still there, and serves.
    assert set(workers(gateway).values()) == set(pids)
    ok = httpx2.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "m0", "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )
    assert ok.status_code == 200
