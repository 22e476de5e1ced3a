"""What each backend schema and each served API declare once, and what is derived from it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import get_args

import pytest
from prometheus_client import CollectorRegistry

from extproc import backends
from extproc.backendconfig import BACKEND_TYPES, CREDENTIAL_VARIABLES, SCHEMAS, SECRET_FIELDS
from extproc.backends import Schema, runtime, schema
from extproc.cli import envoy_environment
from extproc.config import Backend, ModelIndex, parse_config
from extproc.endpoints import (
    APIS,
    BY_OPERATION,
    BY_PATH,
    CHAT,
    COMPLETIONS,
    COUNT_TOKENS,
    EMBEDDINGS,
    IMAGE_EDIT,
    IMAGE_GENERATION,
    MESSAGES,
    RESPONSES,
    SPEECH,
    STORED_RESPONSES,
    TRANSCRIPTION,
    TRANSLATION,
    Operation,
    api_for,
)
from extproc.errors import GatewayError
from extproc.router import Respond, Router, RouteState
from extproc.telemetry import Telemetry
from extproc.translate import RequestContext, UpstreamRequest
from extproc.upstream import UpstreamStage
from extproc.wire import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    COUNT_TOKENS_PATH,
    EMBEDDINGS_PATH,
    IMAGE_EDITS_PATH,
    IMAGE_GENERATIONS_PATH,
    MESSAGES_PATH,
    RESPONSES_PATH,
    SPEECH_PATH,
    TRANSCRIPTIONS_PATH,
    TRANSLATIONS_PATH,
)

AZURE_ENTRA = {
    "schema": "azure_openai",
    "url": "https://r.openai.azure.com",
    "entra": {"tenant_id": "t", "client_id": "c", "client_secret": "${ENTRA_SECRET}"},
}
BACKENDS = {
    "openai": {"schema": "openai", "api_key": "${KEY_A}"},
    "azure": {"schema": "azure_openai", "url": "https://a.openai.azure.com", "api_key": "${KEY_B}"},
    "entra": AZURE_ENTRA,
    "bedrock": {
        "schema": "aws_bedrock",
        "region": "us-east-1",
        "access_key_id": "${AWS_ID}",
        "secret_access_key": "${AWS_SECRET}",
        "session_token": "${AWS_TOKEN}",
    },
    "anthropic": {"schema": "anthropic", "api_key": "${ANTHROPIC_KEY}"},
}
ENV = {
    "KEY_A": "sk-a",
    "KEY_B": "az-b",
    "ENTRA_SECRET": "entra-c",
    "AWS_ID": "AKIDEXAMPLE",
    "AWS_SECRET": "aws-secret",
    "AWS_TOKEN": "aws-token",
    "ANTHROPIC_KEY": "sk-ant-secret",
}
# The endpoints each sample backend serves: OpenAI's APIs on OpenAI and Azure, chat and
# embeddings on Bedrock, chat and Anthropic's Messages API on Anthropic (no embeddings API).
_OPENAI_API = {
    "chat",
    "embeddings",
    "responses",
    "stored_responses",
    "text_completion",
    "speech",
    "image_generation",
    "image_edit",
    "transcription",
    "translation",
}
SERVED = {
    "openai": _OPENAI_API,
    "azure": _OPENAI_API,
    "entra": _OPENAI_API,
    "bedrock": {"chat", "embeddings", "responses"},
    "anthropic": {"chat", "messages", "count_tokens"},
}


def test_every_schema_declares_its_provider_and_credential_variables() -> None:
    assert set(SCHEMAS) == {"openai", "azure_openai", "aws_bedrock", "anthropic"}
    for cls in BACKEND_TYPES:
        assert cls.provider and isinstance(cls.credential_variables, frozenset), cls
    assert {cls.provider for cls in BACKEND_TYPES} == {
        "openai",
        "azure.openai",
        "aws.bedrock",
        "anthropic",
    }
    # Only OpenAI-compatible servers answer GET /v1/models for a catch-all route's list.
    assert [cls.provider for cls in BACKEND_TYPES if cls.lists_models] == ["openai"]


def test_the_secret_keys_and_credential_variables_are_derived_from_the_models() -> None:
    # The sets the loader and the CLI spelled out before the registry, now derived.
    assert {"api_key", "client_secret", "access_key_id", "secret_access_key", "session_token"} == (
        SECRET_FIELDS
    )
    assert {
        "OPENAI_API_KEY",
        "AZURE_OPENAI_API_KEY",
        "AZURE_CLIENT_SECRET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "ANTHROPIC_API_KEY",
    } == CREDENTIAL_VARIABLES


def test_envoy_gets_no_secret_of_any_schema() -> None:
    config = parse_config({"backends": BACKENDS}, ENV)
    env = {
        **ENV,
        "OPENAI_API_KEY": "sk-std",
        "AWS_SESSION_TOKEN": "t",
        "ANTHROPIC_API_KEY": "sk-ant-std",
        "HOME": "/home/x",
    }
    assert envoy_environment(config, env) == {"HOME": "/home/x"}


def test_a_model_lookup_after_model_copy_sees_the_copy() -> None:
    backends = {"b": {"schema": "openai"}}
    config = parse_config(
        {"backends": backends, "models": [{"name": "a", "backends": [{"backend": "b"}]}]}
    )
    assert config.model("a") is not None and ModelIndex(config.models).route("a") is not None
    other = parse_config(
        {"backends": backends, "models": [{"name": "z", "backends": [{"backend": "b"}]}]}
    )
    copy = config.model_copy(update={"models": other.models})
    assert copy.model("a") is None and copy.model("z") is other.models[0]
    index = ModelIndex(copy.models)
    assert index.route("a") is None and index.route("z") is other.models[0]


# --- the endpoint x schema registry -------------------------------------------------------------


def test_every_served_path_is_described_once() -> None:
    assert BY_PATH == {
        CHAT_PATH: CHAT,
        EMBEDDINGS_PATH: EMBEDDINGS,
        RESPONSES_PATH: RESPONSES,
        COMPLETIONS_PATH: COMPLETIONS,
        MESSAGES_PATH: MESSAGES,
        COUNT_TOKENS_PATH: COUNT_TOKENS,
        SPEECH_PATH: SPEECH,
        IMAGE_GENERATIONS_PATH: IMAGE_GENERATION,
        IMAGE_EDITS_PATH: IMAGE_EDIT,
        TRANSCRIPTIONS_PATH: TRANSCRIPTION,
        TRANSLATIONS_PATH: TRANSLATION,
    }
    assert set(BY_OPERATION) == {
        "chat",
        "embeddings",
        "responses",
        "stored_responses",
        "text_completion",
        "messages",
        "count_tokens",
        "speech",
        "image_generation",
        "image_edit",
        "transcription",
        "translation",
    }
    assert set(BY_OPERATION) == set(get_args(Operation))
    # Only the audio uploads are multipart forms.
    assert [api.operation for api in APIS if api.body == "multipart"] == [
        "image_edit",
        "transcription",
        "translation",
    ]
    # The stored responses, below /v1/responses/ in the shapes wire.STORED_RESPONSE allows.
    for path in ("resp_1", "resp_1/cancel", "resp_1/input_items", "input_tokens"):
        assert api_for(f"{RESPONSES_PATH}/{path}") is STORED_RESPONSES, path
    for path in ("", "a/b", "resp_1/../x", "resp_1/cancel/x", "..", "x" * 129):
        assert api_for(f"{RESPONSES_PATH}/{path}") is None, path
    # Only chat's streams report usage only when asked for it.
    assert [api.operation for api in APIS if api.stream_usage_opt_in] == ["chat", "text_completion"]
    # Only APIs Envoy's readers can account are ever handed off to them.
    assert [api.operation for api in APIS if api.envoy_usage is not None] == [
        "chat",
        "text_completion",
    ]


def test_the_endpoints_each_schema_serves() -> None:
    config = parse_config({"backends": BACKENDS}, ENV)
    assert set(SERVED) == set(config.backends)
    for name, backend in config.backends.items():
        registered = schema(backend)
        assert set(registered.translators) == SERVED[name], name
        assert runtime(name, backend).provider == type(backend).provider


def test_messages_to_a_backend_that_does_not_speak_it_is_the_404_naming_it() -> None:
    config = parse_config({"backends": BACKENDS}, ENV)
    served = backends.build_backends(config)["bedrock"]
    with pytest.raises(GatewayError) as caught:
        served.translator(_ctx(MESSAGES_PATH, "messages"))
    assert (caught.value.status, caught.value.code) == (404, "unsupported_endpoint")
    assert "/v1/messages" in caught.value.message


def test_anthropic_paths_keep_the_backend_url_s_prefix_and_query() -> None:
    backend = {
        "schema": "anthropic",
        "api_key": "${ANTHROPIC_KEY}",
        "url": "https://proxy.example.com/anthropic",
        "query": {"team": "a"},
    }
    config = parse_config({"backends": {"anthropic": backend}}, ENV)
    served = backends.build_backends(config)["anthropic"]
    chat = served.translator(_ctx(CHAT_PATH, "chat")).request(
        b'{"messages": [{"role": "user", "content": "x"}]}'
    )
    assert chat.path == "/anthropic/v1/messages?team=a"
    messages = served.translator(_ctx(MESSAGES_PATH + "?beta=true", "messages")).request(None)
    assert messages.path == "/anthropic/v1/messages?beta=true&team=a"


def test_anthropic_answers_embeddings_with_the_404_naming_it() -> None:
    config = parse_config({"backends": BACKENDS}, ENV)
    served = backends.build_backends(config)["anthropic"]
    with pytest.raises(GatewayError) as caught:
        served.translator(_ctx(EMBEDDINGS_PATH, "embeddings"))
    assert (caught.value.status, caught.value.code) == (404, "unsupported_endpoint")
    assert "'anthropic' (anthropic)" in caught.value.message


def test_anthropic_requests_carry_the_api_version_and_the_key_header() -> None:
    backend = {
        "schema": "anthropic",
        "api_key": "${ANTHROPIC_KEY}",
        "anthropic_beta": ["a-1", "b-2"],
    }
    config = parse_config({"backends": {"anthropic": backend}}, ENV)
    served = backends.build_backends(config)["anthropic"]
    assert served.static_headers == {"anthropic-version": "2023-06-01", "anthropic-beta": "a-1,b-2"}
    assert served.authority == "api.anthropic.com"
    assert "sk-ant-secret" not in repr(served.auth)
    request = UpstreamRequest("/v1/messages")
    asyncio.run(served.auth.apply(request, served.authority))
    assert request.headers == {"x-api-key": "sk-ant-secret"}


def _only_chat(real: Callable[[Backend], Schema]) -> Callable[[Backend], Schema]:
    """A test-only registration: the real schemas, minus embeddings."""

    def registered(backend: Backend) -> Schema:
        full = real(backend)
        return Schema({"chat": full.translators["chat"]}, full.auth)

    return registered


def _ctx(path: str, operation: Operation) -> RequestContext:
    return RequestContext(operation, "m", "m", "m", path)


def test_an_endpoint_a_backend_does_not_serve_is_a_404_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backends, "schema", _only_chat(backends.schema))
    config = parse_config({"backends": BACKENDS}, ENV)
    served = backends.build_backends(config)["openai"]
    assert served.translator(_ctx(CHAT_PATH, "chat")) is not None
    with pytest.raises(GatewayError) as caught:
        served.translator(_ctx(EMBEDDINGS_PATH, "embeddings"))
    err = caught.value
    assert (err.status, err.code) == (404, "unsupported_endpoint")
    assert "/v1/embeddings" in err.message and "'openai'" in err.message


def test_the_upstream_stage_answers_an_unserved_endpoint_with_that_404(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backends, "schema", _only_chat(backends.schema))
    models = [{"name": "m", "backends": [{"backend": "bedrock", "family": "claude"}]}]
    config = parse_config({"backends": BACKENDS, "models": models}, ENV)
    registry = CollectorRegistry()
    stage = UpstreamStage(config, Telemetry(config, registry=registry))
    state = RouteState("m", "m", EMBEDDINGS_PATH, 10)
    step = asyncio.run(stage.exchange().request_headers({}, "bedrock", state))
    assert step.error is not None and step.done
    assert (step.error.status, step.error.code) == (404, "unsupported_endpoint")
    assert "'bedrock' (aws.bedrock)" in step.error.message
    assert "embeddings" in step.error.message
    chat = RouteState("m", "m", CHAT_PATH, 10)
    assert asyncio.run(stage.exchange().request_headers({}, "bedrock", chat)).error is None


def test_an_unknown_path_names_every_served_endpoint() -> None:
    router = Router(parse_config({}))
    answer = router.on_headers({":method": "POST", ":path": "/v1/nothing"})
    assert isinstance(answer, Respond) and answer.status == 404
    assert (
        b"Supported: POST /v1/chat/completions, POST /v1/embeddings, POST /v1/responses,"
        b" POST /v1/completions, POST /v1/messages, POST /v1/messages/count_tokens,"
        b" POST /v1/audio/speech, POST /v1/images/generations, POST /v1/images/edits,"
        b" POST /v1/audio/transcriptions, POST /v1/audio/translations,"
        b" GET/POST/DELETE /v1/responses/{id}, GET /v1/models." in answer.body
    )
