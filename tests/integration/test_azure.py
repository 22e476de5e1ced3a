"""Azure OpenAI through real Envoy + sidecar, with the plain `OpenAI` client (not `AzureOpenAI`)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from tests.fakes.azure import CONTENT_FILTER_MARKER, FakeAzure
from tests.harness import Gateway

API_KEY = "azure-key-canary-5521"
SECRET = "entra-secret-canary-0934"
TOKEN_TTL = 8  # seconds: the gateway refreshes 10% before expiry


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzure]:
    with FakeAzure(
        api_key=API_KEY,
        deployments={"gpt4o-prod", "embed-prod"},
        api_versions={"2024-10-21"},
        client_secret=SECRET,
        token_ttl=TOKEN_TTL,
    ) as fake:
        yield fake


def _config(azure: FakeAzure) -> dict[str, object]:
    return {
        "backends": {
            "azure-key": {"schema": "azure_openai", "url": azure.url, "api_key": "${AZ_KEY}"},
            "azure-entra": {
                "schema": "azure_openai",
                "url": azure.url,
                "entra": {
                    "tenant_id": azure.tenant_id,
                    "client_id": azure.client_id,
                    "client_secret": "${AZ_SECRET}",
                    "authority": azure.authority,
                },
            },
            "azure-v1": {
                "schema": "azure_openai", "url": azure.url, "api_key": "${AZ_KEY}", "surface": "v1",
            },
        },
        "models": [
            {"name": "gpt-4o", "backends": [{"backend": "azure-key", "model": "gpt4o-prod"}]},
            {"name": "gpt-4o-entra", "backends": [{"backend": "azure-entra", "model": "gpt4o-prod"}]},
            {"name": "gpt-4o-v1", "backends": [{"backend": "azure-v1", "model": "gpt4o-prod"}]},
            {"name": "text-embedding-3-small", "backends": [{"backend": "azure-key", "model": "embed-prod"}]},
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def gateway(azure: FakeAzure) -> Iterator[Gateway]:
    # One worker: the Entra token cache lives per worker process, and the test counts fetches.
    with Gateway(_config(azure), env={"AZ_KEY": API_KEY, "AZ_SECRET": SECRET}, workers=1) as gw:
        yield gw


@pytest.fixture
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="client-key", max_retries=0)


def test_chat_non_streaming_with_api_key(client: OpenAI, azure: FakeAzure) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello azure"}]
    )
    assert reply.choices[0].message.content == "Echo: hello azure"
    extra = reply.model_extra or {}
    assert "prompt_filter_results" in extra
    assert "content_filter_results" in (reply.choices[0].model_extra or {})
    seen = azure.requests[-1]
    assert seen.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == API_KEY
    assert "authorization" not in seen.headers


def test_a_client_api_version_in_any_case_never_reaches_azure(
    client: OpenAI, azure: FakeAzure
) -> None:
    # Azure reads its query parameters without regard to case: a client's spelling beside the
    # gateway's would pick the API version (issue 29). The client's query is dropped whole.
    client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hello azure"}],
        extra_query={"API-Version": "2020-01-01", "Api-version": "2021-01-01", "x": "1"},
    )
    seen = azure.requests[-1]
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.raw_path.lower().count("api-version") == 1


def test_chat_streaming(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "stream this please"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Echo: stream this please"


def test_tools(client: OpenAI, azure: FakeAzure) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "look it up"}], tools=tools
    )
    assert reply.choices[0].message.tool_calls[0].function.name == "lookup"
    assert azure.requests[-1].json()["tools"] == tools


def test_embeddings(client: OpenAI, azure: FakeAzure) -> None:
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    assert len(floats.data) == 2
    default = client.embeddings.create(model="text-embedding-3-small", input="a")
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert azure.requests[-1].path == "/openai/deployments/embed-prod/embeddings"


def test_content_filter_error_keeps_status_and_code(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"bad {CONTENT_FILTER_MARKER}"}]
        )
    assert info.value.status_code == 400
    assert info.value.code == "content_filter"


def test_v1_surface(client: OpenAI, azure: FakeAzure) -> None:
    client.chat.completions.create(model="gpt-4o-v1", messages=[{"role": "user", "content": "v1"}])
    seen = azure.requests[-1]
    assert seen.path == "/openai/v1/chat/completions" and "api-version" not in seen.query
    assert seen.json()["model"] == "gpt4o-prod"


def test_entra_token_shared_and_refreshed(client: OpenAI, azure: FakeAzure) -> None:
    before = azure.token_fetches

    def ask(i: int) -> str:
        reply = client.chat.completions.create(
            model="gpt-4o-entra", messages=[{"role": "user", "content": f"n{i}"}]
        )
        return reply.choices[0].message.content or ""

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(ask, range(50)))
    assert answers == [f"Echo: n{i}" for i in range(50)]
    assert azure.token_fetches == before + 1
    assert azure.requests[-1].headers["authorization"].startswith("Bearer ")
    assert "api-key" not in azure.requests[-1].headers

    # Past the token's lifetime every request still succeeds: the gateway refreshed it.
    deadline = time.monotonic() + TOKEN_TTL + 2
    while time.monotonic() < deadline:
        assert ask(0) == "Echo: n0"
        time.sleep(0.5)
    assert azure.token_fetches >= before + 2


def test_secrets_not_in_output(gateway: Gateway) -> None:
    output = "".join(gateway.output)
    assert API_KEY not in output and SECRET not in output
