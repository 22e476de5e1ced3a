"""Plumbing shared by the fake upstreams: an aiohttp app on its own event loop in a thread.

Tests are synchronous and the gateway under test runs in other processes, so each fake owns a
loop in a daemon thread and listens on an ephemeral 127.0.0.1 port:

    with FakeOpenAI() as fake:
        ... point a backend at fake.url, send traffic ...
        assert fake.requests[-1].path == "/v1/chat/completions"

A fake subclasses :class:`FakeServer` and adds its routes in :meth:`FakeServer.add_routes`; a
handler may raise :class:`Reject` to answer an error. Every request is recorded (before any
injected fault) in :attr:`FakeServer.requests`.

Every fake is as rude as a real provider behind a CDN: it gzips its answers when the request's
``accept-encoding`` allows it (``compress="always"``: even when it does not), streams included
(each write flushed, as a CDN does for SSE); it writes bodies in pieces split at arbitrary
points; and it refuses (400) any request that carries one of the gateway's own ``x-ai-eg-*``
headers, which no provider may see.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

T = TypeVar("T")

# Long enough for a reader to see chunks arrive one by one, short enough not to slow tests.
DEFAULT_CHUNK_DELAY = 0.005
Compress = Literal["asked", "always", "never"]
LEAKED_HEADER = "internal_header_leaked"  # the error code of a request with an x-ai-eg-* header


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``accept-encoding`` value admits gzip (RFC 9110: ``q=0`` refuses a coding;
    ``*`` stands for any coding not named; ``identity`` alone admits nothing else)."""
    named: dict[str, float] = {}
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if coding:
            named[coding.strip()] = q
    return named.get("gzip", named.get("x-gzip", named.get("*", 0.0))) > 0


class _Gzip:
    """gzip of one body written in pieces, each flushed so the reader gets it at once."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def piece(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        return self._z.flush()


def _pieces(data: bytes, rng: random.Random, most: int = 3) -> list[bytes]:
    """``data`` cut at up to ``most - 1`` arbitrary points."""
    if len(data) < 2:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(most - 1, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def split(data: bytes, rng: random.Random, max_chunk: int) -> list[bytes]:
    """``data`` in consecutive chunks of 1..``max_chunk`` bytes, as a stream may arrive."""
    chunks = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, max_chunk)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str  # percent-decoded, without the query
    raw_path: str  # exactly as sent on the request line, query included
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; the last value wins for repeated headers
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


class Reject(Exception):
    """Raised by a handler to answer ``status`` with ``body`` (a JSON document or bytes)."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body if isinstance(body, bytes) else orjson.dumps(body)
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        headers = {"content-type": "application/json", **self.headers}
        return web.Response(status=self.status, body=self.body, headers=headers)


@dataclass(slots=True)
class _Fault:
    status: int
    remaining: int
    path: str | None
    body: bytes | None
    headers: dict[str, str]


class FakeServer:
    """An aiohttp application served from a private event loop; a context manager."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        compress: Compress = "asked",
        chunked: bool = False,
    ) -> None:
        self.requests: list[RecordedRequest] = []
        self.compress: Compress = compress
        # Whole answers without a content-length (chunked), as servers that stream their JSON.
        self.chunked = chunked
        self._ssl_context = ssl_context
        self._port = 0
        self._faults: list[_Fault] = []
        self._faults_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- for subclasses ---------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def fault_body(self, status: int) -> bytes:
        """The body of an injected fault when :meth:`fail_next` was given none."""
        return orjson.dumps({"message": f"injected fault {status}"})

    # --- for tests --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("the fake server is not started")
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        path: str | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` requests (to ``path`` only, if given) with ``status``."""
        fault = _Fault(status, count, path, body, dict(headers or {}))
        with self._faults_lock:
            self._faults.append(fault)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the server's loop and wait for its result."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the fake server is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> Self:
        if self._loop is not None:
            raise RuntimeError("the fake server is already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        try:
            self.call(self._serve())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        try:
            if runner is not None:
                self.call(runner.cleanup())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._loop = self._thread = self._runner = None
            self._port = 0

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals --------------------------------------------------------------------------

    async def _serve(self) -> None:
        # Providers take large prompts (OpenAI: tens of MB); aiohttp's default is 1 MiB.
        app = web.Application(middlewares=[self._middleware()], client_max_size=64 * 1024 * 1024)
        app[_FAKE] = self
        self.add_routes(app)
        # A short shutdown timeout: a test may leave a slow stream running when it exits.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._runner = runner
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock, ssl_context=self._ssl_context).start()
        self._port = sock.getsockname()[1]

    def _middleware(self) -> Middleware:
        @web.middleware
        async def record_then_fault(request: web.Request, handler: Handler) -> web.StreamResponse:
            body = await request.read()
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    raw_path=request.raw_path,
                    query=dict(request.query),
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                )
            )
            leaked = sorted(h for h in request.headers if h.lower().startswith("x-ai-eg-"))
            if leaked:
                message = f"the gateway's internal headers reached the provider: {leaked}"
                return await self._rude(request, _leak(message))
            fault = self._take_fault(request.path)
            if fault is not None:
                body = fault.body if fault.body is not None else self.fault_body(fault.status)
                return await self._rude(
                    request, Reject(fault.status, body, fault.headers).response()
                )
            try:
                response = await handler(request)
            except Reject as reject:
                response = reject.response()
            return await self._rude(request, response)

        return record_then_fault

    def coding(self, request: web.Request) -> str | None:
        """The content coding of this request's answer: gzip when asked (or always)."""
        if self.compress == "never":
            return None
        if self.compress == "always" or _accepts_gzip(request.headers.get("accept-encoding", "")):
            return "gzip"
        return None

    async def _rude(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """A whole answer sent the way real servers send it: compressed if asked, in pieces."""
        if response.prepared or not isinstance(response, web.Response):
            return response
        body = response.body
        if not isinstance(body, bytes):
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        if self.coding(request) is not None and body:
            gz = _Gzip()
            body = gz.piece(body) + gz.end()
            headers["content-encoding"] = "gzip"
        out = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
        if self.chunked:
            out.enable_chunked_encoding()
        else:
            out.content_length = len(body)
        await out.prepare(request)
        try:
            for piece in _pieces(body, random.Random(len(self.requests))):
                await out.write(piece)
                await asyncio.sleep(0)
            await out.write_eof()
        except ConnectionResetError:
            pass
        return out

    def _take_fault(self, path: str) -> _Fault | None:
        with self._faults_lock:
            for fault in self._faults:
                if fault.path is None or fault.path == path:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None


_FAKE = web.AppKey("fake", FakeServer)


def _leak(message: str) -> web.Response:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": LEAKED_HEADER}})  # fmt: skip
    return web.Response(status=400, body=body, content_type="application/json")


async def stream_chunks(
    request: web.Request,
    chunks: Iterable[bytes],
    *,
    content_type: str,
    delay: float = DEFAULT_CHUNK_DELAY,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    linger: float = 0.0,
) -> web.StreamResponse:
    """Send each chunk, ``delay`` seconds apart, cut in two writes at an arbitrary point, and
    gzipped (each write flushed) when the fake compresses for this request; ``linger``
    seconds pass after the last one before the response ends."""
    fake = request.app[_FAKE]
    gzip = _Gzip() if fake.coding(request) else None
    head = {"content-type": content_type, **(headers or {})}
    if gzip is not None:
        head["content-encoding"] = "gzip"
    response = web.StreamResponse(status=status, headers=head)
    await response.prepare(request)
    rng = random.Random(len(fake.requests))
    try:
        for i, chunk in enumerate(chunks):
            if i and delay:
                await asyncio.sleep(delay)
            for piece in _pieces(chunk, rng, most=2):
                await response.write(gzip.piece(piece) if gzip is not None else piece)
        if gzip is not None:
            await response.write(gzip.end())
        if linger:
            await asyncio.sleep(linger)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away mid-stream: nothing left to send to
    return response


def http_post(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float = 10.0
) -> tuple[int, bytes]:
    """A blocking POST for synchronous tests: (status, body), error statuses included."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
