"""Plumbing shared by the fake upstreams: an aiohttp app on its own event loop in a thread.

Tests are synchronous and the gateway under test runs in other processes, so each fake owns a
loop in a daemon thread and listens on an ephemeral 127.0.0.1 port:

    with FakeOpenAI() as fake:
        ... point a backend at fake.url, send traffic ...
        assert fake.requests[-1].path == "/v1/chat/completions"

A fake subclasses :class:`FakeServer` and adds its routes in :meth:`FakeServer.add_routes`; a
handler may raise :class:`Reject` to answer an error. Every request is recorded (before any
injected fault) in :attr:`FakeServer.requests`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

T = TypeVar("T")

# Long enough for a reader to see chunks arrive one by one, short enough not to slow tests.
DEFAULT_CHUNK_DELAY = 0.005


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

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.requests: list[RecordedRequest] = []
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
        app = web.Application(middlewares=[self._middleware()])
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
            fault = self._take_fault(request.path)
            if fault is not None:
                body = fault.body if fault.body is not None else self.fault_body(fault.status)
                return Reject(fault.status, body, fault.headers).response()
            try:
                return await handler(request)
            except Reject as reject:
                return reject.response()

        return record_then_fault

    def _take_fault(self, path: str) -> _Fault | None:
        with self._faults_lock:
            for fault in self._faults:
                if fault.path is None or fault.path == path:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None


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
    """Send each chunk as its own write (one HTTP chunk), sleeping ``delay`` between them;
    ``linger`` seconds pass after the last one before the response ends."""
    response = web.StreamResponse(
        status=status, headers={"content-type": content_type, **(headers or {})}
    )
    await response.prepare(request)
    try:
        for i, chunk in enumerate(chunks):
            if i and delay:
                await asyncio.sleep(delay)
            await response.write(chunk)
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
