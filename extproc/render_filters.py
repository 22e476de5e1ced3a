"""The HTTP filters of the rendered bootstrap: both ext_proc stages, Envoy's usage readers of
handed-off answers, the compressor, and the clusters' upstream filter chain."""

from __future__ import annotations

from typing import Any

from extproc.config import GatewayConfig
from extproc.render_common import _EXT_PROC, _SIDECAR_RETRY, _TYPE, EXTPROC_CLUSTER, _secs
from extproc.wire import (
    NAMESPACE,
    ROUTER_STAGE,
    SOURCE_ADDRESS,
    STAGE_METADATA,
    UPSTREAM_HOST_METADATA,
    UPSTREAM_STAGE,
    USAGE_FIELDS,
    Key,
)


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
            # Uploads are counted per client: without gateway keys, per address (uploads.py).
            **(
                {"request_attributes": [SOURCE_ADDRESS]}
                if not config.clients
                and (config.http.uploads_per_client or config.http.upload_bytes_per_client)
                else {}
            ),
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
