"""The fan-out client: a Titan batch's parts signed and sent by the sidecar, against the
signature-checking fake.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from aiohttp import web

from extproc.backends import BackendRuntime, build_backends
from extproc.config import GatewayConfig
from extproc.errors import GatewayError
from extproc.fanout import FanOutClient
from extproc.translate import UpstreamReply
from tests.bedrock_cases import embeddings
from tests.fakes.bedrock import THROTTLE, FakeBedrock
from tests.fakes.openai import vector
from tests.fakes.server import FakeServer


def fan_out_client(
    url: str, fake: FakeBedrock, concurrency: int = 8, message_timeout: float = 10.0, **extra: Any
) -> tuple[FanOutClient, BackendRuntime]:
    backend = {**fake.backend(url), **extra}
    config = GatewayConfig.model_validate(
        {"sidecar": {"message_timeout": message_timeout}, "backends": {"bedrock": backend}}
    )
    return FanOutClient(config, concurrency), build_backends(config)["bedrock"]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBedrock]:
    with FakeBedrock() as bedrock:
        yield bedrock


TRACEPARENT = f"00-{'1' * 32}-{'2' * 16}-01"


def send_parts(
    client: FanOutClient, backend: BackendRuntime, texts: list[str]
) -> list[UpstreamReply]:
    parts = embeddings().fan_out(orjson.dumps({"input": texts}))
    assert parts is not None

    async def send() -> list[UpstreamReply]:
        try:
            return await client.send(backend, parts, {"traceparent": TRACEPARENT})
        finally:
            await client.close()

    return asyncio.run(send())


def test_parts_are_signed_and_sent_separately(fake: FakeBedrock) -> None:
    seen = len(fake.requests)
    texts = [f"text number {i}" for i in range(10)]
    replies = send_parts(*fan_out_client(fake.url, fake), texts)
    assert [r.status for r in replies] == [200] * 10
    assert [orjson.loads(r.body)["embedding"] for r in replies] == [
        vector(text, 1024) for text in texts
    ]
    sent = fake.requests[seen:]
    assert sorted(r.json()["inputText"] for r in sent) == sorted(texts)
    assert len({r.headers["authorization"] for r in sent}) == 10
    assert {r.headers["host"] for r in sent} == {fake.authority}
    assert {r.headers["traceparent"] for r in sent} == {TRACEPARENT}


def test_no_part_is_sent_after_a_failure(fake: FakeBedrock) -> None:
    seen = len(fake.requests)
    replies = send_parts(*fan_out_client(fake.url, fake, concurrency=1), ["a", THROTTLE, "c"])
    assert [r.status for r in replies] == [200, 429]
    assert len(fake.requests) == seen + 2


class SlowTitan(FakeServer):
    """Answers any POST like Titan after ``delay`` seconds, counting the calls in flight."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.in_flight = self.most_in_flight = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.json_response({"embedding": [0.5], "inputTextTokenCount": 1})


def test_concurrency_is_bounded() -> None:
    with FakeBedrock() as fake, SlowTitan(0.05) as slow:
        replies = send_parts(*fan_out_client(slow.url, fake, concurrency=3), list("abcdefghij"))
    assert len(replies) == 10
    assert slow.most_in_flight == 3


def test_slow_parts_time_out_before_envoy_gives_up() -> None:
    with FakeBedrock() as fake, SlowTitan(5.0) as slow:
        client, backend = fan_out_client(slow.url, fake, message_timeout=0.3)
        with pytest.raises(GatewayError) as raised:
            send_parts(client, backend, ["a", "b"])
    assert raised.value.status == 504 and raised.value.code == "upstream_timeout"


def test_unreachable_backend() -> None:
    with FakeBedrock() as fake:
        with socket.socket() as sock:  # a port nobody listens on once closed
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(GatewayError) as raised:
            send_parts(*fan_out_client(f"http://127.0.0.1:{port}", fake), ["a", "b"])
    assert raised.value.status == 503 and raised.value.code == "upstream_unavailable"


def test_tls_verifies_the_backend_ca_and_sni(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("bedrock.internal").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with FakeBedrock(ssl_context=server_ctx) as fake:
        tls = {"ca_file": str(ca_file), "sni": "bedrock.internal"}
        replies = send_parts(*fan_out_client(fake.url, fake, tls=tls), ["a", "b"])
        assert [r.status for r in replies] == [200, 200]
        for wrong in ({"sni": "bedrock.internal"}, {"ca_file": str(ca_file)}):
            with pytest.raises(GatewayError) as raised:
                send_parts(*fan_out_client(fake.url, fake, tls=wrong), ["a", "b"])
            assert raised.value.status == 503
