"""Usage the gateway counts itself, for answers that ended without the provider's report: the
counter (extproc.tokens), and the upstream stage's record, metadata and debit built from it."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from prometheus_client import CollectorRegistry

from extproc import tokens
from extproc.config import parse_config
from extproc.router import RouteState
from extproc.telemetry import Record, Telemetry
from extproc.upstream import Exchange, UpstreamStage
from extproc.usage import Usage, from_openai, json_document
from tests.fakes.faulty import bedrock_frames
from tests.fakes.replay import Cassette, cassettes

MODEL = "gpt-4o-mini"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
EVENT_STREAM = "application/vnd.amazon.eventstream"
CONFIG = {
    "backends": {"oa": {"schema": "openai", "url": "http://127.0.0.1:1/v1"}},
    "models": [{"name": MODEL, "backends": [{"backend": "oa"}]}],
}
SSE = {":status": "200", "content-type": "text/event-stream"}
JSON = {":status": "200", "content-type": "application/json"}
BODY = orjson.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello to the world."}]}
)
WORDS = ["Hello", ",", " world", "!"]  # four cl100k tokens
DONE = b"data: [DONE]\n\n"


def chunk(delta: dict[str, object] | None = None, usage: dict[str, int] | None = None) -> bytes:
    doc: dict[str, object] = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [] if delta is None else [{"index": 0, "delta": delta}],
    }
    if usage is not None:
        doc["usage"] = usage
    return b"data: " + orjson.dumps(doc) + b"\n\n"


PROVIDER_USAGE = {"prompt_tokens": 30, "completion_tokens": 40, "total_tokens": 70}


# --- the counter ------------------------------------------------------------------------------


def test_openai_models_are_counted_with_the_tokenizer() -> None:
    assert tokens.uses_tokenizer("gpt-4o-mini") and tokens.uses_tokenizer("o3-mini")
    assert tokens.uses_tokenizer("text-embedding-3-small")
    assert tokens.count("".join(WORDS), "gpt-4o-mini") == len(WORDS)
    assert tokens.count("", "gpt-4o") == 0


def test_other_models_are_counted_at_their_family_ratio() -> None:
    assert not tokens.uses_tokenizer("anthropic.claude-3-haiku") and not tokens.uses_tokenizer(
        "llama-3.1-8b"
    )
    assert tokens.count("x" * 35, "anthropic.claude-3-haiku") == 10  # 3.5 characters a token
    assert tokens.count("x" * 40, "llama-3.1-8b") == 10  # 4 by default
    assert tokens.count("x" * 41, "llama-3.1-8b") == 11


def test_prompt_counts_messages_tools_and_tool_calls() -> None:
    text = {"model": MODEL, "messages": [{"role": "user", "content": "Hello, world!"}]}
    # 4 tokens of text, 1 of role, 3 around the message, 3 to prime the reply.
    assert tokens.prompt_tokens(orjson.dumps(text), MODEL) == 4 + 1 + 3 + 3
    call = {
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    rich = {
        "model": MODEL,
        "tools": [tool],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ],
    }
    got = tokens.prompt_tokens(orjson.dumps(rich), MODEL)
    expected = (
        4
        + 2  # roles
        + tokens.count("get_weather", MODEL)
        + tokens.count('{"city":"Paris"}', MODEL)
        + tokens.count(orjson.dumps([tool]).decode(), MODEL)
        + tokens.TOOLS_PREAMBLE
        + 2 * 3
        + 3
    )
    assert got == expected


def test_prompt_counts_embeddings_inputs() -> None:
    def count(raw: object) -> int:
        return tokens.prompt_tokens(orjson.dumps({"model": "m", "input": raw}), "text-embedding-3")

    assert count("Hello, world!") == 4
    assert count(["Hello, world!", "Hello"]) == 5
    assert count([1, 2, 3]) == 3  # already tokens
    assert count([[1, 2], [3]]) == 3
    assert tokens.prompt_tokens(b"not json", MODEL) == 0


def test_sizes_only_give_rough_counts() -> None:
    assert tokens.body_tokens(460) == 100
    assert tokens.body_tokens(20) == 0
    assert tokens.answer_tokens(2800, stream=True) == 10
    assert tokens.answer_tokens(100, stream=False) == 0


# --- the record -------------------------------------------------------------------------------


class Recorded(Telemetry):
    def __init__(self) -> None:
        super().__init__(parse_config(CONFIG, {}), registry=CollectorRegistry())
        self.records: list[Record] = []

    def record(self, rec: Record) -> None:
        self.records.append(rec)
        super().record(rec)


class Debits(UpstreamStage):
    def __init__(self, telemetry: Telemetry) -> None:
        super().__init__(parse_config(CONFIG, {}), telemetry)
        self.debited: list[tuple[str, int, float]] = []

    def debit(self, buckets: str, tokens: int, cost: float) -> None:
        if tokens or cost:  # what the limiter would be asked for
            self.debited.append((buckets, tokens, cost))


@pytest.fixture
def telemetry() -> Recorded:
    return Recorded()


def start(stage: UpstreamStage, stream: str, body: bytes = BODY, seen: bool = True) -> Exchange:
    """An attempt whose request has left; ``seen``: the stage had the client's body."""
    ex = stage.exchange()
    state = RouteState(MODEL, MODEL, "/v1/chat/completions", len(body), stream, "key:k")
    step = asyncio.run(ex.request_headers({}, "oa", state))
    assert step.error is None
    if step.request_body == "buffered":
        assert asyncio.run(ex.request_body(body)).error is None
    elif seen:
        ex.client_body(body)
    return ex


def only(telemetry: Recorded) -> Record:
    assert len(telemetry.records) == 1
    return telemetry.records[0]


def prompt() -> int:
    return tokens.prompt_tokens(BODY, MODEL)


@pytest.mark.parametrize("k", [0, 1, 2, len(WORDS)], ids=["headers", "first", "mid", "all"])
def test_a_stream_cut_after_k_chunks_is_estimated_and_debited(telemetry: Recorded, k: int) -> None:
    stage = Debits(telemetry)
    ex = start(stage, "usage")
    ex.response_headers(SSE, False)
    for word in WORDS[:k]:
        ex.response_body(chunk({"content": word}), False)
    ex.abort()
    rec = only(telemetry)
    assert rec.cut and rec.error_type == "interrupted"
    assert rec.usage == Usage(prompt(), k, prompt() + k, estimated=True)
    assert rec.usage_source == "estimated"
    assert stage.debited == [("key:k", prompt() + k, 0.0)]


def test_a_cut_before_the_answer_began_is_not_charged(telemetry: Recorded) -> None:
    stage = Debits(telemetry)
    start(stage, "usage").abort()
    rec = only(telemetry)
    assert rec.usage is None and rec.error_type == "no_response" and stage.debited == []


def test_tool_calls_and_reasoning_count_as_output(telemetry: Recorded) -> None:
    ex = start(Debits(telemetry), "usage")
    ex.response_headers(SSE, False)
    ex.response_body(chunk({"reasoning_content": "Hello"}), False)
    call = {"index": 0, "id": "c", "function": {"name": "get_weather", "arguments": ""}}
    ex.response_body(chunk({"tool_calls": [call]}), False)
    part = {"index": 0, "function": {"arguments": '{"city":"Paris"}'}}
    ex.response_body(chunk({"tool_calls": [part]}), False)
    ex.abort()
    said = tokens.count('Helloget_weather{"city":"Paris"}', MODEL)
    assert only(telemetry).usage == Usage(prompt(), said, prompt() + said, estimated=True)


def test_a_stream_from_a_server_that_ignores_include_usage_is_complete_and_estimated(
    telemetry: Recorded,
) -> None:
    ex = start(Debits(telemetry), "usage")
    ex.response_headers(SSE, False)
    ex.response_body(b"".join(chunk({"content": w}) for w in WORDS) + DONE, False)
    ex.abort()  # the client closed after [DONE], before the provider ended the response
    rec = only(telemetry)
    assert not rec.cut and rec.error_type is None
    assert rec.usage == Usage(prompt(), len(WORDS), prompt() + len(WORDS), estimated=True)


@pytest.mark.parametrize("end", ["abort", "end_of_stream"])
def test_provider_usage_wins_over_the_estimate(telemetry: Recorded, end: str) -> None:
    stage = Debits(telemetry)
    ex = start(stage, "usage")
    ex.response_headers(SSE, False)
    ex.response_body(chunk({"content": "Hello"}) + chunk(usage=PROVIDER_USAGE), False)
    step = ex.response_body(DONE, True) if end == "end_of_stream" else None
    ex.abort()
    rec = only(telemetry)
    assert rec.usage == Usage(30, 40, 70) and rec.usage_source == "provider"
    assert stage.debited == [("key:k", 70, 0.0)]
    if step is not None:
        assert step.metadata is not None and step.metadata["usage_source"] == "provider"


def test_an_injected_usage_request_is_counted_from_the_body_it_rewrote(
    telemetry: Recorded,
) -> None:
    """A stream whose client did not ask for usage: the stage reads (and rewrites) the body."""
    ex = start(Debits(telemetry), "plain", seen=False)
    ex.response_headers(SSE, False)
    ex.response_body(chunk({"content": "Hello"}), False)
    ex.abort()
    assert only(telemetry).usage == Usage(prompt(), 1, prompt() + 1, estimated=True)


def test_a_body_the_stage_never_saw_is_counted_from_its_length(telemetry: Recorded) -> None:
    ex = start(Debits(telemetry), "usage", seen=False)
    ex.response_headers(SSE, False)
    ex.abort()
    expected = tokens.body_tokens(len(BODY))
    assert only(telemetry).usage == Usage(expected, 0, expected, estimated=True)


def test_a_buffered_answer_without_usage_is_estimated(telemetry: Recorded) -> None:
    stage = Debits(telemetry)
    ex = start(stage, "")
    ex.response_headers(JSON, False)
    answer = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}}],
    }
    step = ex.response_body(orjson.dumps(answer), True)
    rec = only(telemetry)
    assert rec.usage == Usage(prompt(), len(WORDS), prompt() + len(WORDS), estimated=True)
    assert step.metadata is not None and step.metadata["usage_source"] == "estimated"
    assert step.metadata["total_tokens"] == prompt() + len(WORDS)
    assert stage.debited == [("key:k", prompt() + len(WORDS), 0.0)]


def test_an_error_answer_is_not_estimated(telemetry: Recorded) -> None:
    ex = start(Debits(telemetry), "")
    ex.response_headers({**JSON, ":status": "400"}, False)
    ex.response_body(b'{"error": {"message": "bad"}}', True)
    assert only(telemetry).usage is None


# --- the documented error, on the recorded OpenAI traffic (README, "Estimated usage") ---------


_TOKEN_APIS = ("chat", "embeddings", "text_completion")


def _recorded() -> list[tuple[Cassette, Usage, str]]:
    found = []
    for recording in cassettes():
        # Token-usage APIs only: an upload's recording keeps no request body (nothing to count).
        if recording.status != 200 or recording.endpoint not in _TOKEN_APIS or recording.streaming:
            continue
        doc = json_document(recording.response_body)
        usage = from_openai((doc or {}).get("usage"))
        if usage is not None:
            found.append((recording, usage, str(recording.request_json().get("model", ""))))
    return found


def test_embeddings_inputs_of_the_corpus_are_counted_exactly() -> None:
    recorded = [r for r in _recorded() if r[0].endpoint == "embeddings"]
    assert len(recorded) >= 5
    for recording, usage, model in recorded:
        assert tokens.prompt_tokens(recording.request_body, model) == usage.input_tokens


def test_text_prompts_of_the_corpus_are_within_two_tokens() -> None:
    # Images, audio and a search model's own additions are not counted (README).
    skipped = ("multimodal", "image", "audio", "web-search", "agents")
    recorded = [
        r
        for r in _recorded()
        if r[0].endpoint == "chat" and not any(word in r[0].name for word in skipped)
    ]
    assert len(recorded) >= 6
    for recording, usage, model in recorded:
        estimate = tokens.prompt_tokens(recording.request_body, model)
        assert abs(estimate - usage.input_tokens) <= 2, recording.name


BEDROCK_CONFIG = {
    "backends": {
        "br": {
            "schema": "aws_bedrock",
            "url": "http://127.0.0.1:1",
            "region": "us-east-1",
            "access_key_id": "${KEY}",
            "secret_access_key": "${KEY}",
        }
    },
    "models": [{"name": "claude", "backends": [{"backend": "br", "model": CLAUDE}]}],
}


@pytest.mark.parametrize("frames", [2, 3, 5], ids=["mid", "all-deltas", "stopped"])
def test_a_bedrock_stream_without_its_metadata_is_estimated(
    telemetry: Recorded, frames: int
) -> None:
    stage = UpstreamStage(parse_config(BEDROCK_CONFIG, {"KEY": "k"}), telemetry)
    ex = stage.exchange()
    state = RouteState("claude", "claude", "/v1/chat/completions", 0, "usage")
    assert asyncio.run(ex.request_headers({}, "br", state)).request_body == "buffered"
    body = orjson.dumps(
        {"model": "claude", "stream": True, "messages": [{"role": "user", "content": "x" * 70}]}
    )
    assert asyncio.run(ex.request_body(body)).error is None
    ex.response_headers({":status": "200", "content-type": EVENT_STREAM}, False)
    ex.response_body(b"".join(bedrock_frames()[:frames]), False)
    ex.abort()
    rec = only(telemetry)
    said = {2: "Hel", 3: "Hello", 5: "Hello"}[frames]
    # 70 characters and the role at 3.5 a token, and the message overheads.
    prompt = 20 + 2 + tokens.TOKENS_PER_MESSAGE + tokens.TOKENS_PER_REPLY
    output = tokens.count(said, CLAUDE)
    assert rec.usage == Usage(prompt, output, prompt + output, estimated=True)
    assert rec.cut and rec.error_type == "interrupted"


def test_bedrock_metadata_wins_over_the_estimate(telemetry: Recorded) -> None:
    stage = UpstreamStage(parse_config(BEDROCK_CONFIG, {"KEY": "k"}), telemetry)
    ex = stage.exchange()
    state = RouteState("claude", "claude", "/v1/chat/completions", 0, "usage")
    asyncio.run(ex.request_headers({}, "br", state))
    body = b'{"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    assert asyncio.run(ex.request_body(body)).error is None
    ex.response_headers({":status": "200", "content-type": EVENT_STREAM}, False)
    ex.response_body(b"".join(bedrock_frames()), False)
    ex.abort()  # the client left after the metadata event, before the stream's end
    rec = only(telemetry)
    assert rec.usage == Usage(3, 2, 5) and not rec.cut and rec.error_type is None
