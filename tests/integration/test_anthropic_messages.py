"""POST /v1/messages through real Envoy + sidecar: the official Anthropic SDK against the fake
Anthropic, the body and answer passed through (streams unbuffered), every attempt accounted."""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest
from anthropic import Anthropic

from extproc.clients import hash_key
from tests.fakes.anthropic import CACHE_READ, CACHED, OVERLOADED, STREAM_ERROR, FakeAnthropic
from tests.fakes.openai import FakeOpenAI, count_tokens
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway, free_port

SONNET = "claude-sonnet-4-5"
CLIENT_KEY = "gw-key-anthropic-sdk"
LIMITED_KEY = "gw-key-anthropic-limited"
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAnthropic, FakeOpenAI]]:
    with FakeAnthropic() as claude, FakeOpenAI() as openai:
        yield claude, openai


@pytest.fixture(scope="module")
def gateway(fakes: tuple[FakeAnthropic, FakeOpenAI], otlp: OTLPReceiver) -> Iterator[Gateway]:
    claude, openai = fakes
    one = {"retry": {"attempts": 1}}
    config = {
        "backends": {
            "anthropic": {**claude.backend(), "api_key": "${AN_KEY}"},
            "wrong-key": {**claude.backend(), "api_key": "${AN_WRONG_KEY}"},
            "openai": {"schema": "openai", "url": f"{openai.url}/v1"},
            "down": {
                **claude.backend(),
                "url": f"http://127.0.0.1:{free_port()}",
                "api_key": "${AN_KEY}",
            },
        },
        "models": [
            {"name": "claude", "backends": [{"backend": "anthropic", "model": SONNET}], **one},
            {"name": SONNET, "backends": [{"backend": "anthropic"}], **one},
            {"name": "wrong-key", "backends": [{"backend": "wrong-key", "model": SONNET}], **one},
            {"name": "gpt", "backends": [{"backend": "openai"}], **one},
            {"name": "down", "backends": [{"backend": "down", "model": SONNET}], **one},
        ],
        # The SDK sends its key as x-api-key: a gateway key there is checked like any other.
        "clients": [
            {"name": "sdk", "key_sha256": hash_key(CLIENT_KEY)},
            {"name": "limited", "key_sha256": hash_key(LIMITED_KEY)},
        ],
        "limits": [{"match": {"client": "limited"}, "requests": 1, "per": "day"}],
    }
    env = {"AN_KEY": claude.api_key, "AN_WRONG_KEY": "sk-ant-wrong", **otlp.env(100)}
    with Gateway(config, env=env) as gw:
        yield gw


@pytest.fixture
def client(gateway: Gateway) -> Anthropic:
    return Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)


def _record(otlp: OTLPReceiver, trace_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = [s for s in list(otlp.spans) if s["trace_id"] == trace_id]
        if spans:
            time.sleep(0.3)  # a second record would arrive with the first
            spans = [s for s in list(otlp.spans) if s["trace_id"] == trace_id]
            assert len(spans) == 1, spans
            return dict(spans[0]["attributes"])
        time.sleep(0.1)
    pytest.fail("no record of the request arrived")


def test_messages_create_passes_through_and_is_accounted(
    client: Anthropic, fakes: tuple[FakeAnthropic, FakeOpenAI], otlp: OTLPReceiver
) -> None:
    claude, _ = fakes
    trace_id = os.urandom(16).hex()
    traced = client.with_options(
        default_headers={"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"}
    )
    reply = traced.messages.create(
        model="claude",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": f"hello {CACHED}"}],
    )
    assert reply.content[0].type == "text" and reply.content[0].text == f"You said: hello {CACHED}"
    assert reply.model == SONNET and reply.stop_reason == "end_turn"
    seen = claude.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == claude.api_key  # the backend's, not the client's
    assert CLIENT_KEY not in str(seen.headers)
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers
    body = seen.json()
    assert body["model"] == SONNET and body["system"] == "Be brief."
    record = _record(otlp, trace_id)
    assert record["gen_ai.operation.name"] == "messages"
    assert record["gen_ai.provider.name"] == "anthropic"
    assert record["ai_gateway.usage_source"] == "provider"
    assert record["gen_ai.usage.cached_input_tokens"] == CACHE_READ
    assert record["gen_ai.usage.output_tokens"] == reply.usage.output_tokens


def test_messages_stream(client: Anthropic) -> None:
    with client.messages.stream(
        model=SONNET, max_tokens=100, messages=[{"role": "user", "content": "tell me"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "You said: tell me"
    assert final.usage.output_tokens == count_tokens(text)
    assert final.stop_reason == "end_turn"


def test_tool_use_over_two_turns(client: Anthropic) -> None:
    messages: Any = [{"role": "user", "content": "Weather in Paris? [[tool]]"}]
    first = client.messages.create(
        model="claude", max_tokens=100, tools=[WEATHER], messages=messages
    )
    assert first.stop_reason == "tool_use"
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "fake"}
    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C"}],
        },
    ]
    second = client.messages.create(
        model="claude", max_tokens=100, tools=[WEATHER], messages=messages
    )
    assert second.content[0].type == "text" and second.content[0].text == "Tool said: 18 C"


def test_anthropic_errors_reach_the_client_as_anthropic_sent_them(client: Anthropic) -> None:
    with pytest.raises(anthropic.AuthenticationError) as auth:
        client.messages.create(
            model="wrong-key", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert auth.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        client.messages.create(
            model="claude", max_tokens=10, messages=[{"role": "user", "content": OVERLOADED}]
        )
    assert overloaded.value.status_code == 529
    with pytest.raises(anthropic.BadRequestError) as invalid:
        client.messages.create(
            model="claude", max_tokens=10, messages=[{"role": "assistant", "content": "x"}]
        )
    assert "first message" in invalid.value.message


def test_an_error_event_mid_stream_reaches_the_client(client: Anthropic) -> None:
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model="claude",
            max_tokens=100,
            messages=[{"role": "user", "content": f"go {STREAM_ERROR}"}],
        ) as stream,
    ):
        for _ in stream:
            pass
    assert "Overloaded" in str(caught.value)


def test_messages_to_a_backend_that_does_not_speak_it_is_a_404(client: Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(
            model="gpt", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    # Anthropic's shape has no code: the message names the endpoint and the backend.
    message = str(caught.value.body)
    assert "/v1/messages" in message and "'openai'" in message


def test_a_wrong_gateway_key_in_x_api_key_is_refused(gateway: Gateway) -> None:
    wrong = Anthropic(base_url=gateway.url, api_key="not-a-gateway-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(
            model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )


def _anthropic_error(body: object) -> dict[str, Any]:
    """The ``error`` of an error body in Anthropic's shape (and nothing of OpenAI's)."""
    assert isinstance(body, dict) and body["type"] == "error", body
    error = body["error"]
    assert set(error) == {"type", "message"} and error["message"], error
    return dict(error)


def test_the_gateways_own_errors_are_in_anthropics_shape(client: Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert _anthropic_error(unknown.value.body)["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude", max_tokens=10, messages="not a list")
    assert _anthropic_error(bad.value.body)["type"] == "invalid_request_error"
    # An error the upstream stage makes: an endpoint the backend does not serve.
    with pytest.raises(anthropic.NotFoundError) as unserved:
        client.messages.create(
            model="gpt", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert "unsupported_endpoint" not in str(unserved.value.body)  # no OpenAI code field
    assert _anthropic_error(unserved.value.body)["type"] == "not_found_error"


def test_a_rate_limit_is_an_anthropic_rate_limit_error(gateway: Gateway) -> None:
    limited = Anthropic(base_url=gateway.url, api_key=LIMITED_KEY, max_retries=0)
    ask: Any = {
        "model": "claude",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    limited.messages.create(**ask)
    with pytest.raises(anthropic.RateLimitError) as caught:
        limited.messages.create(**ask)
    assert _anthropic_error(caught.value.body)["type"] == "rate_limit_error"


def test_envoys_own_replies_on_the_messages_path_are_in_anthropics_shape(client: Anthropic) -> None:
    # No provider is reachable: Envoy's own 503, rewritten for the Messages path.
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(
            model="down", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 503
    assert _anthropic_error(caught.value.body)["type"] == "api_error"


def test_bad_json_is_an_anthropic_invalid_request(gateway: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    headers = {"content-type": "application/json", "x-api-key": CLIENT_KEY}
    conn.request("POST", "/v1/messages", b"{not json", headers)
    response = conn.getresponse()
    doc = orjson.loads(response.read())
    conn.close()
    assert response.status == 400
    assert _anthropic_error(doc)["type"] == "invalid_request_error"


def test_count_tokens_is_answered_by_the_backend_and_not_charged(
    client: Anthropic, fakes: tuple[FakeAnthropic, FakeOpenAI], otlp: OTLPReceiver
) -> None:
    trace_id = os.urandom(16).hex()
    traced = client.with_options(
        default_headers={"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"}
    )
    counted = traced.messages.count_tokens(
        model="claude", messages=[{"role": "user", "content": "one two three"}]
    )
    assert counted.input_tokens == 3
    claude, _ = fakes
    sent = claude.requests[-1]
    assert sent.path == "/v1/messages/count_tokens" and sent.json()["model"] == SONNET
    record = _record(otlp, trace_id)
    assert record["gen_ai.operation.name"] == "count_tokens"
    assert not [key for key in record if key.startswith("gen_ai.usage.")]
