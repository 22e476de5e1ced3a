"""A paced SSE upstream: the 20 events of the stream, one write each, a gap apart.

The Envoy ``direct_response`` upstream hands the whole stream to the system under test in one
read, so the gateway's response processing sees one body chunk instead of 20: the per-chunk
cost of a real stream (one ext_proc message per chunk) would go unmeasured. Real providers send
tokens milliseconds apart; this server does the same with a small gap, so every event reaches
Envoy on its own.

It is a bare asyncio protocol on uvloop rather than a web framework, to keep its CPU per
request low on a machine whose cores the system under test needs. Run as
``python -m bench.paced PORT PATH API_KEY GAP_MS``; it answers until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast

from bench.payloads import stream_response

_UNAUTHORIZED = (
    b'{"error":{"message":"bench upstream: wrong path or API key",'
    b'"type":"invalid_request_error","param":null,"code":"invalid_api_key"}}'
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class PacedSSE(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time (Envoy does not pipeline)."""

    def __init__(self, path: bytes, auth: bytes, events: list[bytes], gap: float) -> None:
        self._path = path
        self._auth = auth
        self._events = events
        self._gap = gap
        self._buffer = b""
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but implement it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._next_request()

    def _next_request(self) -> None:
        if self._busy or self._transport is None:
            return
        head, sep, rest = self._buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        if len(rest) < length:
            return  # the body is still arriving
        self._buffer = rest[length:]
        parts = lines[0].split(b" ")
        target = parts[1] if len(parts) > 1 else b""
        if target != self._path or headers.get(b"authorization") != self._auth:
            self._transport.write(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(_UNAUTHORIZED), _UNAUTHORIZED)
            )
            self._next_request()
            return
        self._busy = True
        self._transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
            + _chunk(self._events[0])
        )
        self._schedule(1)

    def _schedule(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._gap, self._send, index)

    def _send(self, index: int) -> None:
        if self._transport is None:
            return
        if index < len(self._events):
            self._transport.write(_chunk(self._events[index]))
            self._schedule(index + 1)
            return
        self._transport.write(b"0\r\n\r\n")
        self._busy = False
        self._timer = None
        self._next_request()


def split_events(body: bytes) -> list[bytes]:
    """The SSE body as its events, each with its blank-line terminator."""
    return [e + b"\n\n" for e in body.split(b"\n\n") if e]


async def serve(port: int, path: str, api_key: str, gap_ms: float) -> None:
    loop = asyncio.get_running_loop()
    events = split_events(stream_response())
    auth = f"Bearer {api_key}".encode()
    server = await loop.create_server(
        lambda: PacedSSE(path.encode(), auth, events, gap_ms / 1000),
        host="127.0.0.1",
        port=port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str]) -> None:
    port, path, api_key, gap_ms = argv
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the plain asyncio loop works too, a little slower
        pass
    asyncio.run(serve(int(port), path, api_key, float(gap_ms)))


if __name__ == "__main__":
    main(sys.argv[1:])
