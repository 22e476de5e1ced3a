"""Fan-out: the provider calls of one client request that Envoy cannot make, made by the sidecar.

Envoy forwards one upstream request per attempt. When a provider API takes one item per call
where the client's API takes a batch (Amazon Titan embeddings on Bedrock), the translator splits
the request (:class:`~extproc.translate.FanOut`), the upstream stage sends the parts here, and
answers the client with the translator's merge as an immediate response.

These calls bypass Envoy: they go straight to the backend Envoy picked for the attempt, with its
TLS settings (``tls.ca_file``, ``tls.sni``) and its credential, each part signed on its own.
Envoy's retries and outlier detection do not see them; the client sees the provider's status
(a 429 stays a 429, for the client to retry).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import yarl

from extproc.backends import BackendRuntime
from extproc.config import GatewayConfig
from extproc.errors import UPSTREAM, GatewayError
from extproc.translate import UpstreamReply, UpstreamRequest

# Parts of one client request in flight at once: a batch must not flood the provider's rate
# limit, nor wait for its parts one by one.
CONCURRENCY = 8
# Envoy fails the request itself when the sidecar has not answered a message within
# sidecar.message_timeout; a fan-out gives up a little earlier, so the client gets its error.
_MESSAGE_TIMEOUT_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class _Target:
    """Where and how the parts for one backend are sent."""

    origin: str  # scheme://host:port; each part's path already holds the URL's prefix
    tls_context: ssl.SSLContext | bool  # True on plain HTTP, where aiohttp ignores it
    server_hostname: str | None  # tls.sni: the SNI and the name the certificate must carry
    timeout: float  # seconds, for all the parts of one client request together


class FanOutClient:
    """Sends fan-out parts: one HTTP client session per worker process, opened on first use."""

    def __init__(self, config: GatewayConfig, concurrency: int = CONCURRENCY) -> None:
        self._config = config
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._targets: dict[str, _Target] = {}

    async def send(
        self,
        backend: BackendRuntime,
        requests: Sequence[UpstreamRequest],
        headers: Mapping[str, str],
    ) -> list[UpstreamReply]:
        """Sign and send ``requests`` to ``backend``, ``headers`` added; the replies in order.

        After a failed reply (not 2xx) no further part is sent: the client gets that failure
        whatever the others say, and a throttled provider is not pressed harder. The list then
        holds the replies received, the failure among them.

        Raises :class:`GatewayError`: 504 when the parts take longer than the timeout, 503 when
        the backend cannot be reached, or the credential's own error.
        """
        target = self._target(backend.name)
        session = self._open()
        replies: list[UpstreamReply | None] = [None] * len(requests)
        pending = iter(enumerate(requests))  # shared by the workers: each part is sent once
        failed = False

        async def worker() -> None:
            nonlocal failed
            for index, request in pending:
                if failed:
                    return
                reply = await self._send_one(session, target, backend, request, headers)
                replies[index] = reply
                failed = failed or not 200 <= reply.status < 300

        try:
            async with asyncio.timeout(target.timeout), asyncio.TaskGroup() as group:
                for _ in range(min(self._concurrency, len(requests))):
                    group.create_task(worker())
        except TimeoutError:
            raise GatewayError(
                504,
                f"The backend {backend.name!r} did not answer the {len(requests)} parts of this"
                f" request within {target.timeout:g}s.",
                UPSTREAM,
                code="upstream_timeout",
            ) from None
        except ExceptionGroup as group:
            # The TaskGroup stopped the other parts at the first error; a GatewayError is the
            # client's answer, anything else is a bug for the gRPC layer's catch-all.
            first = group.exceptions[0]
            if isinstance(first, GatewayError):
                raise first from None
            raise
        return [reply for reply in replies if reply is not None]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send_one(
        self,
        session: aiohttp.ClientSession,
        target: _Target,
        backend: BackendRuntime,
        request: UpstreamRequest,
        headers: Mapping[str, str],
    ) -> UpstreamReply:
        # Signed just before it leaves, as each attempt through Envoy is.
        await backend.auth.apply(request, backend.authority)
        try:
            async with session.request(
                request.method,
                # encoded: the path leaves exactly as translated and signed (%3A stays %3A).
                yarl.URL(target.origin + request.path, encoded=True),
                data=request.body,
                headers={
                    **backend.static_headers,
                    **headers,
                    **request.headers,
                    "host": backend.authority,
                },
                ssl=target.tls_context,
                server_hostname=target.server_hostname,
            ) as response:
                body = await response.read()
        except aiohttp.ClientError as exc:
            # The class name only, as Envoy's own "upstream unavailable" reply says no more.
            raise GatewayError(
                503,
                f"The backend {backend.name!r} could not be reached ({type(exc).__name__}).",
                UPSTREAM,
                code="upstream_unavailable",
            ) from None
        head = {name.lower(): value for name, value in response.headers.items()}
        return UpstreamReply(response.status, head, body)

    def _open(self) -> aiohttp.ClientSession:
        # Opened on first use because a session belongs to the running loop (the worker's).
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._config.timeouts.connect
                ),
                # One session serves every client: a provider's cookie must not travel between
                # them.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _target(self, name: str) -> _Target:
        target = self._targets.get(name)
        if target is None:
            backend = self._config.backends[name]
            scheme, host, port, _ = backend.endpoint()
            tls_context: ssl.SSLContext | bool = True
            if scheme == "https":
                # What Envoy's cluster trusts: the backend's CA file, else the system store.
                tls_context = ssl.create_default_context(cafile=backend.tls.ca_file)
            sidecar_limit = self._config.sidecar.message_timeout * _MESSAGE_TIMEOUT_SHARE
            target = _Target(
                origin=str(yarl.URL.build(scheme=scheme, host=host, port=port)),
                tls_context=tls_context,
                server_hostname=backend.tls.sni if scheme == "https" else None,
                timeout=min(backend.timeout or self._config.timeouts.request, sidecar_limit),
            )
            self._targets[name] = target
        return target
