"""The Python ext_proc floor: an external processor that does nothing, as fast as Python can.

Every request still travels the gateway's path through Envoy and the sidecar protocol (request
headers, the buffered request body, response headers, the response body, one gRPC message
each), but each reply is the empty "continue" of its phase: no routing, no translation, no
accounting. Same runtime as the sidecar (grpc.aio on uvloop, one process per worker, each on its
own Unix socket). What this system costs over bare Envoy is the price of the design; what the
gateway costs over this system is the price of its own work.

Run as ``python -m bench.floor unix:/path/worker-0.sock``; it serves until SIGTERM. With
``--hand-off`` it ends each stream after the request body, as the sidecar does for a request
whose answer it leaves to Envoy (``accounting.mode: envoy``): two messages per request.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import grpc
import uvloop
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

# Built once, as the sidecar builds its constant replies.
_CONTINUE = {
    kind: pb.ProcessingResponse(**{kind: message})
    for kind, message in (
        ("request_headers", pb.HeadersResponse()),
        ("request_body", pb.BodyResponse()),
        ("response_headers", pb.HeadersResponse()),
        ("response_body", pb.BodyResponse()),
    )
}


class Floor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, hand_off: bool) -> None:
        self._last = "request_body" if hand_off else None

    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ProcessingResponse]:
        async for req in request_iterator:
            kind = req.WhichOneof("request")
            yield _CONTINUE[kind]
            if kind == self._last:
                return


async def serve(address: str, hand_off: bool) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(Floor(hand_off), server)
    server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(serve(sys.argv[1], "--hand-off" in sys.argv[2:]))
