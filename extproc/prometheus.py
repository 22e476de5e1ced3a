"""The workers' Prometheus metrics, summed and served by the supervisor.

Every worker process writes its samples into ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode); this server reads them all, so one scrape sees the whole sidecar however
many workers it runs and however often they were restarted.
"""

from __future__ import annotations

import os
import shutil
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from extproc.config import SidecarTLS
from extproc.transport import is_unix, owner_only, server_ssl_context

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_directory(path: Path) -> None:
    """An empty directory, exported to the workers started after this call."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)


def multiproc_directory() -> Path | None:
    """This worker's Prometheus directory (set by the supervisor), if any."""
    path = os.environ.get(MULTIPROC_ENV)
    return Path(path) if path else None


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    timeout = 10  # seconds a connection may stay silent (TLS handshake included)

    def do_GET(self) -> None:
        if self.path.partition("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = generate_latest(self.registry)
        self.send_response(200)
        self.send_header("content-type", CONTENT_TYPE_LATEST)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "metrics-client"  # Unix sockets have no client address

    def log_message(self, format: str, *args: Any) -> None:
        return


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve_metrics(
    address: str, directory: Path, tls: SidecarTLS | None = None
) -> socketserver.BaseServer:
    """Serve ``GET /metrics`` on ``unix:/path`` (owner-only) or ``host:port`` (with mutual TLS
    when ``tls`` is given) from a daemon thread."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    handler = type("MetricsHandler", (_Handler,), {"registry": registry})
    server: socketserver.BaseServer
    if is_unix(address):
        path = address[5:]
        Path(path).unlink(missing_ok=True)
        with owner_only():
            server = _UnixHTTPServer(path, handler)
    else:
        host, _, port = address.rpartition(":")
        server = ThreadingHTTPServer((host, int(port)), handler)
        if tls is not None:
            # The handshake runs in the request's own thread, on its first read, so a client
            # that never finishes one holds only that thread (for _Handler.timeout).
            server.socket = server_ssl_context(tls).wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
