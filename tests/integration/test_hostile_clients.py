"""Hostile clients through real Envoy + sidecar (issue "Hostile clients"): bounded metric labels,
odd model names, dot segments, odd transfer codings, budgets across a worker restart.

Each test reproduces one finding: it failed before the fix.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from openai import OpenAI

from extproc.router import MAX_MODEL_LENGTH
from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway
from tests.integration.probes import (
    admin_text,
    metric,
    openai_error,
    raw,
    request_bytes,
    rss_bytes,
    tracebacks,
    wait_for,
    workers,
)

MIB = 1024 * 1024
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
# The documented defaults (README, Telemetry: label bounds).
MAX_MODELS = 100
MAX_HEADER_VALUES = 100
MAX_VALUE_LENGTH = 100
MAX_LABEL_SETS = 500
# The documented bound of what the attack below may add (README, Telemetry: label bounds).
METRICS_BOUND = 16 * MIB
WORKER_GROWTH_BOUND = 64 * MIB


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(chunk_delay=0) as server:
        yield server


@pytest.fixture(scope="module")
def gw(fake: FakeOpenAI) -> Iterator[Gateway]:
    config = {
        "telemetry": {"header_attributes": {"x-tenant-id": "tenant"}},
        "backends": {
            "oa": {"schema": "openai", "url": f"{fake.url}/v1"},
            "oa2": {"schema": "openai", "url": f"{fake.url}/v1"},
        },
        "models": [
            {"name": "m", "backends": [{"backend": "oa"}]},
            {"name": "名前", "backends": [{"backend": "oa", "model": "upstream-名前"}]},
            # Two backends: served by the upstream stage, a gRPC stream of its own.
            {"name": "*", "backends": [{"backend": "oa"}, {"backend": "oa2", "priority": 1}]},
        ],
    }
    with Gateway(config, workers=2) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(gw: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)


def _label_values(gw: Gateway, label: str) -> set[str]:
    text = admin_text(gw, "/metrics")
    return set(re.findall(rf'\b{label}="((?:[^"\\]|\\.)*)"', text))


def _label_sets(gw: Gateway) -> set[tuple[str, ...]]:
    """The distinct (request model, response model, tenant) of the request counter."""
    found: set[tuple[str, ...]] = set()
    for line in admin_text(gw, "/metrics").splitlines():
        if line.startswith("ai_gateway_requests_total{"):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line))
            found.add(
                (labels["gen_ai_request_model"], labels["gen_ai_response_model"], labels["tenant"])
            )
    return found


def _chat(client: OpenAI, model: str, **kw: Any) -> Any:
    return client.chat.completions.create(model=model, messages=HI, **kw)


# --- high: bounded metric labels ------------------------------------------------------------


def test_unique_model_names_and_header_values_leave_metrics_and_memory_bounded(
    gw: Gateway, client: OpenAI
) -> None:
    _chat(client, "m")
    before_pids = workers(gw)
    before_rss = {name: rss_bytes(pid) for name, pid in before_pids.items()}
    before_metrics = len(admin_text(gw, "/metrics"))

    # The attack: unique 4,000-character model names on the "*" route...
    for _ in range(400):
        with pytest.raises(openai.BadRequestError) as caught:
            _chat(client, uuid.uuid4().hex * 250)
        assert caught.value.code == "invalid_model"
    # ...the longest names accepted, past the bound...
    names = [uuid.uuid4().hex * (MAX_MODEL_LENGTH // 32) for _ in range(400)]
    for name in names:
        _chat(client, name)
    # ...then unique 4,000-character header values...
    tenants = [uuid.uuid4().hex * 125 for _ in range(400)]
    for tenant in tenants:
        _chat(client, "m", extra_headers={"x-tenant-id": tenant})
    # ...and the admitted names times the admitted values: 1,000 new label sets.
    for i in range(1000):
        _chat(client, names[i % 100], extra_headers={"x-tenant-id": tenants[i // 100]})

    wait_for(lambda: metric(gw, "ai_gateway_requests_total") >= 1801, what="the records")
    models = _label_values(gw, "gen_ai_request_model")
    assert len(models - {"m", "other"}) == MAX_MODELS
    assert "other" in _label_values(gw, "gen_ai_response_model")
    values = _label_values(gw, "tenant") - {"", "other"}
    assert len(values) == MAX_HEADER_VALUES
    assert all(len(t) == MAX_VALUE_LENGTH for t in values)
    # The sets of client-chosen values, and m, other, m with other, other with other.
    assert len(_label_sets(gw)) == MAX_LABEL_SETS + 4
    dropped = "ai_gateway_telemetry_labels_dropped_total"
    assert metric(gw, dropped, attribute="gen_ai.request.model", reason="cap") == 300
    assert metric(gw, dropped, attribute="tenant", reason="truncated") == 1400
    assert metric(gw, dropped, attribute="tenant", reason="cap") == 300
    assert metric(gw, dropped, attribute="gen_ai.request.model", reason="truncated") == 1400
    # 200 sets so far (names alone, values alone), then 300 of the 1,000 products.
    assert metric(gw, dropped, attribute="label_set", reason="cap") == 700

    grown = len(admin_text(gw, "/metrics")) - before_metrics
    print(f"/metrics grew by {grown / MIB:.2f} MiB")
    assert grown < METRICS_BOUND
    for name, pid in workers(gw).items():
        assert pid == before_pids[name]
        growth = rss_bytes(pid) - before_rss[name]
        print(f"{name} grew by {growth / MIB:.1f} MiB")
        assert growth < WORKER_GROWTH_BOUND
    assert tracebacks(gw) == []

    # A restarted worker carries on from the set its predecessor filled: no new names.
    os.kill(before_pids["worker-0"], signal.SIGKILL)
    wait_for(
        lambda: workers(gw).get("worker-0") not in (None, before_pids["worker-0"]),
        what="the supervisor to restart worker-0",
    )
    wait_for(lambda: _listening(gw, "worker-0"), what="the new worker's socket")
    for _ in range(200):
        _chat(client, uuid.uuid4().hex * (MAX_MODEL_LENGTH // 32))
    wait_for(lambda: metric(gw, "ai_gateway_requests_total") >= 2001, what="the records")
    assert _label_values(gw, "gen_ai_request_model") == models


def _listening(gw: Gateway, worker: str) -> bool:
    path = str(gw.config_path.parent / "state" / f"{worker}.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


# --- low: model names that are not latin-1, too long, or hold control characters ----------


@pytest.mark.parametrize("model", ["模型", "ünïcödé 模型 🚀", "a%2F..%2Fb"])
def test_utf8_names_on_the_wildcard_route_reach_the_provider_unchanged(
    client: OpenAI, fake: FakeOpenAI, model: str
) -> None:
    answer = _chat(client, model)
    assert answer.model == model
    assert fake.requests[-1].json()["model"] == model


def test_a_utf8_named_route_and_a_utf8_body_model_under_a_named_route(
    gw: Gateway, client: OpenAI, fake: FakeOpenAI
) -> None:
    assert _chat(client, "名前").model == "upstream-名前"
    assert fake.requests[-1].json()["model"] == "upstream-名前"
    # The route comes from the header; the body's own name travels in the internal headers
    # (and is replaced by the route's: the header wins).
    _chat(client, "模型", extra_headers={"x-ai-eg-model": "m"})
    assert fake.requests[-1].json()["model"] == "m"
    assert tracebacks(gw) == []


@pytest.mark.parametrize(
    "model",
    ["m" * 200_000, "m" * (MAX_MODEL_LENGTH + 1), "a\r\nx-evil: 1", "a\nb", "nul\x00"],
    ids=["200000 chars", "one too long", "CRLF", "LF", "NUL"],
)
def test_invalid_names_are_a_400_in_openai_shape(gw: Gateway, fake: FakeOpenAI, model: str) -> None:
    seen = len(fake.requests)
    body = orjson.dumps({"model": model, "messages": HI})
    response = raw(gw.port, request_bytes("POST", CHAT, body))
    assert response.status == 400, response.body[:300]
    error = openai_error(response.body)
    assert error["code"] == "invalid_model" and error["param"] == "model"
    assert len(fake.requests) == seen
    assert tracebacks(gw) == []


# --- low: dot segments never reach a provider's path ----------------------------------------


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzure]:
    with FakeAzure() as server:
        yield server


@pytest.fixture(scope="module", params=["bedrock", "azure"])
def path_gw(
    request: pytest.FixtureRequest, bedrock: FakeBedrock, azure: FakeAzure
) -> Iterator[tuple[Gateway, FakeBedrock | FakeAzure]]:
    backend: dict[str, Any]
    fake: FakeBedrock | FakeAzure
    if request.param == "bedrock":
        fake = bedrock
        backend = {
            "schema": "aws_bedrock", "url": bedrock.url, "region": bedrock.region,
            "access_key_id": "${KEY}", "secret_access_key": "${SECRET}",
        }  # fmt: skip
    else:
        fake = azure
        backend = {"schema": "azure_openai", "url": azure.url, "api_key": "${SECRET}"}
    config = {
        "backends": {"p": backend},
        "models": [{"name": "*", "backends": [{"backend": "p"}]}],
    }
    secret = bedrock.secret_key if request.param == "bedrock" else "azure-test-key"
    env = {"KEY": bedrock.access_key, "SECRET": secret}
    with Gateway(config, env=env, workers=1) as gateway:
        yield gateway, fake


@pytest.mark.parametrize("model", [".", "..", "../../converse", "x/../y", "./x"])
def test_dot_segment_names_are_a_400_and_reach_no_provider(
    path_gw: tuple[Gateway, FakeBedrock | FakeAzure], model: str
) -> None:
    gw, fake = path_gw
    seen = len(fake.requests)
    body = orjson.dumps({"model": model, "messages": HI})
    response = raw(gw.port, request_bytes("POST", CHAT, body))
    assert response.status == 400, response.body[:300]
    assert openai_error(response.body)["code"] == "invalid_model"
    assert len(fake.requests) == seen
    assert tracebacks(gw) == []


# --- low: transfer codings Envoy's codec refuses --------------------------------------------


@pytest.mark.parametrize("coding", [b"chunked, identity", b"xchunked", b"identity, chunked"])
def test_an_unsupported_transfer_coding_is_a_client_400(gw: Gateway, coding: bytes) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n"
        b"content-type: application/json\r\ntransfer-encoding: " + coding + b"\r\n\r\n"
    )
    response = raw(gw.port, head + b"5\r\nhello\r\n0\r\n\r\n")
    assert response.status == 400, (response.status, response.body[:300])
    error = openai_error(response.body)
    assert error["type"] == "invalid_request_error"


# --- medium: a spent budget stays spent across a worker restart (memory store) ---------------


def test_a_spent_token_budget_survives_a_killed_worker(fake: FakeOpenAI) -> None:
    config = {
        "backends": {"oa": {"schema": "openai", "url": f"{fake.url}/v1"}},
        "models": [{"name": "m", "backends": [{"backend": "oa"}]}],
        "limits": [{"tokens": 10, "per": "day"}],
        "ratelimit_store": "memory",
    }
    with Gateway(config, workers=1) as gw:
        client = OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        for _ in range(20):
            try:
                _chat(client, "m")
            except openai.RateLimitError:
                break
        else:
            pytest.fail("the budget was never spent")
        time.sleep(1.0)  # more than the memory store's save interval (limitstore.py)
        pid = workers(gw)["worker-0"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: workers(gw).get("worker-0") not in (None, pid), what="the restart")
        wait_for(lambda: _listening(gw, "worker-0"), what="the new worker's socket")
        with pytest.raises(openai.RateLimitError) as caught:
            _chat(client, "m")
        assert caught.value.code == "rate_limit_exceeded"


# --- what a client sends that is for someone else -----------------------------------------------

FOREIGN = {
    "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
    "Cookie": "session=victim",
    "x-goog-api-key": "AIza-client",
    "x-amz-security-token": "client-token",
    "x-amz-target": "Bedrock.Converse",
    "OpenAI-Organization": "org-someone-else",
    "OpenAI-Project": "proj-someone-else",
    "x-ai-eg-backend": "oa2",
    "x-ai-eg-attempts": "9",
    "x-ai-eg-cost-usd": "0",
}


@pytest.mark.parametrize("model", ["m", "any-model"], ids=["one backend", "two backends"])
def test_credentials_and_state_of_others_never_reach_a_provider(
    client: OpenAI, fake: FakeOpenAI, model: str
) -> None:
    answer = client.chat.completions.create(
        model=model,
        messages=HI,
        extra_headers=FOREIGN,
        extra_query={"api-key": "x", "api-version": "2020-01-01", "trace": "1"},
    )
    assert answer.choices[0].message.content == "Echo: hi"
    seen = fake.requests[-1]
    leaked = {k for k in seen.headers if k in {f.lower() for f in FOREIGN}}
    assert not leaked and not [k for k in seen.headers if k.startswith("x-amz-")]
    assert seen.query == {} and "?" not in seen.raw_path
