"""The Python ext_proc floor: an external processor that does nothing, as fast as Python can.

Every request still travels the gateway's path through Envoy and the sidecar protocol (request
headers, the buffered request body, response headers, the response body, one gRPC message
each), but each reply is the empty "continue" of its phase: no routing, no translation, no
accounting. Same runtime as the sidecar (grpc.aio on uvloop, one process per worker, each on its
own Unix socket). What this system costs over bare Envoy is the price of the design; what the
gateway costs over this system is the price of its own work.

Run as ``python -m bench.floor unix:/path/worker-0.sock``; it serves until SIGTERM.
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
    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ProcessingResponse]:
        async for req in request_iterator:
            yield _CONTINUE[req.WhichOneof("request")]


async def serve(address: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(Floor(), server)
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
    asyncio.run(serve(sys.argv[1]))
