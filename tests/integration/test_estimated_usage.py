"""Every answer accounted, in both accounting modes: streams the client leaves after k chunks,
servers that never report usage, clients that close after ``[DONE]``: one record each, with
the provider's usage when it came and the gateway's estimate otherwise, debited alike.

Records are read from the attempts' spans (a real OTLP receiver), found by the trace id each
request sent in ``traceparent``.
"""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from openai import OpenAI

from extproc import tokens
from extproc.clients import hash_key
from tests.fakes.openai import FakeOpenAI, count_tokens
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway

HONEST = "gpt-4o-mini"  # reports usage when asked, like OpenAI
LLAMA = "gpt-llama"  # a server that never reports usage (named so the tokenizer counts it)
KEYS = {name: f"gw-key-{name}" for name in ("meter", "budget", "answers", "free")}
BUDGET = 100
TEXT = " ".join(["hello"] * 20)  # 20 words for the fake, 20 tokens for cl100k
PROMPT = count_tokens(TEXT)  # the fake's prompt_tokens
ANSWER = count_tokens("Echo: " + TEXT)  # its completion_tokens
WORD_DELAY = 0.1


@pytest.fixture(scope="module")
def gateway(otlp: OTLPReceiver, accounting: str) -> Iterator[Gateway]:
    with (
        FakeOpenAI(chunk_delay=WORD_DELAY) as honest,
        FakeOpenAI(chunk_delay=0.005, omit_usage=True, linger=1.0) as llama,
    ):
        config = {
            "accounting": {"mode": accounting, "flush_interval": "50ms"},
            "backends": {
                "honest": {"schema": "openai", "url": f"{honest.url}/v1"},
                "llama": {"schema": "openai", "url": f"{llama.url}/v1"},
            },
            "models": [
                {"name": HONEST, "backends": [{"backend": "honest"}], "retry": {"attempts": 1}},
                {"name": LLAMA, "backends": [{"backend": "llama"}], "retry": {"attempts": 1}},
            ],
            "clients": [{"name": n, "key_sha256": hash_key(k)} for n, k in KEYS.items()],
            # Requests of a client under a limit stay on the sidecar in both modes ("free" has
            # none: in envoy mode its streams that asked for usage are Envoy's to account).
            "limits": [
                {"match": {"client": "meter"}, "tokens": 10**9, "per": "day"},
                {"match": {"client": "budget"}, "tokens": BUDGET, "per": "day"},
                {"match": {"client": "answers"}, "tokens": BUDGET, "per": "day"},
            ],
        }
        with Gateway(config, env=otlp.env(100)) as gw:
            yield gw


def _traceparent() -> tuple[str, str]:
    trace_id = os.urandom(16).hex()
    return trace_id, f"00-{trace_id}-{os.urandom(8).hex()}-01"


def _record(otlp: OTLPReceiver, trace_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """The attributes of the one attempt span of the request with this trace id."""
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


def _body(model: str, usage: bool = True, stream: bool = True) -> bytes:
    doc: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": TEXT}]}
    if stream:
        doc["stream"] = True
        if usage:
            doc["stream_options"] = {"include_usage": True}
    return orjson.dumps(doc)


def _read_then_close(
    gw: Gateway, key: str, body: bytes, events: int | None, traceparent: str
) -> list[bytes]:
    """POST a stream, read ``events`` data events (None: up to [DONE]), then close."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {KEYS[key]}",
        "traceparent": traceparent,
    }
    conn.request("POST", "/v1/chat/completions", body, headers)
    response = conn.getresponse()
    assert response.status == 200
    seen: list[bytes] = []
    while events is None or len(seen) < events:
        line = response.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            seen.append(line[6:].strip())
            if seen[-1] == b"[DONE]":
                break
    conn.sock.close()  # as a client that leaves does
    conn.close()
    return seen


def _words(events: list[bytes]) -> int:
    """Answer tokens the client received (one cl100k token a word, two for "Echo:")."""
    text = ""
    for event in events:
        doc = orjson.loads(event)
        for choice in doc.get("choices") or []:
            text += choice["delta"].get("content") or ""
    return tokens.count(text, HONEST)


def _assert_prompt_estimate(record: dict[str, Any]) -> None:
    # The role, OpenAI's 3 tokens per message and 3 for the reply come on top of the fake's count.
    assert record["gen_ai.usage.input_tokens"] == PROMPT + 1 + 3 + 3


@pytest.mark.parametrize(
    "events",
    [0, 5, ANSWER + 2],  # ANSWER + 2: the role chunk, the words, the finish; not the usage
    ids=["headers-only", "mid-stream", "before-usage-chunk"],
)
def test_a_client_that_leaves_after_k_chunks_is_charged_an_estimate(
    gateway: Gateway, otlp: OTLPReceiver, events: int
) -> None:
    trace_id, parent = _traceparent()
    seen = _read_then_close(gateway, "meter", _body(HONEST), events, parent)
    assert len(seen) == events
    record = _record(otlp, trace_id)
    assert record["ai_gateway.usage_source"] == "estimated"
    assert record["ai_gateway.cut"] is True
    assert record["error.type"] == "interrupted"
    _assert_prompt_estimate(record)
    # At least what the client got, at most the whole answer ("Echo:" is two tokens).
    assert _words(seen) <= record["gen_ai.usage.output_tokens"] <= ANSWER + 1


def test_a_token_budget_spent_by_leaving_clients_refuses_the_next_request(
    gateway: Gateway, otlp: OTLPReceiver
) -> None:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=KEYS["budget"], max_retries=0)
    charged = 0
    for _ in range(10):
        trace_id, parent = _traceparent()
        try:
            _read_then_close(gateway, "budget", _body(HONEST), 3, parent)
        except AssertionError:
            break  # refused: 429
        record = _record(otlp, trace_id)
        charged += record["gen_ai.usage.input_tokens"] + record["gen_ai.usage.output_tokens"]
        time.sleep(0.2)  # the debit lands when the record is made
        if charged >= BUDGET:
            break
    assert charged >= BUDGET
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=HONEST, messages=[{"role": "user", "content": "hi"}])


def test_provider_usage_wins_over_the_estimate(gateway: Gateway, otlp: OTLPReceiver) -> None:
    trace_id, parent = _traceparent()
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=KEYS["meter"], max_retries=0)
    with client.chat.completions.create(
        model=HONEST,
        messages=[{"role": "user", "content": TEXT}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"traceparent": parent},
    ) as stream:
        chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (PROMPT, ANSWER)
    record = _record(otlp, trace_id)
    assert record["ai_gateway.usage_source"] == "provider"
    assert (record["gen_ai.usage.input_tokens"], record["gen_ai.usage.output_tokens"]) == (
        PROMPT,
        ANSWER,
    )
    assert "ai_gateway.cut" not in record and "error.type" not in record


@pytest.mark.parametrize("usage", [True, False], ids=["asked", "not-asked"])
def test_a_client_that_closes_after_done_got_a_complete_answer(
    gateway: Gateway, otlp: OTLPReceiver, usage: bool
) -> None:
    """The server keeps the response open after [DONE] and reports no usage; the client
    closes first. Kept on the sidecar (a client under a limit), in both modes."""
    trace_id, parent = _traceparent()
    seen = _read_then_close(gateway, "meter", _body(LLAMA, usage), None, parent)
    assert seen[-1] == b"[DONE]"
    record = _record(otlp, trace_id)
    assert "ai_gateway.cut" not in record and "error.type" not in record
    assert record["ai_gateway.usage_source"] == "estimated"
    _assert_prompt_estimate(record)
    assert record["gen_ai.usage.output_tokens"] == ANSWER + 1  # "Echo:" is two tokens


def test_a_server_that_ignores_include_usage_is_estimated(
    gateway: Gateway, otlp: OTLPReceiver, accounting: str
) -> None:
    """A client under no limit: in envoy mode Envoy reads this stream, and the record is
    estimated from the bytes Envoy moved (it sees no text, nor the [DONE] the client got)."""
    trace_id, parent = _traceparent()
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=KEYS["free"], max_retries=0)
    with client.chat.completions.create(
        model=LLAMA,
        messages=[{"role": "user", "content": TEXT}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"traceparent": parent},
    ) as stream:
        chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    record = _record(otlp, trace_id)
    assert record["ai_gateway.usage_source"] == "estimated"
    if accounting == "sidecar":
        assert "ai_gateway.cut" not in record
        _assert_prompt_estimate(record)
        assert record["gen_ai.usage.output_tokens"] == ANSWER + 1
    else:
        assert record["gen_ai.usage.input_tokens"] == tokens.body_tokens(
            len(_body(LLAMA, stream=True))
        )
        assert record["gen_ai.usage.output_tokens"] > 0


def test_an_answer_without_usage_is_estimated_and_spends_the_budget(
    gateway: Gateway, otlp: OTLPReceiver
) -> None:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=KEYS["answers"], max_retries=0)
    charged = 0
    for _ in range(10):
        trace_id, parent = _traceparent()
        try:
            reply = client.chat.completions.create(
                model=LLAMA,
                messages=[{"role": "user", "content": TEXT}],
                extra_headers={"traceparent": parent},
            )
        except openai.RateLimitError:
            break
        assert reply.usage is None  # the client sees the server's answer as it was
        record = _record(otlp, trace_id)
        assert record["ai_gateway.usage_source"] == "estimated"
        _assert_prompt_estimate(record)
        assert record["gen_ai.usage.output_tokens"] == ANSWER + 1
        charged += record["gen_ai.usage.input_tokens"] + record["gen_ai.usage.output_tokens"]
        time.sleep(0.2)
    assert BUDGET <= charged < BUDGET + 2 * (PROMPT + ANSWER + 10)
    # Envoy's own access-log line has the estimate too (the answer ended through the sidecar).
    lines = [e for e in gateway.access_log() if e["model"] == LLAMA and e["status"] == 200]
    assert any(
        e["usage_source"] == "estimated" and e["total_tokens"] == PROMPT + 7 + ANSWER + 1
        for e in lines
    )
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=LLAMA, messages=[{"role": "user", "content": "hi"}])


def test_embeddings_without_usage_are_estimated(gateway: Gateway, otlp: OTLPReceiver) -> None:
    trace_id, parent = _traceparent()
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=KEYS["meter"], max_retries=0)
    reply = client.embeddings.create(
        model=LLAMA, input=[TEXT, "Hello, world!"], extra_headers={"traceparent": parent}
    )
    assert len(reply.data) == 2
    record = _record(otlp, trace_id)
    assert record["ai_gateway.usage_source"] == "estimated"
    assert record["gen_ai.usage.input_tokens"] == PROMPT + 4
