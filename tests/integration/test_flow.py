"""Resource bounds a client reaches through real Envoy and sidecar (issue 29): memory is measured
from /proc (RSS of Envoy and of the sidecar's workers), against the generous bounds the README's
security section documents; nothing here asserts a time.

- Slow readers: a client that sends a stream request and then stops reading, while the provider
  streams fast and large. Envoy used to hold 32 MiB per direction before it stopped reading
  the provider (its per-connection buffers were ``http.max_request_bytes``), coalescing reads
  into chunks of tens of MiB that the sidecar got whole (~150 MiB of it per reader) or refused
  ("message larger than max"). Now the connections buffer ``http.stream_buffer_bytes``
  (1 MiB), while a request's own buffer (its body, a buffered answer, the chunks a stream
  has in flight to the sidecar) keeps ``http.max_request_bytes``.
- Partial uploads: one client opening many uploads that it never finishes (see
  ``test_uploads_*``).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx2
import orjson
import pytest

from extproc.clients import hash_key
from tests.fakes.faulty import FaultyUpstream
from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway
from tests.integration.probes import envoy_pid, rss_bytes, wait_for, workers

MIB = 1024 * 1024
SLOW_READERS = 4
# Documented in the README (security section): about http.max_request_bytes (32 MiB) of Envoy
# and as much of the sidecar per slow reader, measured; before, ~88 and ~150 MiB (4 readers).
ENVOY_PER_READER = 48 * MIB
SIDECAR_PER_READER = 64 * MIB


@pytest.fixture(scope="module")
def fast_provider() -> Iterator[FaultyUpstream]:
    # A stream far larger than any buffer: what it does not send stays in its own socket.
    with FaultyUpstream("huge_sse", size=400 * MIB) as up:
        yield up


@pytest.fixture(scope="module")
def big_json() -> Iterator[FaultyUpstream]:
    with FaultyUpstream("huge_json", size=8 * MIB) as up:
        yield up


@pytest.fixture(scope="module")
def echo() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    fast_provider: FaultyUpstream, big_json: FaultyUpstream, echo: FakeOpenAI
) -> Iterator[Gateway]:
    backends = {
        "fast": {"schema": "openai", "url": f"{fast_provider.url}/v1"},
        "big": {"schema": "openai", "url": f"{big_json.url}/v1"},
        "echo": {"schema": "openai", "url": f"{echo.url}/v1"},
    }
    config = {
        "backends": backends,
        "models": [{"name": name, "backends": [{"backend": name}]} for name in backends],
    }
    with Gateway(config, workers=2) as gw:
        yield gw


def _memory(gw: Gateway) -> tuple[int, int]:
    """RSS of Envoy, and of the sidecar's workers together."""
    return rss_bytes(envoy_pid(gw)), sum(rss_bytes(pid) for pid in workers(gw).values())


def _slow_reader(gw: Gateway) -> socket.socket:
    body = orjson.dumps(
        {"model": "fast", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    )
    conn = socket.create_connection(("127.0.0.1", gw.port))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    conn.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    return conn


def test_slow_readers_of_a_fast_stream_hold_bounded_memory(
    gateway: Gateway, fast_provider: FaultyUpstream
) -> None:
    envoy_before, sidecar_before = _memory(gateway)
    readers = [_slow_reader(gateway) for _ in range(SLOW_READERS)]
    try:
        wait_for(lambda: fast_provider.requests >= SLOW_READERS, timeout=30, what="the streams")
        # Memory grows while the buffers fill, then stays: sample until two readings agree
        # (RSS never shrinks much while the readers are stalled).
        peak = _memory(gateway)
        for _ in range(20):
            time.sleep(0.5)
            now = _memory(gateway)
            if now == peak:
                break
            peak = (max(peak[0], now[0]), max(peak[1], now[1]))
        # Each reader got the head and the first bytes: the streams are live, not refused.
        assert readers[0].recv(64).startswith(b"HTTP/1.1 200")
    finally:
        for conn in readers:
            conn.close()
    envoy_growth, sidecar_growth = peak[0] - envoy_before, peak[1] - sidecar_before
    grown = f"Envoy +{envoy_growth / MIB:.0f} MiB, sidecar +{sidecar_growth / MIB:.0f} MiB"
    assert envoy_growth < SLOW_READERS * ENVOY_PER_READER, grown
    assert sidecar_growth < SLOW_READERS * SIDECAR_PER_READER, grown
    assert not [line for line in gateway.output if "larger than max" in line]


def test_request_bodies_up_to_the_limit_are_still_buffered(gateway: Gateway) -> None:
    # The connections' buffers are small now; the routes keep http.max_request_bytes.
    content = "x" * (30 * MIB)
    body = orjson.dumps({"model": "echo", "messages": [{"role": "user", "content": content}]})
    response = httpx2.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:300]


def test_buffered_answers_over_the_connection_buffer_are_served(gateway: Gateway) -> None:
    response = httpx2.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "big", "messages": [{"role": "user", "content": "x"}]},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["choices"][0]["message"]["content"]) == 8 * MIB


# --- partial uploads --------------------------------------------------------------------------

UPLOAD = 31 * MIB
KEY = "sk-gw-uploader"


@pytest.fixture(scope="module")
def keyed(echo: FakeOpenAI) -> Iterator[Gateway]:
    # One worker: the bounds are per worker, and one makes the order of admission certain.
    config = {
        "backends": {"echo": {"schema": "openai", "url": f"{echo.url}/v1"}},
        "models": [{"name": "echo", "backends": [{"backend": "echo"}]}],
        "clients": [{"name": "uploader", "key_sha256": hash_key(KEY)}],
        "http": {"uploads_per_client": 8, "upload_bytes_per_client": 64 * MIB},
    }
    with Gateway(config, workers=1) as gw:
        yield gw


def _upload_head(length: int, key: str | None = KEY) -> bytes:
    auth = b"authorization: Bearer %s\r\n" % key.encode() if key else b""
    return (
        b"POST /v1/embeddings HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        b"%scontent-length: %d\r\n\r\n" % (auth, length)
    )


def _partial_upload(gw: Gateway, key: str | None = KEY) -> socket.socket:
    """An upload of UPLOAD bytes that stops one byte short: Envoy holds what came."""
    conn = socket.create_connection(("127.0.0.1", gw.port))
    conn.settimeout(60)
    # Refused at the headers: Envoy answers and stops reading (the send may then fail).
    with contextlib.suppress(OSError):
        conn.sendall(_upload_head(UPLOAD, key) + b"x" * (UPLOAD - 1))
    return conn


def _refusal(conn: socket.socket) -> dict[str, object]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        part = conn.recv(65536)
        if not part:
            break
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429"), data[:300]
    error: dict[str, object] = orjson.loads(body)["error"]
    return error


def _small_request(gw: Gateway, key: str | None = KEY, padding: int = 0) -> httpx2.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx2.post(
        f"{gw.url}/v1/embeddings",
        json={"model": "echo", "input": "hello" + " " * padding},
        headers=headers,
        timeout=30,
    )


def test_uploads_one_client_never_finishes_are_bounded(keyed: Gateway) -> None:
    envoy_before = rss_bytes(envoy_pid(keyed))
    uploads = [_partial_upload(keyed) for _ in range(20)]
    try:
        # 64 MiB in progress per client and worker: two uploads of 31 MiB; the others were
        # refused at their headers, before Envoy buffered them.
        for conn in uploads[2:]:
            error = _refusal(conn)
            assert (error["code"], error["type"]) == ("too_many_uploads", "rate_limit_error")
        envoy_growth = rss_bytes(envoy_pid(keyed)) - envoy_before
        # 20 uploads held used to cost Envoy ~640 MiB; the two admitted hold ~62 MiB.
        assert envoy_growth < 128 * MIB, envoy_growth / MIB
        # What is left of the client's 64 MiB: a small request is served, 3 MiB more are not.
        assert _small_request(keyed).status_code == 200
        assert _small_request(keyed, padding=3 * MIB).status_code == 429
    finally:
        for conn in uploads:
            conn.close()
    # Cut uploads release their place when Envoy ends their streams.
    wait_for(lambda: _small_request(keyed).status_code == 200, timeout=30, what="a release")


def test_uploads_that_arrive_release_their_place(keyed: Gateway) -> None:
    for _ in range(20):  # more than the bound, one after the other
        assert _small_request(keyed).status_code == 200


def test_uploads_without_keys_are_counted_per_address(echo: FakeOpenAI) -> None:
    config = {
        "backends": {"echo": {"schema": "openai", "url": f"{echo.url}/v1"}},
        "models": [{"name": "echo", "backends": [{"backend": "echo"}]}],
        "http": {"uploads_per_client": 1, "upload_bytes_per_client": 0},
    }
    with Gateway(config, workers=1) as gw:
        held = _partial_upload(gw, key=None)
        try:
            refused = _partial_upload(gw, key=None)
            assert _refusal(refused)["code"] == "too_many_uploads"
            refused.close()
        finally:
            held.close()
        wait_for(
            lambda: _small_request(gw, key=None).status_code == 200, timeout=30, what="a release"
        )
