"""The clusters of the rendered bootstrap: one per model (endpoints per backend, TLS,
outlier detection), the sidecar's workers, the metrics and Envoy admin clusters."""

from __future__ import annotations

import ipaddress
import re
import zlib
from typing import Any

from extproc.config import WILDCARD_MODEL, GatewayConfig, ModelRoute, SidecarTLS
from extproc.render_common import (
    _HTTP_OPTIONS,
    _TLS_MATCH,
    _TYPE,
    EXTPROC_CLUSTER,
    SYSTEM_CA_BUNDLE,
    _breakers,
    _secs,
)
from extproc.render_filters import _upstream_filters
from extproc.wire import (
    NAMESPACE,
    Key,
)


def cluster_name(model: str) -> str:
    """A readable, unique cluster name: stats are keyed on it."""
    if model == WILDCARD_MODEL:
        return "model_any"
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", model)
    # The checksum keeps names unique when two models slug alike ("a/b" and "a_b").
    return f"model_{slug}_{zlib.crc32(model.encode()) % 10_000:04d}"


def _tls_socket(sni: str, ca_file: str | None) -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            _TYPE: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": ca_file or SYSTEM_CA_BUNDLE},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": sni}},
                        {"san_type": "IP_ADDRESS", "matcher": {"exact": sni}},
                    ],
                },
            },
        },
    }


def _cluster(model: ModelRoute, config: GatewayConfig) -> dict[str, Any]:
    by_priority: dict[int, list[dict[str, Any]]] = {}
    tls_matches = []
    for entry in model.backends:
        backend = config.backends[entry.backend]
        scheme, host, port, _ = backend.endpoint()
        by_priority.setdefault(entry.priority, []).append(
            {
                "endpoint": {
                    "address": {"socket_address": {"address": host, "port_value": port}},
                    "hostname": backend.authority(),
                },
                "load_balancing_weight": entry.weight,
                "metadata": {
                    "filter_metadata": {
                        NAMESPACE: {Key.BACKEND: entry.backend},
                        _TLS_MATCH: {"backend": entry.backend},
                    }
                },
            }
        )
        if scheme == "https":
            tls_matches.append(
                {
                    "name": entry.backend,
                    "match": {"backend": entry.backend},
                    "transport_socket": _tls_socket(backend.tls.sni or host, backend.tls.ca_file),
                }
            )
    outlier = model.outlier
    cluster: dict[str, Any] = {
        "name": cluster_name(model.name),
        "type": "STRICT_DNS",
        # Envoy's defaults (3 concurrent retries, 1024 requests per cluster) would turn a
        # failing primary under load into 503s instead of fallbacks, and cap open streams.
        "circuit_breakers": _breakers(100_000),
        "outlier_detection": {
            "consecutive_5xx": outlier.consecutive_failures,
            "consecutive_gateway_failure": outlier.consecutive_failures,
            "interval": _secs(outlier.interval),
            "base_ejection_time": _secs(outlier.eject_for),
            "max_ejection_time": _secs(outlier.eject_for),
            "max_ejection_percent": outlier.max_ejection_percent,
        },
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": _secs(config.timeouts.connect),
        "lb_policy": "ROUND_ROBIN",
        "per_connection_buffer_limit_bytes": config.http.stream_buffer_bytes,
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                _TYPE: f"type.googleapis.com/{_HTTP_OPTIONS}",
                "explicit_http_config": {"http_protocol_options": {}},
                **({} if model.single_backend() else {"http_filters": _upstream_filters(config)}),
            }
        },
        "load_assignment": {
            "cluster_name": cluster_name(model.name),
            "endpoints": [
                {"priority": priority, "lb_endpoints": endpoints}
                for priority, endpoints in sorted(by_priority.items())
            ],
        },
    }
    if tls_matches:
        cluster["transport_socket_matches"] = tls_matches
    return cluster


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _sidecar_address(address: str) -> dict[str, Any]:
    if address.startswith("unix:"):
        return {"pipe": {"path": address[5:]}}
    host, _, port = address.rpartition(":")
    return {"socket_address": {"address": host, "port_value": int(port)}}


def _mutual_tls_socket(tls: SidecarTLS, alpn: str) -> dict[str, Any]:
    """Envoy's side of the sidecar link: its client certificate, and the sidecar's checked
    against the link's CA and ``server_name``. Only file names: Envoy reads the key itself."""
    socket = _tls_socket(tls.server_name, tls.ca_file)
    context = socket["typed_config"]["common_tls_context"]
    context["alpn_protocols"] = [alpn]
    context["tls_certificates"] = [
        {
            "certificate_chain": {"filename": tls.envoy_cert_file},
            "private_key": {"filename": tls.envoy_key_file},
        }
    ]
    return socket


def _plain_cluster(
    name: str, addresses: list[str], http2: bool, tls: SidecarTLS | None = None
) -> dict[str, Any]:
    by_name = any(not a.startswith("unix:") and not _is_ip(a.rpartition(":")[0]) for a in addresses)
    protocol = (
        {"http2_protocol_options": {"max_concurrent_streams": 100_000}}
        if http2
        else {"http_protocol_options": {}}
    )
    secured = (
        {"transport_socket": _mutual_tls_socket(tls, "h2" if http2 else "http/1.1")}
        if tls is not None and not any(a.startswith("unix:") for a in addresses)
        else {}
    )
    return {
        "name": name,
        "type": "STRICT_DNS" if by_name else "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                _TYPE: f"type.googleapis.com/{_HTTP_OPTIONS}",
                "explicit_http_config": protocol,
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _sidecar_address(a)}} for a in addresses
                    ]
                }
            ],
        },
        **secured,
    }


def _sidecar_cluster(addresses: list[str], tls: SidecarTLS | None) -> dict[str, Any]:
    # Every in-flight HTTP request holds one ext_proc stream: the default breakers (1024) would
    # turn load into 503s long before the sidecar is saturated.
    high = 1_000_000
    cluster = _plain_cluster(EXTPROC_CLUSTER, addresses, http2=True, tls=tls)
    cluster["circuit_breakers"] = _breakers(high)
    # A worker that cannot be reached (killed, restarting) is set aside at its first failure,
    # so new requests go to the others until the supervisor has it back.
    cluster["outlier_detection"] = {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 1,
        "enforcing_consecutive_5xx": 0,
        "enforcing_success_rate": 0,
        "interval": "1s",
        "base_ejection_time": "1s",
        "max_ejection_time": "2s",
        "max_ejection_percent": 50,
    }
    return cluster


def sidecar_addresses(config: GatewayConfig, host: str | None = None) -> list[str]:
    """The address of every worker, in the order the workers are numbered."""
    sidecar = config.sidecar
    n = config.worker_count()
    if sidecar.socket_dir:
        return [f"unix:{sidecar.socket_dir}/worker-{i}.sock" for i in range(n)]
    return [f"{host or sidecar.host}:{sidecar.port + i}" for i in range(n)]
