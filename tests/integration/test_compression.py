"""Compressed bodies, both directions, through real Envoy and the official SDK.

The SDK asks for ``gzip, deflate`` on every request. The gateway asks every provider for
``identity`` (the fakes gzip whenever a request allows it, so a path that forwarded the
client's accept-encoding would show here), reads an answer a rude provider compressed anyway,
and compresses large JSON answers for the clients that accept it, never a stream. Clients may
send gzip or deflate bodies. Everything is checked in both accounting modes, with the usage of
every answer matched against the access log line of its request id.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from openai import OpenAI

from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import ACCESS_KEY, SECRET_KEY, FakeBedrock
from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway
from tests.integration.probes import metric, wait_for

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
COHERE = "cohere.embed-english-v3"
# model -> what serves it: a polite provider, one that gzips even unasked, two tiers of
# each (so the per-attempt upstream stage reads them), Bedrock and Azure.
CHAT_MODELS = ["oa", "rude", "oa-multi", "rude-multi", "claude", "az"]
EMBEDDING_MODELS = ["oa", "rude", "oa-multi", "rude-multi", "cohere", "az"]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    with (
        FakeOpenAI(chunk_delay=0.02) as polite,
        FakeOpenAI(chunk_delay=0.02, compress="always") as rude,
        FakeBedrock() as bedrock,
        FakeAzure(api_key="az-key") as azure,
    ):
        yield {"oa": polite, "rude": rude, "bedrock": bedrock, "azure": azure}


@pytest.fixture(scope="module", params=["sidecar", "envoy"])
def gateway(request: pytest.FixtureRequest, fakes: dict[str, Any]) -> Iterator[Gateway]:
    bedrock: FakeBedrock = fakes["bedrock"]
    backends: dict[str, Any] = {
        "oa": {"schema": "openai", "url": f"{fakes['oa'].url}/v1"},
        "rude": {"schema": "openai", "url": f"{fakes['rude'].url}/v1"},
        "br": {
            "schema": "aws_bedrock",
            "url": bedrock.url,
            "region": bedrock.region,
            "access_key_id": "${AWS_KEY}",
            "secret_access_key": "${AWS_SECRET}",
        },
        "az": {"schema": "azure_openai", "url": fakes["azure"].url, "api_key": "${AZ_KEY}"},
    }

    def model(name: str, *tiers: str, upstream: str | None = None) -> dict[str, Any]:
        entries = [{"backend": b, "priority": i, "model": upstream} for i, b in enumerate(tiers)]
        return {"name": name, "backends": [{k: v for k, v in e.items() if v is not None}
                                           for e in entries]}  # fmt: skip

    config = {
        "accounting": {"mode": request.param, "flush_interval": "50ms"},
        "backends": backends,
        "models": [
            model("oa", "oa"),
            model("rude", "rude"),
            model("oa-multi", "oa", "rude"),
            model("rude-multi", "rude", "oa"),
            model("claude", "br", upstream=CLAUDE),
            model("cohere", "br", upstream=COHERE),
            model("az", "az", upstream="dep"),
        ],
    }
    env = {"AWS_KEY": ACCESS_KEY, "AWS_SECRET": SECRET_KEY, "AZ_KEY": "az-key"}
    with Gateway(config, env=env) as gw:
        gw.accounting = request.param
        yield gw


def _recorded(gateway: Gateway, model: str) -> tuple[float, float]:
    """Input and output tokens recorded so far for ``model`` (summed over its attempts)."""
    return tuple(  # type: ignore[return-value]
        metric(
            gateway,
            "gen_ai_client_token_usage_sum",
            gen_ai_request_model=model,
            gen_ai_token_type=kind,
        )
        for kind in ("input", "output")
    )


def _wait_recorded(
    gateway: Gateway, model: str, before: tuple[float, float], usage: tuple[int, int]
) -> None:
    """One more record for ``model`` with exactly ``usage`` (envoy accounting: records come
    through the access log service, within a flush interval)."""
    want = (before[0] + usage[0], before[1] + usage[1])
    wait_for(lambda: _recorded(gateway, model) == want, what=f"{model}'s usage {usage}")


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _skip_handed_off_rude(gateway: Gateway, model: str) -> None:
    if model == "rude" and gateway.accounting == "envoy":
        pytest.skip("envoy accounting reads such answers with Envoy's readers: see below")


def _no_compression_asked(fakes: dict[str, Any]) -> None:
    for name in ("oa", "rude", "bedrock", "azure"):
        for seen in fakes[name].requests:
            assert seen.headers.get("accept-encoding") == "identity", (name, seen.headers)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_chat_from_compressing_providers(
    client: OpenAI, gateway: Gateway, fakes: dict[str, Any], model: str
) -> None:
    _skip_handed_off_rude(gateway, model)
    text = f"hello compressed {model}"
    before = _recorded(gateway, model)
    answer = client.chat.completions.create(model=model, messages=_messages(text))
    assert str(answer.choices[0].message.content).endswith(text)  # each fake's echo
    assert answer.usage is not None
    _wait_recorded(
        gateway, model, before, (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    )
    _no_compression_asked(fakes)


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("model", CHAT_MODELS)
def test_streams_from_compressing_providers(
    client: OpenAI, gateway: Gateway, fakes: dict[str, Any], model: str, include_usage: bool
) -> None:
    _skip_handed_off_rude(gateway, model)
    text = f"one two three four five {model}"
    before = _recorded(gateway, model)
    reference = client.chat.completions.create(model=model, messages=_messages(text))
    assert reference.usage is not None
    usage = (reference.usage.prompt_tokens, reference.usage.completion_tokens)
    _wait_recorded(gateway, model, before, usage)
    before = _recorded(gateway, model)
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=_messages(text), stream=True, **options
    )
    # Never compressed for the client, though it asked: a compressor would hold events.
    assert "content-encoding" not in raw.headers
    chunks = list(raw.parse())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == reference.choices[0].message.content
    assert (chunks[-1].usage is not None) == include_usage
    _wait_recorded(gateway, model, before, usage)
    _no_compression_asked(fakes)


@pytest.mark.parametrize("model", EMBEDDING_MODELS)
def test_embeddings_from_compressing_providers(
    client: OpenAI, gateway: Gateway, fakes: dict[str, Any], model: str
) -> None:
    _skip_handed_off_rude(gateway, model)
    inputs = [f"embed {model} {i}" for i in range(16)]
    before = _recorded(gateway, model)
    answer = client.embeddings.create(model=model, input=inputs)
    assert [d.index for d in answer.data] == list(range(16))
    assert answer.usage.prompt_tokens > 0
    _wait_recorded(gateway, model, before, (answer.usage.prompt_tokens, 0))
    _no_compression_asked(fakes)


def _post(gateway: Gateway, body: bytes, **headers: str) -> httpx2.Response:
    """The answer, read whole (``num_bytes_downloaded``: its size on the wire)."""
    with httpx2.stream(
        "POST",
        f"{gateway.url}/v1/embeddings",
        content=body,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    ) as response:
        response.read()
    return response


EMBED = orjson.dumps({"model": "oa", "input": [f"a long input {i}" for i in range(64)]})


def test_large_answers_are_gzipped_for_clients_that_accept_it(gateway: Gateway) -> None:
    plain = _post(gateway, EMBED, **{"accept-encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    packed = _post(gateway, EMBED, **{"accept-encoding": "gzip"})
    assert packed.status_code == 200 and packed.headers["content-encoding"] == "gzip"
    # httpx decoded it: the same answer, in fewer bytes on the wire (random floats, like
    # real embeddings, leave gzip about a third to a half of the bytes to save).
    assert packed.json() == plain.json()
    assert packed.num_bytes_downloaded < plain.num_bytes_downloaded * 0.8
    # A small answer is not worth it.
    small = orjson.dumps({"model": "oa", "input": "x"})
    assert "content-encoding" not in _post(gateway, small, **{"accept-encoding": "gzip"}).headers


def test_stream_events_arrive_as_produced_for_a_gzip_client(gateway: Gateway) -> None:
    body = orjson.dumps(
        {"model": "rude", "stream": True, "messages": _messages("a b c d e f g h i j")}
    )
    arrived = []
    headers = {"content-type": "application/json", "accept-encoding": "gzip"}
    with httpx2.stream(
        "POST", f"{gateway.url}/v1/chat/completions", content=body, headers=headers, timeout=30
    ) as response:
        assert "content-encoding" not in response.headers
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrived.append(time.monotonic())
    # The fake waits 20 ms between events: they reach the client spread out, not at once.
    assert len(arrived) >= 10
    assert arrived[-1] - arrived[0] >= 0.15


@pytest.mark.parametrize(("coding", "pack"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_request_body_is_decoded(gateway: Gateway, coding: str, pack: Any) -> None:
    response = _post(gateway, pack(EMBED), **{"content-encoding": coding})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 64


def test_a_zip_bomb_is_a_413(gateway: Gateway) -> None:
    bomb = gzip.compress(b'{"model": "oa", "input": "' + b"0" * (40 * 1024 * 1024) + b'"}')
    response = _post(gateway, bomb, **{"content-encoding": "gzip"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_an_unknown_coding_is_a_415_naming_it(gateway: Gateway) -> None:
    response = _post(gateway, EMBED, **{"content-encoding": "br"})
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_content_encoding" and "'br'" in error["message"]


def test_envoy_accounting_records_an_answer_compressed_unasked_as_unreadable(
    client: OpenAI, gateway: Gateway
) -> None:
    """Envoy's readers cannot read a gzip body, and Envoy's decompressor would cut a body past
    its inflate ratio without saying so: in envoy accounting mode the client still gets the
    answer, and the record says it could not be read (README, "Accounting modes")."""
    if gateway.accounting != "envoy":
        pytest.skip("the sidecar reads such answers (test_chat_from_compressing_providers)")
    before = metric(
        gateway,
        "ai_gateway_requests_total",
        gen_ai_request_model="rude",
        error_type="bad_upstream_response",
    )
    answer = client.chat.completions.create(model="rude", messages=_messages("unasked gzip"))
    assert str(answer.choices[0].message.content).endswith("unasked gzip")
    wait_for(
        lambda: (
            metric(
                gateway,
                "ai_gateway_requests_total",
                gen_ai_request_model="rude",
                error_type="bad_upstream_response",
            )
            == before + 1
        ),
        what="the unreadable record",
    )


NODE_CLIENT = Path(__file__).parent.parent / "node" / "client.mjs"


def test_the_node_sdk_gets_answers_and_exact_usage(gateway: Gateway) -> None:
    """The official Node SDK (its own fetch and accept-encoding), installed by `make test`
    into tests/node (Makefile, node-deps)."""
    if shutil.which("node") is None or not (NODE_CLIENT.parent / "node_modules").exists():
        pytest.skip("node and tests/node/node_modules are installed by `make test`")
    before = _recorded(gateway, "oa")
    done = subprocess.run(
        ["node", str(NODE_CLIENT), f"{gateway.url}/v1", "oa", "oa"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert got["chat"] == got["streamed"] == "Echo: hello from node"
    assert got["vectors"] == 16
    chat, stream, embed = got["chatUsage"], got["streamUsage"], got["embedUsage"]
    assert stream == chat
    total_in = chat["prompt_tokens"] * 2 + embed["prompt_tokens"]
    _wait_recorded(gateway, "oa", before, (total_in, chat["completion_tokens"] * 2))
