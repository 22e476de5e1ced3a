"""Odd model names: carried encoded in the route-matching header, refused when invalid, never a
step up a provider's path."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from extproc.config import AzureOpenAIBackend, parse_config
from extproc.errors import GatewayError
from extproc.render import render
from extproc.router import MAX_MODEL_LENGTH, ReadBody, Respond, Route, Router
from extproc.translate import RequestContext
from extproc.translate import azure as azure_translate
from extproc.translate.bedrock.chat import BedrockChat
from extproc.wire import MODEL_HEADER, decode_model, encode_model

CONFIG = parse_config(
    {
        "backends": {"b": {"schema": "openai", "url": "http://127.0.0.1:1/v1"}},
        "models": [
            {"name": "模型", "backends": [{"backend": "b"}]},
            {"name": "*", "backends": [{"backend": "b"}]},
        ],
    },
    {},
)


def decide(body: dict[str, object], header_model: str | None = None) -> Route | Respond:
    router = Router(CONFIG)
    headers = {":method": "POST", ":path": "/v1/chat/completions"}
    if header_model is not None:
        headers[MODEL_HEADER] = header_model
    pending = router.on_headers(headers)
    assert isinstance(pending, ReadBody)
    decision = asyncio.run(router.on_body(pending, orjson.dumps(body)))
    assert isinstance(decision, Route | Respond)
    return decision


@pytest.mark.parametrize(
    "name",
    ["模型", "gpt-4o", "anthropic.claude-3-haiku-20240307-v1:0", "a b%20c", "meta/llama:3@x"],
)
def test_names_travel_latin1_safe_and_come_back_unchanged(name: str) -> None:
    encoded = encode_model(name)
    encoded.encode("ascii")  # what the gRPC layer can write into a header
    assert " " not in encoded and decode_model(encoded) == name
    if name.isascii() and " " not in name and "%" not in name:
        assert encoded == name  # configured names read the same in Envoy's access log


def test_utf8_names_route_encoded_and_the_route_matches_the_encoded_form() -> None:
    decision = decide({"model": "模型"})
    assert isinstance(decision, Route) and decision.state.model == "模型"
    assert decision.headers[MODEL_HEADER] == "%E6%A8%A1%E5%9E%8B"
    assert decision.state.body_model == "模型"  # metadata: any UTF-8
    route = next(r for r in _routes(render(CONFIG)) if r.get("name") == "模型")
    assert route["match"]["headers"] == [
        {"name": MODEL_HEADER, "string_match": {"exact": "%E6%A8%A1%E5%9E%8B"}}
    ]


def _routes(doc: object) -> list[dict[str, Any]]:
    if isinstance(doc, dict):
        found = list(doc["routes"]) if isinstance(doc.get("routes"), list) else []
        return found + [r for v in doc.values() for r in _routes(v)]
    if isinstance(doc, list):
        return [r for v in doc for r in _routes(v)]
    return []


def test_a_utf8_header_model_is_read_as_utf8() -> None:
    raw_header = "模型".encode().decode("latin-1")  # how the gRPC layer hands header bytes over
    decision = decide({"model": "x"}, header_model=raw_header)
    assert isinstance(decision, Route) and decision.state.model == "模型"


@pytest.mark.parametrize(
    ("body_model", "header_model"),
    [
        ("m" * (MAX_MODEL_LENGTH + 1), None),
        ("m" * 200_000, None),
        ("a\r\nx-evil: 1", None),
        ("a\x00b", None),
        ("a\x85b", None),
        ("ok", "\xff\xfe\x80"),  # header bytes that are not UTF-8
        ("m" * 300, "ok"),  # the body's name travels too
    ],
)
def test_invalid_names_are_a_400_in_openai_shape(body_model: str, header_model: str | None) -> None:
    decision = decide({"model": body_model}, header_model)
    assert isinstance(decision, Respond) and decision.status == 400
    error = orjson.loads(decision.body)["error"]
    assert error["code"] == "invalid_model" and error["param"] == "model"


def test_the_longest_name_is_accepted() -> None:
    assert isinstance(decide({"model": "m" * MAX_MODEL_LENGTH}), Route)


DOT_NAMES = [".", "..", "../converse", "a/../../b", "x/./y"]


def _ctx(model: str) -> RequestContext:
    return RequestContext("chat", model, model, model, "/v1/chat/completions")


@pytest.mark.parametrize("name", DOT_NAMES)
def test_dot_segment_names_never_reach_a_bedrock_path(name: str) -> None:
    t = BedrockChat(_ctx(name))
    body = orjson.dumps({"model": name, "messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(GatewayError) as caught:
        t.request(body)
    assert caught.value.status == 400 and caught.value.code == "invalid_model"


@pytest.mark.parametrize("name", DOT_NAMES)
def test_dot_segment_names_never_reach_an_azure_path(name: str) -> None:
    backend = AzureOpenAIBackend.model_validate(
        {"schema": "azure_openai", "url": "https://res.openai.azure.com", "api_key": "k"}
    )
    with pytest.raises(GatewayError) as caught:
        azure_translate.translator(_ctx(name), backend)
    assert caught.value.status == 400 and caught.value.code == "invalid_model"


@pytest.mark.parametrize("name", ["...", "a..b", ".hidden", "arn:aws:bedrock:x/y"])
def test_names_with_dots_that_are_no_segment_pass_encoded(name: str) -> None:
    t = BedrockChat(_ctx(name))
    body = orjson.dumps({"model": name, "messages": [{"role": "user", "content": "hi"}]})
    path = t.request(body).path
    assert path.startswith("/model/") and "/" not in path[len("/model/") : -len("/converse")]
