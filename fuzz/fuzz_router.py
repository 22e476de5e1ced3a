"""The router stage (extproc/router.py) and the OpenAI body rewrite (translate/openai.py).

Any method, path, headers and body. Invariants: the router answers a 4xx in OpenAI's shape or
routes with its whole decision, each header writable as a header value (latin-1) and the
model header decoding back to the routed model; it never raises. A routed model is either
refused as a path segment with a 400 or becomes one segment that is no dot segment. ``rewrite_body`` raises nothing but a
4xx :class:`GatewayError`, and what it returns is a JSON object with the model asked for.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import atheris
import orjson
from _common import argv, guard, json_object

with atheris.instrument_imports():
    from extproc.clients import hash_key
    from extproc.config import parse_config
    from extproc.errors import GatewayError
    from extproc.router import ReadBody, Respond, Route, Router
    from extproc.translate import path_segment
    from extproc.translate.openai import rewrite_body
    from extproc.wire import MODEL_HEADER, decode_model

KEY = "sk-fuzz-gateway-key"
CONFIG = parse_config(
    {
        "backends": {"b": {"schema": "openai", "url": "http://127.0.0.1:1/v1"}},
        "models": [
            {"name": "m", "backends": [{"backend": "b"}]},
            {"name": "gpt-4o", "backends": [{"backend": "b"}]},
        ],
        "clients": [
            {"name": "a", "key_sha256": hash_key(KEY), "models": ["m"]},
        ],
    },
    {},
)
ROUTER = Router(CONFIG)
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", ""]
PATHS = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/m",
    "/v1/models/",
    "/v1/files",
    "/v1/chat/completions?stream=true",
    "/v1/models/m?x=1",
]
MODELS = [
    "m", "gpt-4o", "unknown", "", "m\u00e9", "模型", ".", "..", "../converse", "a/./b", "%2e%2e",
    "a\r\nb", "m" * 257,
]  # fmt: skip


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """The router awaits nothing without a limiter: one step runs it to the end."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the router awaited something without a limiter")


def _check_respond(decision: Respond) -> None:
    if not 200 <= decision.status < 500:
        raise AssertionError(f"router answered {decision.status}")
    doc = orjson.loads(decision.body)
    if decision.status >= 400:
        error = doc["error"]
        if not isinstance(error["message"], str) or not error["message"]:
            raise AssertionError("error without a message")
        if set(error) != {"message", "type", "param", "code"}:
            raise AssertionError(f"error not in OpenAI's shape: {error}")


def _check_segment(model: str) -> None:
    try:
        segment = path_segment(model)
    except GatewayError as err:
        if err.status != 400:
            raise
        return
    if "/" in segment or segment in (".", ".."):
        raise AssertionError(f"model {model!r} is not one safe path segment: {segment!r}")


def check(data: bytes) -> None:
    # Five selector bytes (method, path, model header, key, body mode); the rest is the body
    # as is, or the seed of a generated JSON document (which then also draws the path).
    head = data[:5].ljust(5, b"\0")
    rest = data[5:]
    fdp = atheris.FuzzedDataProvider(rest)
    method = METHODS[head[0] % len(METHODS)]
    path = PATHS[head[1] % len(PATHS)]
    headers = {":method": method, ":path": path}
    if head[2] % (len(MODELS) + 1) < len(MODELS):
        # As the gRPC layer hands a header over: its bytes (UTF-8 from a client) as latin-1.
        headers[MODEL_HEADER] = MODELS[head[2] % (len(MODELS) + 1)].encode().decode("latin-1")
    auth = head[3] % 4
    if auth == 1:
        headers["authorization"] = f"Bearer {KEY}"
    elif auth == 2:
        headers["api-key"] = KEY[:-1]
    elif auth == 3:
        headers["x-api-key"] = KEY
    model = MODELS[head[2] % len(MODELS)] or None
    include_usage = bool(head[4] & 2)
    if head[4] & 1:
        body = rest
    else:
        if head[4] & 4:
            headers[":path"] = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 48))
        if head[4] & 8:
            # Any model name in the body: non-ASCII, control characters, dot segments.
            name = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 300))
            body = orjson.dumps({"model": name, "messages": []})
        else:
            body = json_object(fdp)

    decision = ROUTER.on_headers(headers)
    if isinstance(decision, ReadBody):
        decision = _run(ROUTER.on_body(decision, body))
    if isinstance(decision, Respond):
        _check_respond(decision)
    elif isinstance(decision, Route):
        if decode_model(decision.headers.get(MODEL_HEADER, "")) != decision.state.model:
            raise AssertionError("the model header does not decode to the routed model")
        if "?" in decision.state.path or decision.state.request_bytes != len(body):
            raise AssertionError(f"route decided on the wrong request: {decision.state}")
        for value in decision.headers.values():
            value.encode("latin-1")  # what the gRPC layer writes: a crash if it cannot
        _check_segment(decision.state.model)
    else:
        raise AssertionError(f"unexpected decision {decision!r}")

    try:
        out = rewrite_body(body, model, include_usage)
    except GatewayError as err:
        if not 400 <= err.status < 500:
            raise
        return
    doc = orjson.loads(out)
    if not isinstance(doc, dict) or (model is not None and doc.get("model") != model):
        raise AssertionError("rewrite_body lost the model")
    if include_usage and doc["stream_options"].get("include_usage") is not True:
        raise AssertionError("rewrite_body lost include_usage")


def main() -> None:
    atheris.Setup(argv(), guard("router", check))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
