from __future__ import annotations

import asyncio

import orjson
import pytest

from extproc.config import parse_config
from extproc.router import ReadBody, Respond, Route, Router

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
    assert isinstance(pending, ReadBody) and pending.endpoint == "chat"
    body = b'{"model": "m1", "messages": []}'
    decision = _body(router, pending, body)
    assert isinstance(decision, Route)
    assert decision.headers == {
        "x-ai-eg-model": "m1",
        "x-ai-eg-body-model": "m1",
        "x-ai-eg-path": "/v1/chat/completions?x=1",
        "x-ai-eg-content-length": str(len(body)),
        "x-ai-eg-stream": "",
        "x-ai-eg-ratelimit": "",
    }


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
    assert isinstance(decision, Route) and decision.headers["x-ai-eg-stream"] == stream


def test_header_model_wins_over_body() -> None:
    router = Router(CONFIG)
    pending = router.on_headers(_headers("POST", "/v1/embeddings", **{"x-ai-eg-model": "m2"}))
    assert isinstance(pending, ReadBody)
    decision = _body(router, pending, b'{"model": "m1", "input": "x"}')
    assert isinstance(decision, Route) and decision.headers["x-ai-eg-model"] == "m2"
    assert decision.headers["x-ai-eg-body-model"] == "m1"


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
        ("POST", "/v1/audio/transcriptions", 404, "unsupported_endpoint"),
        ("POST", "/v1/images/generations", 404, "unsupported_endpoint"),
        ("GET", "/v1/files", 404, "unsupported_endpoint"),
        ("POST", "/v1/threads/abc/runs", 404, "unsupported_endpoint"),
        ("POST", "/v1/completions", 404, "unsupported_endpoint"),
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
