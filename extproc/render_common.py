"""What every part of the rendered Envoy bootstrap shares: type URLs, cluster names, the
retry policy of the sidecar's gRPC services, durations and circuit breakers."""

from __future__ import annotations

from typing import Any

from extproc.wire import (
    NAMESPACE,
    Key,
)

EXTPROC_CLUSTER = "ai_gateway_extproc"


METRICS_CLUSTER = "ai_gateway_metrics"


ENVOY_ADMIN_CLUSTER = "envoy_admin"
UNROUTED_CLUSTER = "ai_gateway_unrouted"


SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


_TYPE = "@type"


_EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"


_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


_TLS_MATCH = "envoy.transport_socket_match"


# Where Envoy's own replies and log lines find the model: the router stage writes it for every
# request it routed (the x-ai-eg-model header is gone by the time the request left).
_MODEL = f"%DYNAMIC_METADATA({NAMESPACE}:{Key.MODEL})%"


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"


# A stream that could not start on one worker (killed, restarting) starts on another; one that
# started is never replayed.
_SIDECAR_RETRY: dict[str, Any] = {
    "retry_on": "connect-failure,refused-stream,reset-before-request",
    "num_retries": 2,
    "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.05s"},
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                _TYPE: "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            },
        }
    ],
    "host_selection_retry_max_attempts": 5,
}


def _breakers(high: int) -> dict[str, Any]:
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_connections": high,
                "max_pending_requests": high,
                "max_requests": high,
                "max_retries": high,
            }
        ]
    }
