"""Per-client bounds on uploads in progress: request bodies Envoy is still receiving.

Envoy buffers a body for the router stage until it is complete (up to
``http.max_request_bytes``), so a client that opens many large uploads and never finishes them
makes Envoy hold all of them until ``timeouts.upload``. The router stage sees each request's
headers (the client authenticated, its ``content-length``) before Envoy buffers the body: here
it counts, per client, the uploads whose body has not arrived and the bytes they announced, and
refuses one over either bound with a 429 at once, before Envoy reads more of it.

The state is per worker process (no state is shared between workers): a client's effective
bound is ``workers`` times the configured one, since Envoy spreads its requests over the
workers. Pure bookkeeping, no I/O: tested without gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass

from extproc.config import HTTPLimits
from extproc.errors import RATE_LIMIT, GatewayError

TOO_MANY_UPLOADS = "too_many_uploads"


@dataclass(slots=True)
class _Held:
    uploads: int = 0
    bytes: int = 0


class Upload:
    """One gRPC stream's upload: counted from :meth:`begin` until :meth:`end`, which the
    stream's end calls however it ends (idempotent)."""

    __slots__ = ("_bytes", "_client", "_uploads")

    def __init__(self, uploads: Uploads) -> None:
        self._uploads = uploads
        self._client: str | None = None
        self._bytes = 0

    def begin(self, client: str, content_length: str | None) -> None:
        """Count this upload for ``client``, or raise the 429 that refuses it."""
        if self._uploads.enabled:
            self._bytes = self._uploads.admit(client, content_length)
            self._client = client

    def end(self) -> None:
        if self._client is not None:
            self._uploads.release(self._client, self._bytes)
            self._client = None


class Uploads:
    """The uploads in progress of every client of one worker."""

    def __init__(self, limits: HTTPLimits) -> None:
        self._max_uploads = limits.uploads_per_client
        self._max_bytes = limits.upload_bytes_per_client
        self._largest = limits.max_request_bytes
        self._held: dict[str, _Held] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._max_uploads or self._max_bytes)

    def upload(self) -> Upload:
        return Upload(self)

    def admit(self, client: str, content_length: str | None) -> int:
        """Count one more upload of ``client`` and return the bytes it counts for, or raise
        the 429 that refuses it.

        ``content_length`` is the header as sent: without one (chunked), or with one Envoy
        will refuse anyway, the upload counts as the largest body the gateway accepts."""
        declared = self._declared(content_length)
        held = self._held.get(client) or _Held()
        over_count = self._max_uploads and held.uploads + 1 > self._max_uploads
        over_bytes = self._max_bytes and held.bytes + declared > self._max_bytes
        if over_count or over_bytes:
            raise GatewayError(
                429,
                f"Too many uploads in progress for this client ({held.uploads}, announcing"
                f" {held.bytes} bytes; this request adds {declared}). The gateway admits"
                f" {self._max_uploads or 'any number of'} uploads and"
                f" {self._max_bytes or 'any number of'} bytes in progress per client and"
                " worker: finish the uploads in progress first.",
                RATE_LIMIT,
                code=TOO_MANY_UPLOADS,
                headers={"retry-after": "1"},
            )
        held.uploads += 1
        held.bytes += declared
        self._held[client] = held
        return declared

    def in_progress(self, client: str) -> tuple[int, int]:
        """The uploads of ``client`` in progress and the bytes they announced."""
        held = self._held.get(client)
        return (held.uploads, held.bytes) if held is not None else (0, 0)

    def _declared(self, content_length: str | None) -> int:
        text = (content_length or "").strip()
        if not text.isdigit():
            return self._largest
        return min(int(text), self._largest)

    def release(self, client: str, declared: int) -> None:
        held = self._held[client]
        held.uploads -= 1
        held.bytes -= declared
        if held.uploads == 0:
            del self._held[client]  # the map holds only clients with uploads in progress


def uploader(key: str | None, address: str) -> str:
    """Whose upload this is: the gateway key's name, else the client's address."""
    return f"key:{key}" if key is not None else f"address:{client_address(address)}"


def client_address(address: str) -> str:
    """The IP of Envoy's ``source.address`` (``1.2.3.4:5678``, ``[::1]:5678``), without the
    port: one client's connections share it."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address
    return host.removeprefix("[").removesuffix("]")
