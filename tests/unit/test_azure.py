"""The Azure OpenAI translator and credentials, alone and against the fake and recorded Azure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from extproc.auth import StaticHeader
from extproc.auth.entra import EntraIDAuth, backend_auth
from extproc.config import AzureOpenAIBackend
from extproc.endpoints import Operation
from extproc.errors import GatewayError
from extproc.translate import RequestContext, Translator, UpstreamRequest
from extproc.translate.azure import translator
from tests.fakes.azure import CONTENT_FILTER_MARKER, FakeAzure
from tests.fakes.replay import Replay, cassette
from tests.fakes.server import http_post

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello there"}]}
EMBED = {"model": "embed", "input": "Hello there"}


def backend(url: str = "https://res.openai.azure.com", **extra: Any) -> AzureOpenAIBackend:
    config = {"schema": "azure_openai", "url": url, "api_key": "azure-test-key", **extra}
    return AzureOpenAIBackend.model_validate(config)


def context(
    deployment: str = "gpt-4o",
    endpoint: Operation = "chat",
    body_model: str | None = "gpt-4o",
    path: str | None = None,
) -> RequestContext:
    client_path = path or ("/v1/chat/completions" if endpoint == "chat" else "/v1/embeddings")
    return RequestContext(endpoint, "gpt-4o", deployment, body_model, client_path)


def send(
    t: Translator, base_url: str, cfg: AzureOpenAIBackend, body: dict[str, Any]
) -> tuple[int, bytes, UpstreamRequest]:
    """What Envoy would do for one attempt: translate, add the credential, forward."""
    raw = orjson.dumps(body)
    upstream = t.request(raw if t.needs_request_body else None)
    asyncio.run(backend_auth(cfg).apply(upstream, "res.openai.azure.com"))
    sent = upstream.body if upstream.body is not None else raw
    headers = {"content-type": "application/json", **upstream.headers}
    status, answer = http_post(base_url + upstream.path, sent, headers)
    return status, answer, upstream


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    with FakeAzure(deployments={"gpt-4o", "embed", "my deploy/1"}) as fake:
        yield fake


# --- paths --------------------------------------------------------------------------------


def test_deployments_chat_path_and_no_body_buffering() -> None:
    t = translator(context(body_model="gpt-4o-alias"), backend())
    assert not t.needs_request_body  # Azure ignores the body's model on this surface
    upstream = t.request(None)
    assert upstream.path == "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    assert upstream.body is None


def test_deployments_embeddings_path() -> None:
    t = translator(context("embed", "embeddings", "embed"), backend(api_version="2024-06-01"))
    path = t.request(None).path
    assert path == "/openai/deployments/embed/embeddings?api-version=2024-06-01"


def test_deployment_is_url_quoted_and_url_prefix_kept() -> None:
    t = translator(context("my deploy/1"), backend("https://gw.example/azure/"))
    expected = "/azure/openai/deployments/my%20deploy%2F1/chat/completions?api-version=2024-10-21"
    assert t.request(None).path == expected


def test_backend_query_appended_and_overrides_client_query() -> None:
    ctx = context(path="/v1/chat/completions?api-version=1999-01-01&trace=on")
    t = translator(ctx, backend(query={"foo": "a b"}))
    path = t.request(None).path
    assert path == (
        "/openai/deployments/gpt-4o/chat/completions?trace=on&api-version=2024-10-21&foo=a+b"
    )


def test_v1_surface_path_and_model_in_body() -> None:
    t = translator(context("dep-1", body_model="gpt-4o"), backend(surface="v1"))
    assert t.needs_request_body
    upstream = t.request(orjson.dumps(CHAT))
    assert upstream.path == "/openai/v1/chat/completions"
    assert upstream.body is not None
    assert orjson.loads(upstream.body)["model"] == "dep-1"


def test_v1_surface_leaves_the_body_alone_when_the_model_matches() -> None:
    t = translator(context("embed", "embeddings", "embed"), backend(surface="v1", query={"x": "1"}))
    assert not t.needs_request_body
    assert t.request(None).path == "/openai/v1/embeddings?x=1"


def test_responses_pass_through() -> None:
    t = translator(context(), backend())
    # Watched for usage, never changed.
    assert t.response_body_mode(400, {"content-type": "application/json"}) == "buffered"
    assert t.response_headers(400, {}).set == {}
    assert t.response_body(b'{"error":{"code":"content_filter"}}', True) == (
        b'{"error":{"code":"content_filter"}}'
    )


@pytest.mark.parametrize("surface", ["deployments", "v1"])
def test_azure_failures_are_the_pass_through_ones(surface: str) -> None:
    """Azure is OpenAI's API: a cut stream or an unreadable 2xx body fails the attempt."""
    t = translator(context(), backend(surface=surface))
    t.response_body_mode(200, {"content-type": "text/event-stream"})
    t.response_body(b'data: {"choices": []}\n\n', True)
    assert t.failure == "stream_truncated" and not t.complete

    t = translator(context(), backend(surface=surface))
    t.response_body_mode(200, {"content-type": "application/json"})
    with pytest.raises(GatewayError) as raised:
        t.response_body(b'{"choices": [', True)
    assert raised.value.status == 502
    assert t.failure == "bad_upstream_response"

    t = translator(context(), backend(surface=surface))
    t.response_body_mode(400, {"content-type": "application/json"})
    t.response_body(b'{"error":{"code":"content_filter"}}', True)
    assert t.failure is None and t.complete


# --- credentials --------------------------------------------------------------------------


def test_api_key_header() -> None:
    auth = backend_auth(backend())
    assert isinstance(auth, StaticHeader)
    assert not auth.needs_body
    request = UpstreamRequest(path="/")
    asyncio.run(auth.apply(request, "res.openai.azure.com"))
    assert request.headers == {"api-key": "azure-test-key"}
    assert "azure-test-key" not in repr(auth)


def test_entra_backend_gets_entra_auth() -> None:
    entra = {"tenant_id": "t", "client_id": "c", "client_secret": "s3cr3t-value"}
    cfg = AzureOpenAIBackend.model_validate(
        {"schema": "azure_openai", "url": "https://res.openai.azure.com", "entra": entra}
    )
    auth = backend_auth(cfg)
    assert isinstance(auth, EntraIDAuth)
    assert auth.token_url == "https://login.microsoftonline.com/t/oauth2/v2.0/token"
    assert "s3cr3t-value" not in repr(auth)


# --- against the fake Azure ---------------------------------------------------------------


@pytest.mark.parametrize("surface", ["deployments", "v1"])
def test_chat_against_fake_keeps_azure_fields(azure: FakeAzure, surface: str) -> None:
    cfg = backend(azure.url, surface=surface)
    status, body, _ = send(translator(context(), cfg), azure.url, cfg, CHAT)
    assert status == 200, body
    doc = orjson.loads(body)
    assert doc["choices"][0]["message"]["content"] == "Echo: Hello there"
    assert "prompt_filter_results" in doc
    assert "content_filter_results" in doc["choices"][0]
    seen = azure.requests[-1]
    assert seen.headers["api-key"] == "azure-test-key"
    assert seen.query == ({"api-version": "2024-10-21"} if surface == "deployments" else {})


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_against_fake(azure: FakeAzure, encoding: str) -> None:
    cfg = backend(azure.url)
    ctx = context("embed", "embeddings", "embed")
    status, body, _ = send(
        translator(ctx, cfg), azure.url, cfg, {**EMBED, "encoding_format": encoding}
    )
    assert status == 200, body
    assert isinstance(
        orjson.loads(body)["data"][0]["embedding"], list if encoding == "float" else str
    )
    assert azure.requests[-1].path == "/openai/deployments/embed/embeddings"


def test_quoted_deployment_reaches_fake(azure: FakeAzure) -> None:
    cfg = backend(azure.url)
    status, body, _ = send(translator(context("my deploy/1"), cfg), azure.url, cfg, CHAT)
    assert status == 200, body
    assert azure.requests[-1].raw_path.startswith("/openai/deployments/my%20deploy%2F1/")


def test_unsupported_api_version_is_azures_error(azure: FakeAzure) -> None:
    cfg = backend(azure.url, api_version="2020-01-01")
    status, body, _ = send(translator(context(), cfg), azure.url, cfg, CHAT)
    assert status == 400
    assert orjson.loads(body)["error"]["message"] == "API version not supported"


def test_content_filter_error_passes_through(azure: FakeAzure) -> None:
    cfg = backend(azure.url)
    t = translator(context(), cfg)
    prompt = {**CHAT, "messages": [{"role": "user", "content": f"x {CONTENT_FILTER_MARKER}"}]}
    status, body, _ = send(t, azure.url, cfg, prompt)
    assert status == 400
    error = orjson.loads(body)["error"]
    assert error["code"] == "content_filter"
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    # The client gets Azure's status and body untouched.
    assert t.response_headers(400, {}).set == {}
    assert t.response_body(body, True) is body


def test_wrong_key_is_rejected_by_fake(azure: FakeAzure) -> None:
    status, body = http_post(
        azure.url + "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        orjson.dumps(CHAT),
        {"api-key": "nope", "content-type": "application/json"},
    )
    assert status == 401
    assert orjson.loads(body)["error"]["code"] == "401"


def test_recorded_azure_chat_replays_byte_for_byte() -> None:
    recorded = cassette("azure-chat-basic")
    with Replay([recorded]) as upstream:
        cfg = backend(upstream.url, api_version=recorded.query["api-version"])
        t = translator(context("gpt-5-nano", body_model="gpt-5-nano"), cfg)
        status, body, sent = send(t, upstream.url, cfg, recorded.request_json())
    assert sent.path == f"{recorded.path}?api-version=2024-12-01-preview"
    assert (status, body) == (recorded.status, recorded.response_body)
    doc = orjson.loads(body)
    assert doc["prompt_filter_results"][0]["content_filter_results"] == {}
    assert doc["choices"][0]["content_filter_results"] == {}
