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

import ipaddress
import re
import zlib
from enum import StrEnum
from typing import Any

import yaml

from extproc.config import WILDCARD_MODEL, GatewayConfig, ModelRoute, SidecarTLS
from extproc.endpoints import APIS, BY_PATH
from extproc.wire import (
    ATTEMPT_FAILURES,
    ATTEMPT_HEADER,
    ATTEMPT_HEADERS,
    ATTEMPT_LOG,
    ATTEMPT_TAGS,
    ATTEMPTS_HEADER,
    BACKEND_HEADER,
    BACKEND_TAG,
    DETAILS,
    MODEL_HEADER,
    NAMESPACE,
    ROUTER_STAGE,
    STAGE_METADATA,
    STAT_PREFIX,
    UPSTREAM_HOST_METADATA,
    UPSTREAM_STAGE,
    USAGE_FIELDS,
    Key,
    encode_model,
)

EXTPROC_CLUSTER = "ai_gateway_extproc"
METRICS_CLUSTER = "ai_gateway_metrics"
ENVOY_ADMIN_CLUSTER = "envoy_admin"
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


def cluster_name(model: str) -> str:
    """A readable, unique cluster name: stats are keyed on it."""
    if model == WILDCARD_MODEL:
        return "model_any"
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", model)
    # The checksum keeps names unique when two models slug alike ("a/b" and "a_b").
    return f"model_{slug}_{zlib.crc32(model.encode()) % 10_000:04d}"


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


def _ext_proc(stage: str, message_timeout: float, **extra: Any) -> dict[str, Any]:
    return {
        _TYPE: _EXT_PROC,
        "grpc_service": {
            "envoy_grpc": {"cluster_name": EXTPROC_CLUSTER, "retry_policy": _SIDECAR_RETRY},
            "timeout": _secs(message_timeout),
            "initial_metadata": [{"key": STAGE_METADATA, "value": stage}],
        },
        # Never forward a request the sidecar did not see: a skipped router stage would land on
        # the wrong route, a skipped upstream stage would reach a provider unauthenticated.
        "failure_mode_allow": False,
        "message_timeout": _secs(message_timeout),
        "allow_mode_override": True,
        **extra,
    }


# Both stages set :authority: SigV4 signs it, and Envoy's own host rewrite may not have happened
# yet when a filter sees the first request on a new connection.
_MUTATION_RULES: dict[str, Any] = {"allow_all_routing": True}
_RECEIVING = {"receiving_namespaces": {"untyped": [NAMESPACE]}}


def _router_filter(config: GatewayConfig) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": _ext_proc(
            ROUTER_STAGE,
            config.sidecar.message_timeout,
            # Response phases serve the requests of single-backend models, which this stage
            # translates and accounts itself; the sidecar turns them on per request
            # (mode_override). Off by default so that Envoy's own replies to requests the
            # sidecar never saw (a 431 for a header flood) are written at once, not held for a
            # stream the closing connection then cuts.
            processing_mode={
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "response_header_mode": "SKIP",
                "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            mutation_rules=_MUTATION_RULES,
            metadata_options=_RECEIVING,
        ),
    }


_JSON_READER = "envoy.filters.http.json_to_metadata"
_SSE_READER = "envoy.filters.http.sse_to_metadata"


# The content types Envoy's JSON reader takes: it compares the whole header, so the spellings
# providers send with a charset are listed (an answer of another type has no usage read).
JSON_TYPES = [
    "application/json",
    *(f"application/json;{sep}charset={cs}" for sep in ("", " ") for cs in ("utf-8", "UTF-8")),
]


def _usage_rules() -> list[dict[str, Any]]:
    """Rules copying an OpenAI-shaped answer's usage and model into our namespace, under the
    names the sidecar's own records use. Values keep their JSON type (NUMBER would turn
    ``"12"`` and ``true`` into counts): accesslog.py counts what the sidecar would count."""

    def rule(path: str, key: str) -> dict[str, Any]:
        target = {"metadata_namespace": NAMESPACE, "key": key, "type": "PROTOBUF_VALUE"}
        return {"selectors": [{"key": part} for part in path.split(".")], "on_present": target}

    rules = [rule(path, key) for key, path in USAGE_FIELDS.items()]
    return [*rules, rule("model", Key.RESPONSE_MODEL)]


def _sse_rules() -> list[dict[str, Any]]:
    # Every event is read and the last usage wins: OpenAI reports it once, in the event before
    # [DONE], but some servers (vLLM's continuous usage stats) repeat a growing one in every
    # event. The model, the same in each, is written once.
    rules: list[dict[str, Any]] = [{"rule": rule} for rule in _usage_rules()]
    rules[-1]["stop_processing_after_matches"] = 1
    return rules


def usage_filters() -> list[dict[str, Any]]:
    """Envoy's own readers of pass-through answers (``accounting.mode: envoy``): a buffered
    JSON answer and an SSE stream, never held or changed. Listed before the router stage, they
    see an answer after it: on requests the sidecar still serves they read what the client
    gets, and nothing of theirs is used (see accesslog.attempt)."""
    json_rules = _usage_rules()
    # A body that is not JSON: the JSON parser's error, set on the one rule always present.
    json_rules[-1]["on_error"] = {
        "metadata_namespace": NAMESPACE,
        "key": Key.NOT_JSON,
        "value": True,
    }
    return [
        {
            "name": _JSON_READER,
            "typed_config": {
                _TYPE: "type.googleapis.com/envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata",
                "response_rules": {"rules": json_rules, "allow_content_types": JSON_TYPES},
            },
        },
        {
            "name": _SSE_READER,
            "typed_config": {
                _TYPE: "type.googleapis.com/envoy.extensions.filters.http.sse_to_metadata.v3.SseToMetadata",
                "response_rules": {
                    "content_parser": {
                        "name": "envoy.content_parsers.json",
                        "typed_config": {
                            _TYPE: "type.googleapis.com/envoy.extensions.content_parsers.json.v3.JsonContentParser",
                            "rules": _sse_rules(),
                        },
                    },
                },
            },
        },
    ]


def _compressor(min_bytes: int) -> dict[str, Any]:
    """Gzip for the client on large JSON answers (embeddings, long completions). SSE is never
    compressed: a compressor holds bytes until its block fills, which would delay events. It
    also removes the client's accept-encoding, so the provider is asked for nothing but what
    each attempt sets (identity)."""
    return {
        "name": "envoy.filters.http.compressor",
        "typed_config": {
            _TYPE: "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
            "response_direction_config": {
                "common_config": {
                    "min_content_length": min_bytes,
                    "content_type": ["application/json"],
                },
                "remove_accept_encoding_header": True,
            },
            "compressor_library": {
                "name": "gzip",
                "typed_config": {
                    _TYPE: "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip",
                    # bench/compression.py: level 1 keeps most of level 6's saving at an
                    # eighth of the CPU; Envoy's default 4 KiB window kept only half of it.
                    "compression_level": "BEST_SPEED",
                    "window_bits": 15,
                    "memory_level": 9,
                },
            },
        },
    }


def _never_read_by_envoy() -> list[dict[str, Any]]:
    """The routes a request of an API Envoy never accounts (``envoy_usage`` None: embeddings)
    matches on arrival, before the router stage names its model: Envoy builds a request's
    filter chain from that first route, so the usage readers are left out here. Such answers
    are never handed off, and Envoy's JSON parser takes ten times the sidecar's time over a
    large one (87 KB of embeddings: about 1.1 ms of Envoy's one thread)."""
    off = {_TYPE: "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    return [
        {
            "name": f"{api.operation}-before-routing",
            "match": {"path": path},
            # Reached only if the router stage let a request through unrouted: "no route".
            "direct_response": {"status": 404},
            "typed_per_filter_config": dict.fromkeys((_JSON_READER, _SSE_READER), off),
        }
        for api in APIS
        if api.envoy_usage is None
        for path in api.paths
    ]


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


def _upstream_filters(config: GatewayConfig) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.filters.http.ext_proc",
            "typed_config": _ext_proc(
                UPSTREAM_STAGE,
                config.sidecar.message_timeout,
                # The widest modes; the sidecar narrows them per request with mode_override.
                processing_mode={
                    "request_header_mode": "SEND",
                    "request_body_mode": "BUFFERED",
                    "response_header_mode": "SEND",
                    "response_body_mode": "STREAMED",
                    "request_trailer_mode": "SKIP",
                    "response_trailer_mode": "SKIP",
                },
                request_attributes=[UPSTREAM_HOST_METADATA],
                mutation_rules=_MUTATION_RULES,
                metadata_options={
                    **_RECEIVING,
                    # What the router stage decided (router.RouteState), for every attempt.
                    "forwarding_namespaces": {"untyped": [NAMESPACE]},
                },
            ),
        },
        {
            "name": "envoy.filters.http.upstream_codec",
            "typed_config": {
                _TYPE: "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
            },
        },
    ]


def _local_reply_config() -> dict[str, Any]:
    """Envoy's own error replies, rewritten into OpenAI's error shape.

    Replies from the sidecar are already in that shape and carry the details string
    ``ai_gateway``; the CEL filter leaves them alone.
    """

    def mapper(
        status_expr: str, type_: str, code: str, message: str, status: int | None = None
    ) -> dict[str, Any]:
        expr = f"!(response.code_details.startsWith('{DETAILS}')) && ({status_expr})"
        out: dict[str, Any] = {
            "filter": {
                "extension_filter": {
                    "name": "envoy.access_loggers.extension_filters.cel",
                    "typed_config": {
                        _TYPE: "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                        "expression": expr,
                    },
                }
            },
            "body_format_override": {
                "json_format": {
                    "error": {"message": message, "type": type_, "param": None, "code": code}
                },
                "content_type": "application/json",
            },
        }
        if status is not None:
            out["status_code"] = status
        return out

    model = _MODEL
    return {
        "mappers": [
            mapper(
                "response.code_details.startsWith('ext_proc')",
                "server_error",
                "sidecar_unavailable",
                "The gateway's processing sidecar did not answer (%RESPONSE_CODE_DETAILS%);"
                " try again.",
                status=503,
            ),
            mapper(
                "response.code == 413",
                "invalid_request_error",
                "request_too_large",
                "Request body is larger than this gateway accepts.",
            ),
            mapper(
                "response.code == 404",
                "not_found_error",
                "not_found",
                "No route for this request: %LOCAL_REPLY_BODY%",
            ),
            mapper(
                "response.code == 408",
                "invalid_request_error",
                "request_timeout",
                "The request was not received in time (%RESPONSE_CODE_DETAILS%).",
            ),
            mapper(
                "response.code == 431",
                "invalid_request_error",
                "request_header_fields_too_large",
                "Request headers are larger than this gateway accepts.",
            ),
            mapper(
                "response.code == 504",
                "timeout_error",
                "upstream_timeout",
                f"The provider for model {model} did not answer in time: %LOCAL_REPLY_BODY%",
            ),
            mapper(
                "response.code == 503",
                "upstream_error",
                "upstream_unavailable",
                f"No provider for model {model} is reachable: %LOCAL_REPLY_BODY%",
            ),
            # Envoy's HTTP/1 codec answers 501 to a transfer coding it does not implement
            # ("chunked, identity", "xchunked"): the client's mistake, not the gateway's.
            mapper(
                "response.code == 501 && response.code_details.startsWith('http1.')",
                "invalid_request_error",
                "unsupported_transfer_encoding",
                "The request's Transfer-Encoding is not supported (%RESPONSE_CODE_DETAILS%);"
                " send 'chunked' alone, or a Content-Length.",
                status=400,
            ),
            mapper(
                "response.code >= 500",
                "server_error",
                "gateway_error",
                "The gateway could not process this request: %LOCAL_REPLY_BODY%",
            ),
            # Envoy's own 400s (a rejected path, a malformed request) often have no body: the
            # details say what was wrong.
            mapper(
                "response.code >= 400",
                "invalid_request_error",
                "bad_request",
                "The request was rejected (%RESPONSE_CODE_DETAILS%). %LOCAL_REPLY_BODY%",
            ),
        ]
    }


def _routes(model: ModelRoute, config: GatewayConfig) -> list[dict[str, Any]]:
    """A model's route. With several backends, one per endpoint, whose metadata names the
    model and operation for the per-attempt log (wire.ATTEMPT_TAGS): the router stage sends
    no other path there."""
    route = _route(model, config)
    if model.single_backend() is not None:
        return [route]
    out = []
    for path, api in BY_PATH.items():
        tags = {Key.MODEL: model.name, Key.OPERATION: api.operation}
        match = {**route["match"], "path": path}
        del match["prefix"]
        out.append({**route, "match": match, "metadata": {"filter_metadata": {NAMESPACE: tags}}})
    return out


def _route(model: ModelRoute, config: GatewayConfig) -> dict[str, Any]:
    backend_timeouts = [
        t for t in (config.backends[b.backend].timeout for b in model.backends) if t is not None
    ]
    timeout = model.timeout or (
        max(backend_timeouts) if backend_timeouts else config.timeouts.request
    )
    header = (
        {"name": MODEL_HEADER, "present_match": True}
        if model.name == WILDCARD_MODEL
        else {"name": MODEL_HEADER, "string_match": {"exact": encode_model(model.name)}}
    )
    route: dict[str, Any] = {
        "name": model.name,
        "match": {"prefix": "/", "headers": [header]},
        "route": {
            "cluster": cluster_name(model.name),
            "timeout": _secs(timeout),
            "idle_timeout": _secs(config.timeouts.idle),
            "auto_host_rewrite": True,
            "retry_policy": _retry_policy(model),
        },
        # Routed on, then gone: no x-ai-eg-* header reaches a provider (the router stage
        # removed the client's own; the decision travels in dynamic metadata).
        "request_headers_to_remove": [MODEL_HEADER],
    }
    if config.http.expose_backend:
        route["response_headers_to_add"] = [
            {
                "header": {
                    "key": BACKEND_HEADER,
                    "value": f"%UPSTREAM_METADATA({NAMESPACE}:{Key.BACKEND})%",
                },
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            },
            {
                "header": {"key": ATTEMPTS_HEADER, "value": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            },
        ]
    return route


def _retry_policy(model: ModelRoute) -> dict[str, Any]:
    retry = model.retry
    attempts = retry.attempts or max(2, len(model.backends))
    codes = sorted({int(c) for c in retry.on if c.isdigit()})
    conditions = [c for c in retry.on if not c.isdigit()]
    if codes:
        conditions.append("retriable-status-codes")
    policy: dict[str, Any] = {
        "retry_on": ",".join(conditions),
        "num_retries": attempts - 1,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    _TYPE: "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {
            "base_interval": _secs(retry.backoff.base),
            "max_interval": _secs(retry.backoff.max),
        },
        # A provider's 429 says when to come back; Envoy waits that long before the retry.
        "rate_limited_retry_back_off": {
            "reset_headers": [{"name": "retry-after", "format": "SECONDS"}],
            "max_interval": _secs(max(retry.backoff.max, 30.0)),
        },
    }
    if codes:
        policy["retriable_status_codes"] = codes
    if retry.per_try_timeout is not None:
        policy["per_try_timeout"] = _secs(retry.per_try_timeout)
    if len({b.priority for b in model.backends}) > 1:
        policy["retry_priority"] = {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                _TYPE: "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        }
    return policy


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
        "per_connection_buffer_limit_bytes": config.http.max_request_bytes,
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


def sidecar_addresses(config: GatewayConfig, host: str | None = None) -> list[str]:
    """The address of every worker, in the order the workers are numbered."""
    sidecar = config.sidecar
    n = config.worker_count()
    if sidecar.socket_dir:
        return [f"unix:{sidecar.socket_dir}/worker-{i}.sock" for i in range(n)]
    return [f"{host or sidecar.host}:{sidecar.port + i}" for i in range(n)]


def render(config: GatewayConfig, sidecar_host: str | None = None) -> dict[str, Any]:
    """The Envoy bootstrap, as a dict ready for YAML."""
    ordered = sorted(config.models, key=lambda m: m.name == WILDCARD_MODEL)
    routes = [route for m in ordered for route in _routes(m, config)]
    handing_off = config.accounting.by_envoy
    if handing_off:
        routes += _never_read_by_envoy()
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
                    "per_connection_buffer_limit_bytes": config.http.max_request_bytes,
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
