"""Secrets, TLS, bind addresses and internal headers, through real Envoy + sidecar.

- Every configured credential (OpenAI, Azure and Anthropic keys, an Entra client secret and
  the tokens it buys, AWS keys and session token, a gateway key) is absent from every log line, metric,
  span, error body, response header, rendered file, command line and Envoy's environment of a
  full run that uses them all, successes and failures alike (sidecar at debug level).
- Upstream TLS is verified by default (unknown CA, wrong name: refused); the admin port and the
  sidecar listen on loopback by default.
- Client-supplied internal headers (``x-ai-eg-*`` but ``x-ai-eg-model``, Envoy's ``x-envoy-*``)
  change nothing: not the route, the credential, the limits or the accounting.

The tests run in file order: the last one scans what all the others produced.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest
import trustme

from extproc.clients import hash_key
from extproc.config import GatewayConfig, parse_config
from extproc.render import render, sidecar_addresses
from tests.fakes.anthropic import OVERLOADED, FakeAnthropic
from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import THROTTLE, FakeBedrock
from tests.fakes.openai import FakeOpenAI
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway
from tests.integration.probes import admin_text, children, envoy_pid, gateway_pid, wait_for

OPENAI_KEY = "sk-canary-openai-5d1e0c"
AZURE_KEY = "canary-azure-key-77ab"
ENTRA_SECRET = "canary-entra-secret-f00d"
WRONG_ENTRA_SECRET = "canary-wrong-entra-secret-9c9c"
AWS_KEY_ID = "AKIACANARY0000000001"
AWS_SECRET = "canary/aws+secret/key0123456789abcdef0"
AWS_TOKEN = "canary-aws-session-token-4242"
ANTHROPIC_KEY = "sk-ant-canary-anthropic-6b6b"
GATEWAY_KEY = "canary-gateway-key-3e3e3e3e3e3e3e"
WRONG_GATEWAY_KEY = "canary-wrong-gateway-key-5151"
SECRETS = [
    OPENAI_KEY,
    AZURE_KEY,
    ENTRA_SECRET,
    WRONG_ENTRA_SECRET,
    AWS_KEY_ID,
    AWS_SECRET,
    AWS_TOKEN,
    ANTHROPIC_KEY,
    GATEWAY_KEY,
    WRONG_GATEWAY_KEY,
    "fake-entra-token-",  # every bearer token the fake Entra ID issues
]
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-embed-text-v2:0"
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}

# Everything a client or an operator saw, for the final scan: (where, text).
SEEN: list[tuple[str, str]] = []


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def fakes(tls_ca: trustme.CA) -> Iterator[dict[str, Any]]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost").configure_cert(server_ctx)
    with (
        FakeOpenAI(api_key=OPENAI_KEY) as openai,
        FakeOpenAI(ssl_context=server_ctx) as tls,
        FakeAzure(api_key=AZURE_KEY, client_secret=ENTRA_SECRET) as azure,
        FakeBedrock(access_key=AWS_KEY_ID, secret_key=AWS_SECRET, session_token=AWS_TOKEN) as br,
        FakeAnthropic(api_key=ANTHROPIC_KEY) as anthropic,
        OTLPReceiver() as otlp,
    ):
        yield {
            "openai": openai,
            "tls": tls,
            "azure": azure,
            "bedrock": br,
            "anthropic": anthropic,
            "otlp": otlp,
        }


@pytest.fixture(scope="module")
def gw(fakes: dict[str, Any], ca_file: str) -> Iterator[Gateway]:
    openai, tls, azure, bedrock = fakes["openai"], fakes["tls"], fakes["azure"], fakes["bedrock"]

    def entra(secret: str) -> dict[str, Any]:
        return {
            "schema": "azure_openai",
            "url": azure.url,
            "entra": {
                "tenant_id": azure.tenant_id,
                "client_id": azure.client_id,
                "client_secret": secret,
                "authority": azure.authority,
            },
        }

    config = {
        "backends": {
            "oa": {"schema": "openai", "url": f"{openai.url}/v1", "api_key": "${OPENAI_KEY}"},
            "az": {"schema": "azure_openai", "url": azure.url, "api_key": "${AZURE_KEY}"},
            "az-entra": entra("${ENTRA_SECRET}"),
            "az-bad-entra": entra("${WRONG_ENTRA_SECRET}"),
            "br": {
                "schema": "aws_bedrock",
                "url": bedrock.url,
                "region": bedrock.region,
                "access_key_id": "${AWS_KEY_ID_CANARY}",
                "secret_access_key": "${AWS_SECRET_CANARY}",
                "session_token": "${AWS_TOKEN_CANARY}",
            },
            "an": {"schema": "anthropic", "url": fakes["anthropic"].url, "api_key": "${AN_KEY}"},
            "tls-trusted": {
                "schema": "openai",
                "url": f"https://localhost:{tls.port}/v1",
                "tls": {"ca_file": ca_file},
            },
            "tls-unknown-ca": {"schema": "openai", "url": f"https://localhost:{tls.port}/v1"},
            "tls-wrong-name": {
                "schema": "openai",
                "url": f"https://127.0.0.1:{tls.port}/v1",
                "tls": {"ca_file": ca_file},
            },
        },
        "models": [
            {"name": "m", "backends": [{"backend": "oa"}], "retry": {"attempts": 1}},
            {"name": "victim", "backends": [{"backend": "oa"}]},
            {"name": "az", "backends": [{"backend": "az", "model": "dep"}]},
            {"name": "az-entra", "backends": [{"backend": "az-entra", "model": "dep"}]},
            {"name": "az-bad", "backends": [{"backend": "az-bad-entra", "model": "dep"}]},
            {"name": "claude", "backends": [{"backend": "br", "model": CLAUDE}]},
            {"name": "titan", "backends": [{"backend": "br", "model": TITAN}]},
            {"name": "sonnet", "backends": [{"backend": "an", "model": "claude-sonnet-4-5"}]},
            {"name": "tls-trusted", "backends": [{"backend": "tls-trusted"}]},
            {"name": "tls-unknown-ca", "backends": [{"backend": "tls-unknown-ca"}]},
            {"name": "tls-wrong-name", "backends": [{"backend": "tls-wrong-name"}]},
        ],
        "clients": [
            {"name": "team", "key_sha256": hash_key(GATEWAY_KEY)},
        ],
        "limits": [{"match": {"header": {"x-tenant-id": "*"}}, "tokens": 12, "per": "hour"}],
        "telemetry": {"header_attributes": {"x-tenant-id": "tenant"}},
    }
    env = {
        "OPENAI_KEY": OPENAI_KEY,
        "AZURE_KEY": AZURE_KEY,
        "ENTRA_SECRET": ENTRA_SECRET,
        "WRONG_ENTRA_SECRET": WRONG_ENTRA_SECRET,
        "AWS_KEY_ID_CANARY": AWS_KEY_ID,
        "AWS_SECRET_CANARY": AWS_SECRET,
        "AWS_TOKEN_CANARY": AWS_TOKEN,
        "AN_KEY": ANTHROPIC_KEY,
        **fakes["otlp"].env(),
    }
    # The sidecar at debug level and Envoy at info level: the most log lines a production
    # setting could produce.
    gateway = Gateway(config, env=env, log_level="debug", envoy_log_level="info")
    with gateway:
        yield gateway
    # What the processes printed while stopping is scanned too.
    _assert_no_secret([("shutdown output", "".join(gateway.output))])


def call(
    gw: Gateway,
    body: dict[str, Any] | bytes,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> httpx2.Response:
    """A request whose whole answer (status line, headers, body) joins the final scan."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = httpx2.request(
        method,
        f"{gw.url}{path}",
        content=content if method == "POST" else None,
        headers={"content-type": "application/json", **AUTH, **(headers or {})},
        timeout=15,
    )
    shown = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    SEEN.append((f"{method} {path} -> {response.status_code}", f"{shown}\n\n{response.text}"))
    return response


def chat(model: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


# --- TLS and bind addresses ---------------------------------------------------------------------


def test_upstream_tls_is_verified_by_default(gw: Gateway, fakes: dict[str, Any]) -> None:
    tls: FakeOpenAI = fakes["tls"]
    assert call(gw, chat("tls-trusted")).status_code == 200
    before = len(tls.requests)
    for model in ("tls-unknown-ca", "tls-wrong-name"):
        response = call(gw, chat(model))
        assert response.status_code == 503, (model, response.text)
        assert response.json()["error"]["code"] == "upstream_unavailable"
    assert len(tls.requests) == before  # the handshake failed: no request reached it


def test_rendered_tls_always_verifies_certificate_and_name() -> None:
    config = parse_config(
        {
            "backends": {
                "a": {"schema": "openai", "url": "https://api.example.com/v1"},
                "b": {"schema": "openai", "url": "https://10.0.0.1:8443/v1", "tls": {"sni": "x"}},
            },
            "models": [{"name": "m", "backends": [{"backend": "a"}, {"backend": "b"}]}],
        },
        {},
    )
    (cluster,) = [
        c for c in render(config)["static_resources"]["clusters"] if "model_" in c["name"]
    ]
    matches = cluster["transport_socket_matches"]
    assert len(matches) == 2
    for match in matches:
        context = match["transport_socket"]["typed_config"]
        validation = context["common_tls_context"]["validation_context"]
        assert validation["trusted_ca"]["filename"]
        names = [m["matcher"]["exact"] for m in validation["match_typed_subject_alt_names"]]
        assert context["sni"] in names


def test_admin_and_sidecar_bind_to_loopback_by_default() -> None:
    config = GatewayConfig()
    assert config.listen.host == config.admin.host == config.sidecar.host == "127.0.0.1"
    assert sidecar_addresses(config) == [
        f"127.0.0.1:{1063 + i}" for i in range(config.worker_count())
    ]
    rendered = render(config)
    admin = next(
        listener
        for listener in rendered["static_resources"]["listeners"]
        if listener["name"] == "ai_gateway_admin"
    )
    assert admin["address"]["socket_address"]["address"] == "127.0.0.1"
    # Envoy's full admin interface (which can change state) is never on TCP.
    assert set(rendered["admin"]["address"]) == {"pipe"}


def _listening_tcp(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket the processes hold."""
    inodes = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    address, port = fields[1].split(":")
                    found.append((address, int(port, 16)))
    return found


def test_running_gateway_listens_on_loopback_only(gw: Gateway) -> None:
    pids = [gateway_pid(gw), *children(gateway_pid(gw))]
    listening = _listening_tcp(pids)
    assert {port for _, port in listening} >= {gw.port, gw.admin_port}
    # 0100007F is 127.0.0.1 as /proc/net/tcp writes it; no wildcard, no IPv6.
    assert all(address == "0100007F" for address, _ in listening), listening


# --- internal headers -----------------------------------------------------------------------------

INTERNAL = {
    "x-ai-eg-body-model": "gpt-evil",
    "x-ai-eg-path": "/v1/embeddings?api-version=evil",
    "x-ai-eg-content-length": "3",
    "x-ai-eg-stream": "usage",
    "x-ai-eg-ratelimit": "aigw:rl:tokens:hour:deadbeef",
    "x-envoy-upstream-rq-timeout-ms": "1",
    "x-envoy-max-retries": "5",
    "x-envoy-retry-on": "5xx,reset",
    "x-envoy-internal": "true",
}


def _sent(fake: FakeOpenAI) -> tuple[str, bytes, dict[str, str]]:
    seen = fake.requests[-1]
    keep = {k: v for k, v in seen.headers.items() if k.startswith("x-ai-eg-") or k in AUTH}
    keep["authorization"] = seen.headers.get("authorization", "")
    return seen.raw_path, seen.body, keep


@pytest.mark.parametrize("stream", [False, True])
def test_client_internal_headers_change_nothing_upstream(
    gw: Gateway, fakes: dict[str, Any], stream: bool
) -> None:
    openai: FakeOpenAI = fakes["openai"]
    body = chat("m", "same request", stream=stream)
    clean = call(gw, body)
    baseline = _sent(openai)
    spoofed = call(gw, body, headers=INTERNAL)
    assert spoofed.status_code == clean.status_code == 200
    assert spoofed.content == clean.content
    assert _sent(openai) == baseline
    assert baseline[2]["authorization"] == f"Bearer {OPENAI_KEY}"


def test_client_cannot_make_envoy_retry_or_time_out(gw: Gateway, fakes: dict[str, Any]) -> None:
    openai: FakeOpenAI = fakes["openai"]
    before = len(openai.requests)
    openai.fail_next(500, path="/v1/chat/completions")
    response = call(gw, chat("m"), headers=INTERNAL)  # asks for 5 retries on 5xx
    assert response.status_code == 500
    assert len(openai.requests) == before + 1  # the model's policy: one attempt
    assert call(gw, chat("m"), headers=INTERNAL).status_code == 200  # a 1 ms timeout ignored


def _tokens_bucket(tenant: str) -> str:
    """The id of a tenant's tokens bucket, as extproc/limits.py documents it: an attacker who
    knows the scheme knows the victim's."""
    values = {"header": {"x-tenant-id": tenant}}
    digest = hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"tokens:hour:{digest[:32]}"


def test_client_cannot_debit_another_tenants_bucket(gw: Gateway, fakes: dict[str, Any]) -> None:
    openai: FakeOpenAI = fakes["openai"]
    # 3 tokens per request against a 12-token bucket per tenant.
    assert call(gw, chat("victim"), headers={"x-tenant-id": "victim"}).status_code == 200
    spoof = {"x-tenant-id": "attacker", "x-ai-eg-ratelimit": _tokens_bucket("victim")}
    statuses = [call(gw, chat("victim"), headers=spoof).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[-1] == 429  # the attacker's own bucket
    # No bucket name (the router's own or the client's) reaches the provider.
    assert not [h for h in openai.requests[-1].headers if h.startswith("x-ai-eg-")]
    # The victim's bucket holds its own 3 tokens only.
    assert call(gw, chat("victim"), headers={"x-tenant-id": "victim"}).status_code == 200


def test_model_header_is_the_one_the_client_may_choose(gw: Gateway, fakes: dict[str, Any]) -> None:
    response = call(gw, chat("m"), headers={"x-ai-eg-model": "az"})
    assert response.status_code == 200
    assert fakes["azure"].requests[-1].path == "/openai/deployments/dep/chat/completions"
    response = call(gw, chat("m"), headers={"x-ai-eg-model": "nope"})
    assert response.status_code == 404


def _span_attempts(otlp: OTLPReceiver, tenant: str) -> list[Any]:
    return [
        s["attributes"].get("ai_gateway.attempt")
        for s in otlp.spans
        if s["attributes"].get("tenant") == tenant
    ]


def test_client_cannot_set_the_recorded_attempt(gw: Gateway, fakes: dict[str, Any]) -> None:
    otlp: OTLPReceiver = fakes["otlp"]
    headers = {"x-envoy-attempt-count": "9", "x-tenant-id": "attempts"}
    assert call(gw, chat("m"), headers=headers).status_code == 200
    wait_for(lambda: bool(_span_attempts(otlp, "attempts")), what="the span")
    assert _span_attempts(otlp, "attempts") == [1]


def test_client_cannot_forge_the_logged_path(gw: Gateway) -> None:
    marker = "/forged-by-client"
    assert call(gw, chat("m"), headers={"x-envoy-original-path": marker}).status_code == 200
    time.sleep(1.0)  # the access log is flushed every 0.5 s
    assert not any(entry.get("path") == marker for entry in gw.access_log())


# --- a full run's worth of traffic, then the scan -------------------------------------------------


def test_traffic_of_every_kind(gw: Gateway, fakes: dict[str, Any]) -> None:
    """Successes and failures across every provider and credential kind, for the scan."""
    openai: FakeOpenAI = fakes["openai"]
    for model in ("m", "az", "az-entra", "claude", "sonnet"):
        assert call(gw, chat(model, "hello")).status_code == 200, model
        stream = call(gw, chat(model, "hello", stream=True))
        assert stream.status_code == 200 and "[DONE]" in stream.text, model
    assert call(gw, {"model": "m", "input": ["a", "b"]}, "/v1/embeddings").status_code == 200
    assert call(gw, {"model": "titan", "input": ["a", "b"]}, "/v1/embeddings").status_code == 200
    assert call(gw, b"", "/v1/models", method="GET").status_code == 200
    # Every other API, on every backend that serves it.
    for model in ("m", "az", "claude"):
        answer = call(gw, {"model": model, "input": "hello"}, "/v1/responses")
        assert answer.status_code == 200, model
        stream = call(gw, {"model": model, "input": "hello", "stream": True}, "/v1/responses")
        assert stream.status_code == 200 and "response.completed" in stream.text, model
    stored = call(gw, {"model": "m", "input": "keep"}, "/v1/responses").json()["id"]
    named = {"x-ai-eg-model": "m"}
    got = call(gw, b"", f"/v1/responses/{stored}", named, "GET")
    assert got.status_code == 200, got.text
    for model in ("m", "az"):
        assert call(gw, {"model": model, "prompt": "hi"}, "/v1/completions").status_code == 200
    asked = {"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}
    assert call(gw, {**asked, "max_tokens": 16}, "/v1/messages").status_code == 200
    assert call(gw, asked, "/v1/messages/count_tokens").status_code == 200
    failures = {
        "no key": call(gw, chat("m"), headers={"authorization": ""}).status_code,
        "wrong key": call(
            gw, chat("m"), headers={"authorization": f"Bearer {WRONG_GATEWAY_KEY}"}
        ).status_code,
        "wrong api-key": call(
            gw, chat("m"), headers={"authorization": "", "api-key": WRONG_GATEWAY_KEY}
        ).status_code,
        "entra refused": call(gw, chat("az-bad")).status_code,
        "bedrock throttled": call(gw, chat("claude", THROTTLE)).status_code,
        "anthropic overloaded": call(gw, chat("sonnet", OVERLOADED)).status_code,
        "unknown model": call(gw, chat("nope")).status_code,
        "malformed": call(gw, b'{"model": ').status_code,
    }
    openai.fail_next(401, path="/v1/chat/completions")
    failures["provider 401"] = call(gw, chat("m")).status_code
    assert failures == {
        "no key": 401,
        "wrong key": 401,
        "wrong api-key": 401,
        "entra refused": 502,
        "bedrock throttled": 429,
        "anthropic overloaded": 503,
        "unknown model": 404,
        "malformed": 400,
        "provider 401": 401,
    }


def _assert_no_secret(places: list[tuple[str, str]]) -> None:
    forms = {}
    for secret in SECRETS:
        forms[secret] = secret
        forms[urllib.parse.quote(secret, safe="")] = secret
        forms[base64.b64encode(secret.encode()).decode().rstrip("=")] = secret
    leaks = [
        (where, secret) for where, text in places for form, secret in forms.items() if form in text
    ]
    assert not leaks, leaks


def test_no_secret_anywhere(gw: Gateway, fakes: dict[str, Any]) -> None:
    otlp: OTLPReceiver = fakes["otlp"]
    # The Entra token fetches happened and the tokens are real canaries.
    assert fakes["azure"].token_fetches >= 1
    wait_for(lambda: len(otlp.spans) >= 10, what="spans")
    time.sleep(1.0)  # one more export interval and access-log flush
    places = list(SEEN)
    places.append(("gateway output", "".join(gw.output)))
    for path in ("/metrics", "/stats", "/stats/prometheus", "/server_info", "/ready"):
        places.append((f"admin {path}", admin_text(gw, path)))
    places.append(("otlp metrics", repr(otlp.points("ai_gateway.requests"))))
    places.append(("otlp token metrics", repr(otlp.points("gen_ai.client.token.usage"))))
    places.append(("otlp spans", repr(otlp.spans)))
    for file in sorted((gw.config_path.parent / "state").iterdir()):
        if file.is_file():
            places.append((str(file), file.read_text(errors="replace")))
    for pid, cmdline in children(gateway_pid(gw)).items():
        places.append((f"command line of {pid}", cmdline))
    with open(f"/proc/{envoy_pid(gw)}/environ", "rb") as f:
        places.append(("envoy's environment", f.read().decode(errors="replace")))
    assert len(places) > 40
    _assert_no_secret(places)


def test_sidecar_workers_keep_their_credentials(gw: Gateway) -> None:
    """The other side of the environment check: the workers need the variables."""
    worker = next(pid for pid, cmd in children(gateway_pid(gw)).items() if " worker " in cmd)
    with open(f"/proc/{worker}/environ", "rb") as f:
        assert OPENAI_KEY.encode() in f.read()
