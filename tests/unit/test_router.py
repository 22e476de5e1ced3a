from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Callable

import orjson
import pytest

from extproc.config import ConfigError, parse_config
from extproc.router import ReadBody, Respond, Route, Router, RouteState

CONFIG = parse_config(
    {
        "backends": {"b": {"schema": "openai", "url": "http://127.0.0.1:1/v1"}},
        "models": [
            {"name": "m1", "owned_by": "acme", "backends": [{"backend": "b"}]},
            {"name": "m2", "backends": [{"backend": "b"}]},
        ],
    },
    {},
)


def _body(router: Router, pending: ReadBody, body: bytes) -> object:
    return asyncio.run(router.on_body(pending, body))


def _headers(method: str, path: str, **extra: str) -> dict[str, str]:
    return {":method": method, ":path": path, **extra}


def _error(decision: object) -> tuple[int, dict[str, object]]:
    assert isinstance(decision, Respond)
    return decision.status, orjson.loads(decision.body)["error"]


def test_models_list_is_openai_shaped_and_stable() -> None:
    decision = Router(CONFIG).on_headers(_headers("GET", "/v1/models"))
    assert isinstance(decision, Respond) and decision.status == 200
    body = orjson.loads(decision.body)
    assert body["object"] == "list"
    assert body["data"][0] == {
        "id": "m1",
        "object": "model",
        "created": 1735689600,
        "owned_by": "acme",
    }
    assert decision.body == Router(CONFIG).on_headers(_headers("GET", "/v1/models")).body


def test_model_retrieve() -> None:
    router = Router(CONFIG)
    ok = router.on_headers(_headers("GET", "/v1/models/m2"))
    assert isinstance(ok, Respond) and orjson.loads(ok.body)["id"] == "m2"
    status, err = _error(router.on_headers(_headers("GET", "/v1/models/zz")))
    assert status == 404 and err["code"] == "model_not_found"


def test_body_model_routes() -> None:
    router = Router(CONFIG)
    pending = router.on_headers(_headers("POST", "/v1/chat/completions?x=1"))
    assert isinstance(pending, ReadBody) and pending.api.operation == "chat"
    body = b'{"model": "m1", "messages": []}'
    decision = _body(router, pending, body)
    assert isinstance(decision, Route)
    assert decision.headers == {"x-ai-eg-model": "m1"}
    # The client's query reaches no provider: no endpoint served defines one.
    assert decision.state == RouteState("m1", "m1", "/v1/chat/completions", len(body), "", "")
    assert decision.state.metadata()["path"] == "/v1/chat/completions"
    assert RouteState.from_metadata(decision.state.metadata()) == decision.state


@pytest.mark.parametrize(
    ("extra", "stream"),
    [
        (b"", ""),
        (b', "stream": false', ""),
        (b', "stream": null', ""),
        (b', "stream": true', "plain"),
        (b', "stream": true, "stream_options": {"include_usage": false}', "plain"),
        (b', "stream": true, "stream_options": {"include_usage": true}', "usage"),
    ],
)
def test_stream_kind(extra: bytes, stream: str) -> None:
    router = Router(CONFIG)
    pending = router.on_headers(_headers("POST", "/v1/chat/completions"))
    assert isinstance(pending, ReadBody)
    decision = _body(router, pending, b'{"model": "m1"' + extra + b"}")
    assert isinstance(decision, Route) and decision.state.stream == stream


def test_header_model_wins_over_body() -> None:
    router = Router(CONFIG)
    pending = router.on_headers(_headers("POST", "/v1/embeddings", **{"x-ai-eg-model": "m2"}))
    assert isinstance(pending, ReadBody)
    decision = _body(router, pending, b'{"model": "m1", "input": "x"}')
    assert isinstance(decision, Route) and decision.headers["x-ai-eg-model"] == "m2"
    assert decision.state.body_model == "m1"


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b"{not json", 400, None, None),
        (b"", 400, None, None),
        (b"[1, 2]", 400, None, None),
        (b'"m1"', 400, None, None),
        (b"{}", 400, "model", "missing_required_parameter"),
        (b'{"model": 3}', 400, "model", None),
        (b'{"model": "nope"}', 404, "model", "model_not_found"),
        (b'{"model": "m1", "stream": "true"}', 400, "stream", "invalid_type"),
        (b'{"model": "nope", "model": "m1"}', 400, "model", "duplicate_parameter"),
        (b'{"model": "m1", "mod\\u0065l": "m2"}', 400, "model", "duplicate_parameter"),
        (b'{"model": "m1", "stream": false, "stream": true}', 400, "stream", "duplicate_parameter"),
        (b'{"model": "m1", "stream": 1}', 400, "stream", "invalid_type"),
        (b'{"model": "m1", "stream": {}}', 400, "stream", "invalid_type"),
    ],
)
def test_body_errors(body: bytes, status: int, param: str | None, code: str | None) -> None:
    router = Router(CONFIG)
    pending = router.on_headers(_headers("POST", "/v1/chat/completions"))
    assert isinstance(pending, ReadBody)
    got_status, err = _error(_body(router, pending, body))
    assert (got_status, err["param"], err["code"]) == (status, param, code)
    assert err["type"] == "invalid_request_error" and err["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
        ("POST", "/v1/models", 405, "method_not_allowed"),
        ("POST", "/v1/audio/voices", 404, "unsupported_endpoint"),
        ("GET", "/v1/audio/transcriptions", 405, "method_not_allowed"),
        ("POST", "/v1/images/variations", 404, "unsupported_endpoint"),
        ("GET", "/v1/images/generations", 405, "method_not_allowed"),  # (served since issue 19)
        ("GET", "/v1/audio/speech", 405, "method_not_allowed"),
        ("GET", "/v1/files", 404, "unsupported_endpoint"),
        ("POST", "/v1/threads/abc/runs", 404, "unsupported_endpoint"),
        ("POST", "/v1/moderations", 404, "unsupported_endpoint"),  # (completions: now served)
        ("GET", "/v1/completions", 405, "method_not_allowed"),
        ("GET", "/", 404, "unsupported_endpoint"),
        ("GET", "/v1/whatever", 404, "unsupported_endpoint"),
    ],
)
def test_endpoint_errors(method: str, path: str, status: int, code: str) -> None:
    got_status, err = _error(Router(CONFIG).on_headers(_headers(method, path)))
    assert (got_status, err["code"]) == (status, code)
    if status == 404:
        assert path in str(err["message"])


def test_method_not_allowed_names_allowed_method() -> None:
    decision = Router(CONFIG).on_headers(_headers("DELETE", "/v1/embeddings"))
    assert isinstance(decision, Respond) and decision.headers["allow"] == "POST"


# --- what the client sent that no provider gets --------------------------------------------------

FORWARD_CONFIG = parse_config(
    {
        "backends": {
            "b": {"schema": "openai", "url": "http://127.0.0.1:1/v1"},
            "org": {
                "schema": "openai",
                "url": "http://127.0.0.1:2/v1",
                "forward_headers": ["OpenAI-Organization"],
            },
        },
        "models": [
            {"name": "m1", "backends": [{"backend": "b"}]},
            {"name": "own", "backends": [{"backend": "org"}]},
            {"name": "both", "backends": [{"backend": "org"}, {"backend": "b", "priority": 1}]},
        ],
    },
    {},
)
CLIENT_HEADERS = {
    "authorization": "Bearer gateway-key",
    "proxy-authorization": "Basic eA==",
    "cookie": "session=1",
    "x-goog-api-key": "g",
    "x-amz-security-token": "t",
    "x-amz-date": "20260101T000000Z",
    "openai-organization": "org-victim",
    "openai-project": "proj",
    "x-ai-eg-ratelimit": "someone:else",
    "x-ai-eg-cost-usd": "0",
    "x-tenant-id": "kept",
    "user-agent": "kept",
}


def _route(model: str, headers: dict[str, str] | None = None) -> Route:
    router = Router(FORWARD_CONFIG)
    extra = CLIENT_HEADERS if headers is None else headers
    pending = router.on_headers({**_headers("POST", "/v1/chat/completions"), **extra})
    assert isinstance(pending, ReadBody)
    decision = _body(router, pending, b'{"model": "%s", "messages": []}' % model.encode())
    assert isinstance(decision, Route)
    return decision


def test_credentials_and_internal_headers_of_the_client_are_removed() -> None:
    removed = set(_route("m1", {**CLIENT_HEADERS, "x-ai-eg-model": ""}).remove)
    assert removed == set(CLIENT_HEADERS) - {"x-tenant-id", "user-agent", "x-ai-eg-model"}


def test_a_backend_may_ask_for_a_client_header() -> None:
    assert "openai-organization" not in _route("own", {}).remove
    assert "openai-organization" not in _route("own").remove
    # With several backends, only what every one of them asked for.
    assert "openai-organization" in _route("both").remove


def test_the_config_never_forwards_the_gateway_credential() -> None:
    for name in ("Authorization", "x-ai-eg-model"):
        with pytest.raises(ConfigError, match="forward_headers may not name"):
            parse_config({"backends": {"b": {"schema": "openai", "forward_headers": [name]}}}, {})
    with pytest.raises(ConfigError, match="headers may not set"):
        parse_config({"backends": {"b": {"schema": "openai", "headers": {"x-ai-eg-x": "1"}}}}, {})


# --- compressed request bodies ---------------------------------------------------------------------

DOC = b'{"model": "m1", "input": ["' + b"hello " * 2000 + b'"]}'


def _compressed(body: bytes, coding: str) -> Route | Respond:
    router = Router(CONFIG)
    pending = router.on_headers(_headers("POST", "/v1/embeddings", **{"content-encoding": coding}))
    if isinstance(pending, Respond):
        return pending
    assert isinstance(pending, ReadBody)
    decision = _body(router, pending, body)
    assert isinstance(decision, Route | Respond)
    return decision


@pytest.mark.parametrize(
    ("coding", "pack"),
    [
        ("gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", lambda b: b),
    ],
)
def test_a_compressed_body_is_routed_decoded(coding: str, pack: Callable[[bytes], bytes]) -> None:
    decision = _compressed(pack(DOC), coding)
    assert isinstance(decision, Route)
    assert decision.state.request_bytes == len(DOC) and decision.state.model == "m1"
    if coding == "identity":
        assert decision.body is None
    else:
        assert decision.body == DOC and "content-encoding" in decision.remove


def test_a_zip_bomb_is_a_413_measured_after_decoding() -> None:
    limit = CONFIG.http.max_request_bytes
    bomb = gzip.compress(b'{"model": "m1", "input": "' + b"0" * limit + b'"}')
    assert len(bomb) < limit // 100
    status, err = _error(_compressed(bomb, "gzip"))
    assert (status, err["code"]) == (413, "request_too_large")


@pytest.mark.parametrize(("coding", "named"), [("br", "br"), ("zstd", "zstd"), ("gzip, br", "br")])
def test_an_unknown_coding_is_a_415_naming_it(coding: str, named: str) -> None:
    status, err = _error(_compressed(gzip.compress(DOC), coding))
    assert (status, err["code"], err["param"]) == (
        415,
        "unsupported_content_encoding",
        "content-encoding",
    )
    assert f"'{named}'" in str(err["message"])


def test_a_body_that_is_not_what_its_coding_says_is_a_400() -> None:
    for body in (DOC, gzip.compress(DOC)[:-20]):
        status, err = _error(_compressed(body, "gzip"))
        assert (status, err["param"]) == (400, "content-encoding")


def test_a_protocol_upgrade_is_refused_at_the_headers() -> None:
    router = Router(CONFIG)
    headers = _headers("POST", "/v1/chat/completions", upgrade="websocket", connection="Upgrade")
    status, err = _error(router.on_headers(headers))
    assert (status, err["code"], err["type"]) == (
        400,
        "upgrade_not_supported",
        "invalid_request_error",
    )
    assert "websocket" in str(err["message"])


# --- parse work and admission (issue 29) ------------------------------------------------------

BOMB = b'{"model": "m1", "messages": [' + b",".join([b"{}"] * 200_000) + b"]}"


def _limited(rules: list[dict[str, object]]) -> Router:
    from extproc.limits import Limiter, LimitRule
    from extproc.limitstore import MemoryStore

    limiter = Limiter([LimitRule.model_validate(r) for r in rules], MemoryStore())
    return Router(CONFIG, limiter)


def test_a_body_of_too_many_values_is_a_400_before_parsing() -> None:
    router = Router(CONFIG)
    pending = router.on_headers(_headers("POST", "/v1/chat/completions"))
    assert isinstance(pending, ReadBody)
    status, error = _error(_body(router, pending, BOMB))
    assert (status, error["code"]) == (400, "request_too_complex")


def test_when_the_key_alone_decides_a_client_over_its_limit_costs_no_parse() -> None:
    router = _limited([{"requests": 1, "per": "minute"}])
    pending = router.on_headers(_headers("POST", "/v1/chat/completions"))
    assert isinstance(pending, ReadBody)
    first = _body(router, pending, b'{"model": "m1", "messages": []}')
    assert isinstance(first, Route)
    # Not JSON at all: admission answers before the body is read.
    status, error = _error(_body(router, pending, b"not json"))
    assert (status, error["code"]) == (429, "rate_limit_exceeded")


def test_when_a_rule_names_a_model_the_body_is_read_first() -> None:
    router = _limited([{"match": {"model": "m2"}, "requests": 1, "per": "minute"}])
    pending = router.on_headers(_headers("POST", "/v1/chat/completions"))
    assert isinstance(pending, ReadBody)
    body = b'{"model": "m2", "messages": []}'
    assert isinstance(_body(router, pending, body), Route)
    assert _error(_body(router, pending, body))[0] == 429
    assert _error(_body(router, pending, b"not json"))[0] == 400
