"""How the sidecar's own ports admit only Envoy.

Every sidecar port (ext_proc and access log on each worker, the supervisor's metrics) is
either a Unix socket only its owner may connect to, or TCP with mutual TLS (``sidecar.tls``):
the peer must present a certificate signed by the link's CA. Plaintext TCP is refused by
``ai-gateway serve`` unless ``sidecar.allow_plaintext`` is set (see ``Sidecar.plaintext_error``).
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc

from extproc.config import SidecarTLS


def is_unix(address: str) -> bool:
    return address.startswith("unix:")


@contextlib.contextmanager
def owner_only() -> Iterator[None]:
    """Sockets bound inside are created 0600: another user cannot connect to them. A umask,
    not a chmod after bind, so there is no moment when the socket is open to others."""
    previous = os.umask(0o177)
    try:
        yield
    finally:
        os.umask(previous)


def grpc_server_credentials(tls: SidecarTLS) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
        root_certificates=Path(tls.ca_file).read_bytes(),
        require_client_auth=True,
    )


def server_ssl_context(tls: SidecarTLS) -> ssl.SSLContext:
    """For the metrics server: the same rule as the gRPC ports, Envoy's certificate required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.load_verify_locations(tls.ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context
