"""The access logs of the rendered bootstrap that carry attempts: handed-off records and
unanswered attempts to the sidecar, one stdout line per failed attempt."""

from __future__ import annotations

from typing import Any

from extproc.config import GatewayConfig
from extproc.render_common import _SIDECAR_RETRY, _TYPE, EXTPROC_CLUSTER, _secs
from extproc.wire import (
    ATTEMPT_FAILURES,
    ATTEMPT_HEADER,
    ATTEMPT_HEADERS,
    ATTEMPT_LOG,
    ATTEMPT_TAGS,
    BACKEND_TAG,
    NAMESPACE,
    STAT_PREFIX,
    Key,
)


def _records_to_sidecar(config: GatewayConfig) -> dict[str, Any]:
    """The access log that carries handed-off attempts (and only those) to the sidecar."""
    return {
        "name": "envoy.access_loggers.http_grpc",
        "filter": {
            "metadata_filter": {
                "matcher": {
                    "filter": NAMESPACE,
                    "path": [{"key": Key.HANDED_OFF}],
                    "value": {"bool_match": True},
                }
            }
        },
        "typed_config": {
            _TYPE: "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": _log_to_sidecar(config, STAT_PREFIX),
        },
    }


def _attempt_line(error: str, flags: list[str]) -> dict[str, Any]:
    """One stdout line per attempt that failed this way: its backend, Envoy's own reason."""
    return {
        "name": "envoy.access_loggers.stdout",
        "filter": {"response_flag_filter": {"flags": flags}},
        "typed_config": {
            _TYPE: "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {
                "json_format": {
                    "time": "%START_TIME%",
                    "attempt_failed": error,
                    "model": f"%METADATA(ROUTE:{NAMESPACE}:{Key.MODEL})%",
                    "backend": f"%UPSTREAM_METADATA({NAMESPACE}:{Key.BACKEND})%",
                    "upstream": "%UPSTREAM_HOST%",
                    "attempt": f"%REQ({ATTEMPT_HEADER})%",
                    "flags": "%RESPONSE_FLAGS%",
                    "reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
                    "duration_ms": "%DURATION%",
                }
            },
        },
    }


def _unanswered_to_sidecar(config: GatewayConfig) -> dict[str, Any]:
    """The attempts that got no answer (status 0), to the sidecar: one the sidecar never saw
    (a refused connection fails before the upstream stage's first message) exists only here,
    and Envoy knows why each ended. A healthy request sends nothing."""
    headers = ATTEMPT_HEADERS + sorted(config.telemetry.header_attributes)
    return {
        "name": "envoy.access_loggers.http_grpc",
        "filter": {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {"default_value": 0, "runtime_key": "ai_gateway.unanswered_status"},
                }
            }
        },
        "typed_config": {
            _TYPE: "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                **_log_to_sidecar(config, ATTEMPT_LOG),
                "custom_tags": [
                    _tag(BACKEND_TAG, "host", Key.BACKEND),
                    *(_tag(key, "route", key) for key in ATTEMPT_TAGS),
                ],
            },
            "additional_request_headers_to_log": headers,
        },
    }


def _log_to_sidecar(config: GatewayConfig, log_name: str) -> dict[str, Any]:
    """A gRPC access log to the sidecar's workers, batched every flush interval."""
    return {
        "log_name": log_name,
        "transport_api_version": "V3",
        "grpc_service": {
            "envoy_grpc": {"cluster_name": EXTPROC_CLUSTER, "retry_policy": _SIDECAR_RETRY}
        },
        "buffer_flush_interval": _secs(config.accounting.flush_interval),
        "buffer_size_bytes": 16384,
    }


def _tag(tag: str, kind: str, key: str) -> dict[str, Any]:
    """A custom tag of a gRPC access-log entry: ``key`` of our namespace in the ``kind``
    metadata (``host``: the endpoint's; ``route``: the route's)."""
    where = {"key": NAMESPACE, "path": [{"key": key}]}
    return {"tag": tag, "metadata": {"kind": {kind: {}}, "metadata_key": where}}


def _upstream_logs(config: GatewayConfig) -> list[dict[str, Any]]:
    """The router's per-attempt logs: every failed attempt in the access log, and the
    unanswered ones to the sidecar, for the metrics and spans."""
    lines = [_attempt_line(error, flags) for error, (flags, _) in ATTEMPT_FAILURES.items()]
    return [*lines, _unanswered_to_sidecar(config)]
