"""Answers larger than the gateway's buffer limit (``http.max_request_bytes``, 1 MiB here),
through real Envoy and sidecar (issue 29):

- an answer that needs no rewrite (OpenAI-compatible embeddings) reaches the client whole and is
  accounted: with the provider's usage when the provider announced its length and the model
  has one backend (read as it passes), with the gateway's estimate otherwise (sent chunked,
  the sidecar sees its first megabyte and Envoy passes the rest on unread; with several
  backends, Envoy passes an announced one on alone);
- an answer that must be translated (Bedrock), or that came compressed although the gateway
  asked for none, is one clear 502 ``response_too_large`` and the provider-billed usage is
  still accounted (estimated), never 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from tests.fakes.faulty import FaultyUpstream
from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway
from tests.integration.probes import metric, openai_error, wait_for

LIMIT = 1024 * 1024
INPUTS = [f"input number {i}" for i in range(400)]  # the fake's tokens: 3 per input
DIMS = 1024  # 400 x 1024 floats: ~8 MB of JSON, ~2 MB in base64
FAKES: dict[str, dict[str, Any]] = {
    "announced": {},
    "chunked": {"chunked": True},
    "gzip": {"compress": "always"},
    "gzip_chunked": {"compress": "always", "chunked": True},
}
PASSED_ON = ["announced", "chunked", "announced_pair", "chunked_pair"]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeOpenAI]]:
    servers = {name: FakeOpenAI(**options) for name, options in FAKES.items()}
    for server in servers.values():
        server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FaultyUpstream]:
    with FaultyUpstream("huge_converse", size=4 * LIMIT) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeOpenAI], bedrock: FaultyUpstream) -> Iterator[Gateway]:
    backends: dict[str, object] = {
        name: {"schema": "openai", "url": f"{fake.url}/v1"} for name, fake in fakes.items()
    }
    backends["bedrock"] = {
        "schema": "aws_bedrock",
        "url": bedrock.url,
        "region": "us-east-1",
        "access_key_id": "${LARGE_AWS_KEY}",
        "secret_access_key": "${LARGE_AWS_KEY}",
    }
    models: list[dict[str, Any]] = [{"name": n, "backends": [{"backend": n}]} for n in fakes]
    # Two backends: the upstream stage (not the router stage) serves each attempt.
    for name in ("announced", "chunked"):
        backends[f"{name}_2"] = backends[name]
        pair = [{"backend": name}, {"backend": f"{name}_2"}]
        models.append({"name": f"{name}_pair", "backends": pair})
    models.append(
        {
            "name": "claude",
            "backends": [{"backend": "bedrock", "model": "anthropic.claude-3-haiku-20240307-v1:0"}],
            "retry": {"attempts": 1},
        }
    )
    config = {"backends": backends, "models": models, "http": {"max_request_bytes": LIMIT}}
    with Gateway(config, env={"LARGE_AWS_KEY": "unused"}, workers=1) as gw:
        yield gw


def _tokens(gw: Gateway, model: str, source: str) -> float:
    return metric(
        gw,
        "gen_ai_client_token_usage_sum",
        gen_ai_request_model=model,
        gen_ai_token_type="input",
        ai_gateway_usage_source=source,
    )


@pytest.mark.parametrize("name", PASSED_ON)
# The Python SDK asks for base64 unless told otherwise, and decodes it.
@pytest.mark.parametrize("encoding_format", ["float", None])
def test_a_large_embeddings_batch_is_served_and_accounted(
    gateway: Gateway, name: str, encoding_format: str | None
) -> None:
    # Read as it passes only by the router stage (one backend) and when announced: see
    # upstream.Exchange.response_headers for why not in the upstream stage.
    source = "provider" if name == "announced" else "estimated"
    before = _tokens(gateway, name, source)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    extra = {"encoding_format": encoding_format} if encoding_format else {}
    answer = client.embeddings.create(model=name, input=INPUTS, dimensions=DIMS, **extra)
    assert len(answer.data) == len(INPUTS)
    assert all(len(item.embedding) == DIMS for item in answer.data)
    assert answer.usage.prompt_tokens == 3 * len(INPUTS)
    wait_for(lambda: _tokens(gateway, name, source) > before, what=f"{source} input tokens")
    counted = _tokens(gateway, name, source) - before
    if source == "provider":
        assert counted == 3 * len(INPUTS)
    else:
        # The gateway's own count: of the inputs' text (cl100k_base: 3 or 4 tokens each) where
        # the stage has the body, from its length in the upstream stage.
        assert 1.5 * len(INPUTS) <= counted <= 6 * len(INPUTS)


REFUSED = [
    ("claude", "/v1/chat/completions", {"messages": [{"role": "user", "content": "write a lot"}]}),
    ("gzip", "/v1/embeddings", {"input": INPUTS, "dimensions": DIMS}),
    ("gzip_chunked", "/v1/embeddings", {"input": INPUTS, "dimensions": DIMS}),
]


@pytest.mark.parametrize(("model", "path", "body"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_large_answer_it_must_rewrite_is_one_clear_error_and_still_accounted(
    gateway: Gateway, model: str, path: str, body: dict[str, object]
) -> None:
    before = _tokens(gateway, model, "estimated")
    response = httpx2.post(f"{gateway.url}{path}", json={"model": model, **body}, timeout=30)
    assert response.status_code == 502
    error = openai_error(response.content)
    assert error["code"] == "response_too_large" and "max_request_bytes" in error["message"]
    wait_for(lambda: _tokens(gateway, model, "estimated") > before, what="an estimate")
