"""OpenAI-compatible pass-through, end to end: the official SDK -> Envoy -> sidecar -> fakes."""

from __future__ import annotations

import base64
import ssl
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import openai
import orjson
import pytest
import trustme
from openai import OpenAI

from tests.fakes.faulty import FaultyUpstream
from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway, free_port
from tests.integration.probes import metric, wait_for

UPSTREAM_KEY = "sk-upstream-canary-7f3a"
CLIENT_KEY = "sk-client-canary-91bd"


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def plain() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(prefix="/v1", api_key=UPSTREAM_KEY, chunk_delay=0.15) as fake:
        yield fake


@pytest.fixture(scope="module")
def secure(tls_ca: trustme.CA) -> Iterator[FakeOpenAI]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost").configure_cert(server_ctx)
    # Rude as some servers are: its streams end their lines in CR LF.
    with FakeOpenAI(prefix="/openai/v1", ssl_context=server_ctx, crlf=True) as fake:
        yield fake


@pytest.fixture(scope="module")
def stall() -> Iterator[FaultyUpstream]:
    with FaultyUpstream("stall") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(
    plain: FakeOpenAI,
    secure: FakeOpenAI,
    stall: FaultyUpstream,
    tls_ca: trustme.CA,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    config = {
        "backends": {
            "plain": {"schema": "openai", "url": f"{plain.url}/v1", "api_key": "${UPSTREAM_KEY}"},
            "secure": {
                "schema": "openai",
                "url": f"https://localhost:{secure.port}/openai/v1",
                "tls": {"ca_file": str(ca_file)},
            },
            "down": {"schema": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"},
            "slow": {"schema": "openai", "url": f"{stall.url}/v1"},
            "router": {
                "schema": "openai",
                "url": f"{plain.url}/v1",
                "api_key": "${UPSTREAM_KEY}",
                "headers": {"HTTP-Referer": "https://example.com", "X-Title": "tests"},
                "query": {"api-version": "7"},
            },
        },
        "models": [
            {"name": "gpt-4o-mini", "owned_by": "openai", "backends": [{"backend": "plain"}]},
            {"name": "secure-model", "backends": [{"backend": "secure", "model": "llama-3.1-8b"}]},
            {"name": "text-embedding-3-small", "backends": [{"backend": "plain"}]},
            {"name": "unreachable", "backends": [{"backend": "down"}], "retry": {"attempts": 1}},
            {
                "name": "too-slow",
                "backends": [{"backend": "slow"}],
                "timeout": "1s",
                "retry": {"attempts": 1},
            },
            {"name": "routed", "backends": [{"backend": "router", "model": "vendor/model"}]},
        ],
        "http": {"max_request_bytes": 65536},
    }
    with Gateway(config, env={"UPSTREAM_KEY": UPSTREAM_KEY}) as gw:
        yield gw


@pytest.fixture
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def test_chat_non_streaming(client: OpenAI, plain: FakeOpenAI) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert reply.choices[0].message.content == "Echo: hello there"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    seen = plain.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in str(seen.headers)


def test_client_credentials_never_reach_the_provider(client: OpenAI, plain: FakeOpenAI) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"api-key": CLIENT_KEY, "x-api-key": CLIENT_KEY},
    )
    assert CLIENT_KEY not in str(plain.requests[-1].headers)


def test_streaming_chunks_arrive_incrementally(client: OpenAI) -> None:
    words = "one two three four five six"
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": words}], stream=True
    )
    arrivals: list[float] = []
    text = ""
    for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text == f"Echo: {words}"
    # The fake sleeps 0.15 s between its 7+ events: a gateway that buffered the stream would
    # deliver them together, so the spread between first and last arrival would vanish.
    assert len(arrivals) >= 7
    assert arrivals[-1] - arrivals[0] > 0.5


def test_streaming_usage_passes_through(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "count me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_with_crlf_lines_is_read_and_its_usage_hidden_unless_asked(
    client: OpenAI, gateway: Gateway, include_usage: bool
) -> None:
    before = metric(gateway, "gen_ai_client_token_usage_count", gen_ai_request_model="secure-model")
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = client.chat.completions.create(
        model="secure-model",
        messages=[{"role": "user", "content": "lines end in cr lf"}],
        stream=True,
        **options,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: lines end in cr lf"
    assert (chunks[-1].usage is not None) is include_usage
    assert all(c.usage is None for c in chunks[:-1])
    wait_for(
        lambda: (
            metric(gateway, "gen_ai_client_token_usage_count", gen_ai_request_model="secure-model")
            > before
        ),
        what="the stream's usage recorded",
    )


def test_tools_and_json_schema_pass_through_untouched(client: OpenAI, plain: FakeOpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city"],
                },
            },
        }
    ]
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=tools,
        tool_choice="auto",
    )
    call = reply.choices[0].message.tool_calls
    assert call and call[0].function.name == "get_weather"
    sent = plain.requests[-1].json()
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": schema, "strict": True},
    }
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "a person"}],
        response_format=response_format,
    )
    assert set(orjson.loads(reply.choices[0].message.content or "")) == {"name", "age"}
    assert plain.requests[-1].json()["response_format"] == response_format


def test_body_forwarded_byte_for_byte_without_model_override(
    client: OpenAI, plain: FakeOpenAI
) -> None:
    raw = b'{"model": "gpt-4o-mini",  "messages": [{"role": "user", "content": "x"}], "temperature": 0.50}'
    client.post(
        "/chat/completions",
        content=raw,
        cast_to=object,
        options={"headers": {"content-type": "application/json"}},
    )
    assert plain.requests[-1].body == raw


def test_tls_upstream_with_private_ca_and_model_override(
    client: OpenAI, secure: FakeOpenAI
) -> None:
    reply = client.chat.completions.create(
        model="secure-model", messages=[{"role": "user", "content": "over tls"}]
    )
    assert reply.choices[0].message.content == "Echo: over tls"
    seen = secure.requests[-1]
    assert seen.path == "/openai/v1/chat/completions"
    assert seen.json()["model"] == "llama-3.1-8b"
    assert seen.headers["host"] == f"localhost:{secure.port}"
    assert "authorization" not in seen.headers


def test_embeddings_float_and_base64(client: OpenAI, plain: FakeOpenAI) -> None:
    as_float = client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    assert len(as_float.data) == 2 and isinstance(as_float.data[0].embedding[0], float)
    raw = client.post(
        "/embeddings",
        body={"model": "text-embedding-3-small", "input": "a", "encoding_format": "base64"},
        cast_to=object,
    )
    encoded = raw["data"][0]["embedding"]
    floats = struct.unpack(f"<{len(base64.b64decode(encoded)) // 4}f", base64.b64decode(encoded))
    assert list(floats) == pytest.approx(as_float.data[0].embedding, abs=1e-6)
    # The SDK's default asks for base64 and decodes it.
    default = client.embeddings.create(model="text-embedding-3-small", input="a")
    assert default.data[0].embedding == pytest.approx(as_float.data[0].embedding, abs=1e-6)
    assert plain.requests[-1].json()["encoding_format"] == "base64"


def test_provider_profile_headers_and_query(client: OpenAI, plain: FakeOpenAI) -> None:
    client.chat.completions.create(
        model="routed", messages=[{"role": "user", "content": "hi"}], extra_query={"trace": "1"}
    )
    seen = plain.requests[-1]
    assert (
        seen.headers["http-referer"] == "https://example.com" and seen.headers["x-title"] == "tests"
    )
    # The backend's own query only: the client's reaches no provider (no endpoint defines one).
    assert seen.query == {"api-version": "7"}
    assert seen.json()["model"] == "vendor/model"


def test_models_list(client: OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {
        "gpt-4o-mini",
        "secure-model",
        "text-embedding-3-small",
        "unreachable",
        "too-slow",
        "routed",
    }
    assert models["gpt-4o-mini"].owned_by == "openai"
    assert client.models.retrieve("secure-model").id == "secure-model"


def test_header_model_overrides_body(client: OpenAI, secure: FakeOpenAI) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "routed by header"}],
        extra_headers={"x-ai-eg-model": "secure-model"},
    )
    seen = secure.requests[-1]
    assert seen.json()["model"] == "llama-3.1-8b"
    assert seen.json()["messages"][0]["content"] == "routed by header"


@pytest.mark.parametrize(
    ("call", "exc", "status", "fragment"),
    [
        (lambda c: c.post("/chat/completions", content=b"{nope", cast_to=object), openai.BadRequestError, 400, "not valid JSON"),
        (lambda c: c.post("/chat/completions", body=[1, 2], cast_to=object), openai.BadRequestError, 400, "JSON object"),
        (lambda c: c.post("/chat/completions", body={"messages": []}, cast_to=object), openai.BadRequestError, 400, "model parameter"),
        (lambda c: c.chat.completions.create(model="gpt-5-imaginary", messages=[]), openai.NotFoundError, 404, "gpt-5-imaginary"),
        (lambda c: c.get("/chat/completions", cast_to=object), openai.APIStatusError, 405, "not allowed"),
        (lambda c: c.post("/images/variations", body={"model": "dall-e-2"}, cast_to=object), openai.NotFoundError, 404, "/v1/images/variations"),  # generations: served
        (lambda c: c.files.list(), openai.NotFoundError, 404, "/v1/files"),
        (lambda c: c.moderations.create(input="x"), openai.NotFoundError, 404, "/v1/moderations"),
        (lambda c: c.post("/chat/completions", body={"model": "gpt-4o-mini", "pad": "x" * 70000}, cast_to=object), openai.APIStatusError, 413, "larger than"),
        (lambda c: c.chat.completions.create(model="unreachable", messages=[]), openai.InternalServerError, 503, "unreachable"),
        (lambda c: c.chat.completions.create(model="too-slow", messages=[]), openai.InternalServerError, 504, "too-slow"),
    ],
)  # fmt: skip
def test_errors_are_openai_shaped(
    client: OpenAI,
    call: Callable[[OpenAI], object],
    exc: type[openai.APIStatusError],
    status: int,
    fragment: str,
) -> None:
    with pytest.raises(exc) as info:
        call(client)
    err = info.value
    assert err.status_code == status
    body = err.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert fragment in body["error"]["message"]
    assert err.response.headers["content-type"].startswith("application/json")


def test_access_log_names_the_backend(client: OpenAI, gateway: Gateway) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "log me"}]
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [
            e
            for e in gateway.access_log()
            if e.get("model") == "gpt-4o-mini" and e["status"] == 200
        ]
        if lines:
            assert lines[-1]["backend"] == "plain" and lines[-1]["attempts"] == 1
            return
        time.sleep(0.1)
    pytest.fail("no access log line for the request")


def test_secrets_absent_from_gateway_output(gateway: Gateway) -> None:
    assert UPSTREAM_KEY not in "".join(gateway.output)


def test_admin_port_is_read_only(gateway: Gateway) -> None:
    with urllib.request.urlopen(f"{gateway.admin_url}/ready", timeout=5) as ready:
        assert ready.status == 200
    with urllib.request.urlopen(f"{gateway.admin_url}/stats/prometheus", timeout=5) as stats:
        assert b"envoy_" in stats.read()
    request = urllib.request.Request(f"{gateway.admin_url}/quitquitquit", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 404
