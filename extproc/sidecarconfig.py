"""The sidecar's part of the configuration: where its workers listen, and the mutual TLS that
makes its TCP ports a trust boundary."""

from __future__ import annotations

import os

from pydantic import Field

from extproc.configbase import ConfigModel, Duration


class SidecarTLS(ConfigModel):
    """Mutual TLS on the sidecar's TCP ports (ext_proc, access log, metrics).

    Whoever reaches those ports is served as Envoy: given provider credentials on the requests
    it sends, and believed about the usage it reports. So each side proves itself with a
    certificate signed by ``ca_file``, a CA kept for this link alone (``ai-gateway certs``
    makes one): the sidecar requires Envoy's, Envoy checks the sidecar's against
    ``server_name``. Files are read when a process starts; Envoy reads only its own pair and
    the CA (the rendered config names the files, it holds no key).
    """

    ca_file: str
    cert_file: str
    key_file: str
    envoy_cert_file: str
    envoy_key_file: str
    server_name: str = "sidecar"


class Sidecar(ConfigModel):
    """Where the ext_proc workers listen.

    Worker ``i`` listens on ``port + i`` (TCP) or on ``<socket_dir>/worker-<i>.sock`` (Unix
    socket, used by ``ai-gateway run``); each is its own endpoint of the ext_proc cluster because
    Envoy multiplexes all streams of a worker thread over one HTTP/2 connection per endpoint.
    Unix sockets are made owner-only (0600); TCP needs ``tls`` unless ``allow_plaintext``.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=1063, ge=1, le=65535)
    workers: int = Field(default=0, ge=0, description="0 means one per CPU core")
    socket_dir: str | None = None
    message_timeout: Duration = 10.0
    # Where the supervisor serves the workers' Prometheus metrics (for the admin port's
    # /metrics): <socket_dir>/metrics.sock with Unix sockets, else host:metrics_port.
    metrics_port: int = Field(default=1069, ge=1, le=65535)
    tls: SidecarTLS | None = None
    # Plaintext TCP lets any process that reaches the port pose as Envoy: refused by
    # `ai-gateway serve` (loopback included: every local process and user) unless set.
    allow_plaintext: bool = False

    def plaintext_error(self) -> str | None:
        """Why ``serve`` must not listen as configured, or None."""
        if self.socket_dir or self.tls is not None or self.allow_plaintext:
            return None
        return (
            f"sidecar.tls: the sidecar would listen on plaintext TCP ({self.host}:{self.port}),"
            " where any process that reaches it can pose as Envoy, get provider credentials"
            " and forge usage records. Set sidecar.tls (`ai-gateway certs -o DIR` makes a set),"
            " or sidecar.socket_dir (Unix sockets), or sidecar.allow_plaintext: true to accept"
            " the risk."
        )

    def metrics_address(self) -> str:
        if self.socket_dir:
            return f"unix:{self.socket_dir}/metrics.sock"
        return f"{self.host}:{self.metrics_port}"

    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)
