"""The sidecar's own work per request, without Envoy or a gRPC transport: the ext_proc messages
of one request (request headers and body, response headers and body, as Envoy sends them for a
single-backend model) played into ``ExternalProcessor.Process`` in a loop, CPU time measured.

    .venv/bin/python -m bench.sidecar_work [--stream] [--requests N]

Run it from two checkouts to compare commits: unlike ``make bench`` on a shared 2-core machine,
its figure barely moves with other work on the machine (CPU time of this process only; the
minimum of five rounds is reported).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Mapping, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from prometheus_client import CollectorRegistry

from bench.payloads import (
    CHAT_MODEL,
    STREAM_MODEL,
    chat_request,
    chat_response,
    stream_response,
)
from extproc.config import parse_config
from extproc.server import ExternalProcessor
from extproc.telemetry import Telemetry
from extproc.wire import ROUTER_STAGE, STAGE_METADATA

ROUNDS = 5


class _Context:
    """What ``Process`` reads of a ``grpc.aio.ServicerContext``."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((STAGE_METADATA, ROUTER_STAGE),)

    def done(self) -> bool:
        return False


def _headers(headers: Mapping[str, str]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
    )


def script(stream: bool) -> list[pb.ProcessingRequest]:
    """The four messages of one bench request, as Envoy sends them to the router stage."""
    body = chat_request(STREAM_MODEL if stream else CHAT_MODEL, stream)
    answer = stream_response() if stream else chat_response()
    request = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":authority": "127.0.0.1:1975",
        ":scheme": "http",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "authorization": "Bearer sk-bench-client",
        "x-request-id": "a3f2c1d4-1111-2222-3333-444455556666",
    }
    response = {
        ":status": "200",
        "content-type": "text/event-stream" if stream else "application/json",
        "content-length": str(len(answer)),
    }
    return [
        pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=_headers(request))),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)),
        pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=_headers(response))),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=answer, end_of_stream=True)),
    ]


async def _play(processor: ExternalProcessor, messages: Sequence[pb.ProcessingRequest]) -> int:
    async def requests() -> AsyncIterator[pb.ProcessingRequest]:
        for message in messages:
            yield message

    return len([reply async for reply in processor.Process(requests(), _Context())])


async def measure(stream: bool, requests: int) -> float:
    """CPU microseconds per request, the least of :data:`ROUNDS` rounds."""
    model = STREAM_MODEL if stream else CHAT_MODEL
    config = parse_config(
        {
            "backends": {model: {"schema": "openai", "url": "http://127.0.0.1:1/v1"}},
            "models": [{"name": model, "backends": [{"backend": model}]}],
        }
    )
    telemetry = Telemetry(config, registry=CollectorRegistry())
    processor = ExternalProcessor(config, telemetry)
    messages = script(stream)
    try:
        if await _play(processor, messages) != len(messages):
            raise SystemExit("the sidecar did not answer every message: not a served request")
        for _ in range(requests // 4):  # warm-up
            await _play(processor, messages)
        rounds = []
        for _ in range(ROUNDS):
            start = time.process_time()
            for _ in range(requests):
                await _play(processor, messages)
            rounds.append((time.process_time() - start) / requests * 1e6)
        return min(rounds)
    finally:
        await processor.close()
        telemetry.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", action="store_true", help="a 20-chunk stream, not chat")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    args = parser.parse_args()
    import uvloop  # the sidecar's event loop

    per_request = uvloop.run(measure(args.stream, args.requests))
    kind = "stream-20" if args.stream else "chat"
    print(f"{kind}: {per_request:.1f} us of sidecar CPU per request (least of {ROUNDS} rounds)")


if __name__ == "__main__":
    main()
