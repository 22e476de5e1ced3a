"""Envoy bootstraps: the fast fake upstream, and bare Envoy derived from the gateway's own.

The upstream is an Envoy answering with ``direct_response``: no Python, no sleeps, so whatever
time is measured is spent in the system under test (and in the load generator). It serves every
scenario's fixed answer: OpenAI chat, stream and embeddings, and Bedrock Converse (for requests
carrying a SigV4 Authorization header of the bench's key id; the signature is not verified, so
that the upstream stays fast: the test suite's fake Bedrock verifies signatures).

Bare Envoy is the bootstrap ``ai-gateway render`` produces for the very same config, reduced to
its traffic listener and model clusters, with the two ext_proc filters (router stage, upstream
stage) taken out. Connection manager options, access log, local replies, clusters, retries and
outlier detection stay as the gateway has them, so the ratio measures the sidecar alone.

The Python floor is bare Envoy plus one ext_proc filter to workers that answer every message
with an empty "continue" (``bench/floor.py``): the cost of the design before any of its work.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from bench.payloads import BEDROCK_ACCESS_KEY
from bench.scenarios import Scenario
from extproc.config import GatewayConfig
from extproc.render import EXTPROC_CLUSTER, cluster_name, render

_TYPE = "@type"
_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {
        _TYPE: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    },
}
_EXT_PROC = "envoy.filters.http.ext_proc"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _admin(port: int) -> dict[str, Any]:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}


def _listener(name: str, port: int, hcm: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def _direct(
    path: str, headers: list[dict[str, Any]], body: bytes, content_type: str
) -> dict[str, Any]:
    return {
        "match": {"path": path, "headers": headers},
        "direct_response": {"status": 200, "body": {"inline_string": body.decode()}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": content_type}}],
    }


def _credential(scenario: Scenario, api_key: str) -> list[dict[str, Any]]:
    """Only a request carrying the provider's credential gets the real answer: the sanity
    check then proves the gateway injected it (and bare Envoy forwarded the client's)."""
    if scenario.bedrock:
        prefix = f"AWS4-HMAC-SHA256 Credential={BEDROCK_ACCESS_KEY}/"
        return [
            {"name": "authorization", "string_match": {"prefix": prefix}},
            {"name": "x-amz-date", "present_match": True},
        ]
    return [{"name": "authorization", "string_match": {"exact": f"Bearer {api_key}"}}]


def upstream_bootstrap(
    port: int, admin_port: int, api_key: str, scenarios: list[Scenario]
) -> dict[str, Any]:
    """A fake OpenAI (and Bedrock): each scenario's path answers its fixed body, else a 401."""
    routes = [
        _direct(s.upstream_path, _credential(s, api_key), s.response, s.content_type)
        for s in scenarios
        if s.upstream == "envoy"
    ]
    unauthorized = b'{"error":{"message":"bench upstream: wrong path or API key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}'
    routes.append(
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 401, "body": {"inline_string": unauthorized.decode()}},
            "response_headers_to_add": [
                {"header": {"key": "content-type", "value": "application/json"}}
            ],
        }
    )
    hcm = {
        _TYPE: _HCM_TYPE,
        "stat_prefix": "bench_upstream",
        "codec_type": "AUTO",
        "route_config": {
            "name": "bench_upstream",
            # The embeddings answer is ~90 KB; Envoy's default cap for inline bodies is 4 KB.
            "max_direct_response_body_size_bytes": 1024 * 1024,
            "virtual_hosts": [{"name": "upstream", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [_ROUTER],
    }
    return {
        "admin": _admin(admin_port),
        "static_resources": {"listeners": [_listener("bench_upstream", port, hcm)]},
    }


def _without_ext_proc(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in filters if f.get("name") != _EXT_PROC]


def _main_listener(listeners: list[dict[str, Any]], port: int) -> dict[str, Any]:
    for listener in listeners:
        if listener["address"].get("socket_address", {}).get("port_value") == port:
            return listener
    raise RuntimeError("bare Envoy: no listener on the gateway's listen port in render()")


def bare_bootstrap(
    config: GatewayConfig, port: int, admin_port: int, prefixes: Mapping[str, str]
) -> dict[str, Any]:
    """The gateway's bootstrap for ``config`` minus the sidecar, listening on ``port``.

    ``prefixes`` maps each model to the upstream path prefix its requests are sent to: with no
    router stage to set ``x-ai-eg-model``, bare Envoy routes on the path instead.
    """
    rendered = copy.deepcopy(render(config))
    resources = rendered["static_resources"]
    # Only the traffic listener and the model clusters are kept: the admin listener, the
    # sidecar, metrics and admin clusters serve the gateway, not the request path.
    listener = _main_listener(resources["listeners"], config.listen.port)
    listener["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    (chain,) = listener["filter_chains"]
    (network_filter,) = chain["filters"]
    hcm = network_filter["typed_config"]
    hcm["http_filters"] = _without_ext_proc(hcm["http_filters"])
    for http_filter in hcm["http_filters"]:
        # The router's per-attempt logs are the gateway's bookkeeping, to the sidecar.
        http_filter.get("typed_config", {}).pop("upstream_log", None)
    for vhost in hcm["route_config"]["virtual_hosts"]:
        # Only the model routes: the catch-all before routing exists for the router stage.
        vhost["routes"] = [r for r in vhost["routes"] if r["name"] in prefixes]
        for route in vhost["routes"]:
            route["match"] = {"prefix": f"{prefixes[route['name']]}/"}
            # A client of a plain proxy carries the provider key itself; the gateway strips
            # the client's credential and adds its own, bare Envoy must pass it through.
            route.pop("request_headers_to_remove", None)
    model_clusters = {cluster_name(m.name) for m in config.models}
    clusters = [c for c in resources["clusters"] if c["name"] in model_clusters]
    if {c["name"] for c in clusters} != model_clusters:
        raise RuntimeError("bare Envoy: render() no longer names model clusters as expected")
    for cluster in clusters:
        options = cluster.get("typed_extension_protocol_options", {}).get(_HTTP_OPTIONS)
        if options is not None:
            # Without the ext_proc filter, upstream_codec alone is Envoy's default chain.
            options.pop("http_filters", None)
    boot: dict[str, Any] = {
        "admin": _admin(admin_port),
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }
    if "overload_manager" in rendered:
        boot["overload_manager"] = rendered["overload_manager"]
    # Fail loudly if a future render() wires the sidecar in somewhere this function misses.
    text = json.dumps(boot)
    if _EXT_PROC in text or EXTPROC_CLUSTER in text:
        raise RuntimeError("bare Envoy bootstrap still references the ext_proc sidecar")
    return boot


def floor_bootstrap(
    config: GatewayConfig, port: int, admin_port: int, prefixes: Mapping[str, str]
) -> dict[str, Any]:
    """Bare Envoy plus one ext_proc filter, in every phase the gateway uses, to the do-nothing
    workers of ``bench/floor.py`` (listening where ``config.sidecar`` puts the gateway's).

    The filter keeps the gateway's gRPC service (cluster, retry policy, timeout) and sidecar
    cluster as rendered; its processing mode is the gateway's widest: request headers, the
    buffered request body, response headers and the streamed response body.
    """
    boot = bare_bootstrap(config, port, admin_port, prefixes)
    rendered = render(config)
    resources = rendered["static_resources"]
    listener = _main_listener(resources["listeners"], config.listen.port)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    router_stage = next(f for f in hcm["http_filters"] if f["name"] == _EXT_PROC)
    typed = router_stage["typed_config"]
    ext_proc = {
        "name": _EXT_PROC,
        "typed_config": {
            _TYPE: typed[_TYPE],
            "grpc_service": typed["grpc_service"],
            "failure_mode_allow": False,
            "message_timeout": typed["message_timeout"],
            # The router stage's modes, with the response phases on, as the sidecar turns
            # them on per request (there the body mode depends on the answer).
            "processing_mode": {
                **typed["processing_mode"],
                "response_header_mode": "SEND",
                "response_body_mode": "STREAMED",
            },
        },
    }
    (floor_listener,) = boot["static_resources"]["listeners"]
    floor_hcm = floor_listener["filter_chains"][0]["filters"][0]["typed_config"]
    floor_hcm["http_filters"].insert(0, ext_proc)
    sidecar = next(c for c in resources["clusters"] if c["name"] == EXTPROC_CLUSTER)
    boot["static_resources"]["clusters"].append(copy.deepcopy(sidecar))
    return boot
