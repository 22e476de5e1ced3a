"""The routes of the rendered bootstrap (one per model, retry policies) and Envoy's own
replies in OpenAI's error shape."""

from __future__ import annotations

from typing import Any

from extproc.config import WILDCARD_MODEL, GatewayConfig, ModelRoute
from extproc.endpoints import API, APIS
from extproc.render_clusters import cluster_name
from extproc.render_common import _MODEL, _TYPE, UNROUTED_CLUSTER, _secs
from extproc.render_filters import _JSON_READER, _SSE_READER
from extproc.wire import (
    ATTEMPTS_HEADER,
    BACKEND_HEADER,
    DETAILS,
    MODEL_HEADER,
    NAMESPACE,
    Key,
    encode_model,
)


def _never_read_by_envoy(config: GatewayConfig) -> list[dict[str, Any]]:
    """The routes a request of an API Envoy never accounts (``envoy_usage`` None: embeddings)
    matches on arrival, before the router stage names its model: Envoy builds a request's
    filter chain from that first route, so the usage readers are left out here. Such answers
    are never handed off, and Envoy's JSON parser takes ten times the sidecar's time over a
    large one (87 KB of embeddings: about 1.1 ms of Envoy's one thread)."""
    off = {_TYPE: "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    return [
        {
            **_before_routing(config),
            "name": f"{api.operation}-before-routing",
            "match": match,
            "typed_per_filter_config": dict.fromkeys((_JSON_READER, _SSE_READER), off),
        }
        for api in APIS
        if api.envoy_usage is None
        for match in _matches(api)
    ]


def _matches(api: API) -> list[dict[str, str]]:
    return [{"path": p} for p in api.paths] + [{"prefix": p} for p in api.prefixes]


def _before_routing(config: GatewayConfig) -> dict[str, Any]:
    """The route every other request matches on arrival, before the router stage names its
    model. It exists for its buffer limit: Envoy sets a request's buffer limit (both directions)
    from the route it matches, and the router stage buffers the body under the limit of the
    route matched on arrival; a route matched later may raise the limit, never lower it
    (measured). Without it the limit would be the connections' small
    ``http.stream_buffer_bytes``."""
    return {
        "name": "before-routing",
        "match": {"prefix": "/"},
        # A direct response has no route entry, hence no buffer limit: a cluster without
        # endpoints, reached only if the router stage let a request through unrouted (503).
        "route": {"cluster": UNROUTED_CLUSTER, "timeout": _secs(config.timeouts.request)},
        "request_body_buffer_limit": config.http.max_request_bytes,
    }


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
            # A request with an Upgrade header matches a route (the one before routing) that
            # takes no upgrade: Envoy refuses it at once, before any filter.
            mapper(
                "response.code == 403 && response.code_details == 'upgrade_failed'",
                "invalid_request_error",
                "upgrade_not_supported",
                "Protocol upgrades are not served: send the request without the Upgrade header.",
                status=400,
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
    for api in APIS:
        tags = {Key.MODEL: model.name, Key.OPERATION: api.operation}
        for where in _matches(api):
            match = {"headers": route["match"]["headers"], **where}
            entry = {**route, "match": match, "metadata": {"filter_metadata": {NAMESPACE: tags}}}
            if not api.metered:
                entry["route"] = {**route["route"], "retry_policy": _owner_search(model)}
            out.append(entry)
    return out


def _owner_search(model: ModelRoute) -> dict[str, Any]:
    """A stored response lives on the backend that made it: a 404 from one backend is tried on
    the next, until every backend was asked."""
    policy = _retry_policy(model)
    policy["num_retries"] = max(policy["num_retries"], len(model.backends) - 1)
    if "retriable-status-codes" not in policy["retry_on"].split(","):
        policy["retry_on"] = ",".join(filter(None, [policy["retry_on"], "retriable-status-codes"]))
    policy["retriable_status_codes"] = sorted({*policy.get("retriable_status_codes", []), 404})
    return policy


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
