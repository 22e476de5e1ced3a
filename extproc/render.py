"""Render the Envoy bootstrap for a gateway config.

Layout (see docs/architecture.md):
- one listener; its HTTP filter chain runs the *router stage* ext_proc, then the router;
- one route per model, matched on ``x-ai-eg-model`` (set by the router stage);
- one cluster per model, one endpoint per backend, carrying the backend's name as metadata, its
  priority and weight; the cluster's upstream filter chain runs the *upstream stage* ext_proc
  once per attempt;
- the ext_proc cluster, one endpoint per sidecar worker.

No secret is ever written here: credentials are added by the sidecar per attempt.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import yaml

from extproc.config import WILDCARD_MODEL, GatewayConfig
from extproc.render_clusters import (
    _cluster,
    _plain_cluster,
    _sidecar_cluster,
    cluster_name,
    sidecar_addresses,
)
from extproc.render_common import (
    _MODEL,
    _TYPE,
    ENVOY_ADMIN_CLUSTER,
    EXTPROC_CLUSTER,
    METRICS_CLUSTER,
    UNROUTED_CLUSTER,
    _secs,
)
from extproc.render_filters import _compressor, _router_filter, usage_filters
from extproc.render_logs import _records_to_sidecar, _upstream_logs
from extproc.render_routes import (
    _before_routing,
    _local_reply_config,
    _never_read_by_envoy,
    _routes,
)
from extproc.wire import (
    NAMESPACE,
    STAT_PREFIX,
    Key,
)

# Names other modules (the CLI, tests, the bench) import from here.
__all__ = ["EXTPROC_CLUSTER", "cluster_name", "render", "render_yaml", "sidecar_addresses"]


def _metrics_address(config: GatewayConfig, host: str | None) -> str:
    sidecar = config.sidecar
    if sidecar.socket_dir or host is None:
        return sidecar.metrics_address()
    return f"{host}:{sidecar.metrics_port}"


def _admin_listener(config: GatewayConfig) -> dict[str, Any]:
    """The admin port: read-only paths only; nothing here can change Envoy's state."""

    def route(path: str, cluster: str, exact: bool = True) -> dict[str, Any]:
        match = {"path": path} if exact else {"prefix": path}
        headers = [{"name": ":method", "string_match": {"exact": "GET"}}]
        return {
            "match": {**match, "headers": headers},
            "route": {"cluster": cluster, "timeout": "10s"},
        }

    hcm = {
        _TYPE: "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ai_gateway_admin",
        "normalize_path": True,
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    _TYPE: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
        "route_config": {
            "name": "admin",
            "virtual_hosts": [
                {
                    "name": "admin",
                    "domains": ["*"],
                    "routes": [
                        route("/metrics", METRICS_CLUSTER),
                        route("/ready", ENVOY_ADMIN_CLUSTER),
                        route("/stats", ENVOY_ADMIN_CLUSTER, exact=False),
                        route("/server_info", ENVOY_ADMIN_CLUSTER),
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {
                                "status": 404,
                                "body": {
                                    "inline_string": "admin paths: /metrics /ready /stats /stats/prometheus /server_info\n"
                                },
                            },
                        },
                    ],
                }
            ],
        },
    }
    return {
        "name": "ai_gateway_admin",
        "address": {
            "socket_address": {"address": config.admin.host, "port_value": config.admin.port}
        },
        "enable_reuse_port": False,
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def render(config: GatewayConfig, sidecar_host: str | None = None) -> dict[str, Any]:
    """The Envoy bootstrap, as a dict ready for YAML."""
    ordered = sorted(config.models, key=lambda m: m.name == WILDCARD_MODEL)
    routes = [route for m in ordered for route in _routes(m, config)]
    handing_off = config.accounting.by_envoy
    if handing_off:
        routes += _never_read_by_envoy(config)
    routes.append(_before_routing(config))
    hcm = {
        _TYPE: "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": STAT_PREFIX,
        "codec_type": "AUTO",
        # One id a client can quote for any answer, errors included; the access log has it.
        "always_set_request_id_in_response": True,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "stream_idle_timeout": _secs(config.timeouts.idle),
        "request_headers_timeout": _secs(min(config.timeouts.headers, config.timeouts.upload)),
        "request_timeout": _secs(min(config.timeouts.upload, config.timeouts.request)),
        "local_reply_config": _local_reply_config(),
        "access_log": [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    _TYPE: "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    "log_format": {
                        "json_format": {
                            "time": "%START_TIME%",
                            "request_id": "%REQ(X-REQUEST-ID)%",
                            "method": "%REQ(:METHOD)%",
                            "path": "%REQ(:PATH)%",
                            "model": _MODEL,
                            "status": "%RESPONSE_CODE%",
                            "flags": "%RESPONSE_FLAGS%",
                            "details": "%RESPONSE_CODE_DETAILS%",
                            "upstream": "%UPSTREAM_HOST%",
                            "backend": f"%UPSTREAM_METADATA({NAMESPACE}:{Key.BACKEND})%",
                            "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                            "input_tokens": f"%DYNAMIC_METADATA({NAMESPACE}:{Key.INPUT_TOKENS})%",
                            "output_tokens": f"%DYNAMIC_METADATA({NAMESPACE}:{Key.OUTPUT_TOKENS})%",
                            "total_tokens": f"%DYNAMIC_METADATA({NAMESPACE}:{Key.TOTAL_TOKENS})%",
                            "usage_source": f"%DYNAMIC_METADATA({NAMESPACE}:{Key.USAGE_SOURCE})%",
                            "cost_usd": f"%DYNAMIC_METADATA({NAMESPACE}:{Key.COST_USD})%",
                            "duration_ms": "%DURATION%",
                            "bytes_in": "%BYTES_RECEIVED%",
                            "bytes_out": "%BYTES_SENT%",
                        }
                    },
                },
            },
            *([_records_to_sidecar(config)] if handing_off else []),
        ],
        "http_filters": [
            *(
                [_compressor(config.http.compress_min_bytes)]
                if config.http.compress_min_bytes
                else []
            ),
            *(usage_filters() if handing_off else []),
            _router_filter(config),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    _TYPE: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                    "suppress_envoy_headers": True,
                    "upstream_log": _upstream_logs(config),
                },
            },
        ],
        "route_config": {
            "name": "ai_gateway",
            "virtual_hosts": [
                {
                    "name": "ai_gateway",
                    "domains": ["*"],
                    "routes": routes,
                    # Envoy sets x-envoy-attempt-count per attempt, over any client value:
                    # the attempt the sidecar records is Envoy's, not the client's.
                    "include_request_attempt_count": True,
                }
            ],
        },
    }
    return {
        # A bound on open client connections; also what Envoy asks for at start-up.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        _TYPE: "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": config.http.max_connections,
                    },
                }
            ]
        },
        "admin": {"address": {"pipe": {"path": config.admin.envoy_socket}}},
        "static_resources": {
            "listeners": [
                _admin_listener(config),
                {
                    "name": "ai_gateway",
                    "address": {
                        "socket_address": {
                            "address": config.listen.host,
                            "port_value": config.listen.port,
                        }
                    },
                    # Envoy's Linux default (on) lets a second gateway bind the same port and
                    # take a share of the connections; off, it fails to start instead.
                    "enable_reuse_port": False,
                    "per_connection_buffer_limit_bytes": config.http.stream_buffer_bytes,
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                },
            ],
            "clusters": [_cluster(m, config) for m in config.models]
            + [
                _sidecar_cluster(sidecar_addresses(config, sidecar_host), config.sidecar.tls),
                _plain_cluster(
                    METRICS_CLUSTER,
                    [_metrics_address(config, sidecar_host)],
                    http2=False,
                    tls=config.sidecar.tls,
                ),
                _plain_cluster(
                    ENVOY_ADMIN_CLUSTER, [f"unix:{config.admin.envoy_socket}"], http2=False
                ),
                _plain_cluster(UNROUTED_CLUSTER, [], http2=False),
            ],
        },
    }


def render_yaml(config: GatewayConfig, sidecar_host: str | None = None, source: str = "") -> str:
    header = "# Generated by `ai-gateway render`; do not edit by hand.\n"
    if source:
        header += f"# Source: {source}\n"
    return header + yaml.dump(
        render(config, sidecar_host), Dumper=_Dumper, sort_keys=False, width=120
    )


class _Dumper(yaml.SafeDumper):
    """Safe YAML that writes the shared names (wire.Key, a StrEnum) as the strings they are."""


_Dumper.add_multi_representer(StrEnum, lambda dumper, key: dumper.represent_str(str(key)))
