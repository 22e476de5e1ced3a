"""Properties of every parser and translator, checked with hypothesis on generated input.

What a client or a provider sends is hostile until parsed: any bytes, any JSON, any chunking.
The properties: parsers raise only their documented error (a 4xx ``GatewayError`` for client
input, ``EventStreamError`` for a broken event stream, the 502 ``GatewayError`` of a provider's
unreadable 2xx buffered answer) and nothing else, so no input can turn into a gateway 500;
pass-through stays byte for byte; chunk boundaries change nothing.

Inputs that hit a bug already reported are set aside with ``assume`` (see :data:`KNOWN_BUGS`);
each such bug has a strict xfail test at the end of this module that pins it with a concrete
input. When a bug is fixed its xfail test passes, strict mode fails it, and both the test's
marker and the entry here go.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import string
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from extproc.config import parse_config
from extproc.errors import GatewayError
from extproc.eventstream import (
    EventStreamDecoder,
    EventStreamError,
    HeaderValue,
    Int8,
    Int16,
    Int64,
    Message,
    encode_message,
)
from extproc.responses_usage import ResponsesObserver
from extproc.router import ReadBody, Respond, Route, Router
from extproc.translate import RequestContext, UpstreamReply
from extproc.translate.bedrock.chat import BedrockChat
from extproc.translate.bedrock.embeddings import BedrockEmbeddings
from extproc.translate.bedrock.fields import CHAT_FIELDS
from extproc.translate.openai import PassThrough, rewrite_body
from extproc.usage import (
    _EVENT_END,
    _USAGE_NULL,
    SSEObserver,
    _without_usage_null,
    event_data,
    event_ends,
    from_openai,
)
from extproc.wire import MODEL_HEADER
from tests.fakes.openai import chat_reply, completion_chunks, sse_events
from tests.fakes.responses import events as responses_events
from tests.fakes.responses import responses_reply
from tests.vocabulary import WORDS, bug_signature

# Hypothesis runs inside the ordinary suite: a bounded number of examples, no deadline (the
# machine may be busy with integration tests).
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Reported bugs, as "ExceptionType@file.py:function" of the innermost extproc frame. Each one
# has a strict xfail test below. None is open: the tests below pin the fixed ones.
KNOWN_BUGS: set[str] = set()


def _unless_known(call: Callable[[], Any]) -> Any:
    """``call()``; an exception of a known bug sets the example aside, any other propagates."""
    try:
        return call()
    except GatewayError:
        raise
    except Exception as exc:
        assume(bug_signature(exc) not in KNOWN_BUGS)
        raise


# --- strategies ---------------------------------------------------------------------------------

keys = st.sampled_from(WORDS) | st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(WORDS)
    | st.text(max_size=16)
)
# Nesting stays far below orjson's limits (1024 to parse, 254 to serialise): deeper documents
# are a separate case (the deep-JSON tests below).
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=24,
)
json_objects = st.dictionaries(keys, json_values, max_size=8)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


cut_lists = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=8)


def _ctx(endpoint: str = "chat", stream: bool = False, model: str = "m") -> RequestContext:
    return RequestContext(
        endpoint="chat" if endpoint == "chat" else "embeddings",
        route_model="client-model",
        upstream_model=model,
        body_model="client-model",
        path="/v1/chat/completions" if endpoint == "chat" else "/v1/embeddings",
        stream=stream,
    )


def _is_client_error(err: GatewayError) -> bool:
    return 400 <= err.status < 500 and bool(err.message)


def _openai_error(body: bytes) -> dict[str, Any]:
    doc = orjson.loads(body)
    error = doc["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


# --- SSE observer -------------------------------------------------------------------------------

sse_streams = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [b"data: [DONE]\n\n", b"\n\n", b"\r\n\r\n", b"data:", b": ping\n\n", b'"usage":null']
        ),
        json_objects.map(lambda d: b"data: " + orjson.dumps(d) + b"\n\n"),
    ),
    max_size=12,
).map(b"".join)


def _observe(parts: list[bytes], strip: bool) -> tuple[bytes, SSEObserver]:
    observer = SSEObserver(strip_usage=strip)
    out = b"".join(observer.feed(p, i == len(parts) - 1) for i, p in enumerate(parts))
    return out, observer


def _state(o: SSEObserver) -> tuple[Any, ...]:
    return (o.usage, o.model, o.said, o.done, o.error)


@PROPERTY
@given(stream=sse_streams, cuts=cut_lists)
def test_sse_pass_through_is_byte_exact_in_any_chunking(stream: bytes, cuts: list[int]) -> None:
    out, observer = _observe(_chunked(stream, cuts), strip=False)
    assert out == stream
    _, whole = _observe([stream], strip=False)
    assert _state(observer) == _state(whole)


@PROPERTY
@given(stream=sse_streams, cuts=cut_lists)
def test_sse_stripping_does_not_depend_on_chunking(stream: bytes, cuts: list[int]) -> None:
    out, observer = _observe(_chunked(stream, cuts), strip=True)
    once, whole = _observe([stream], strip=True)
    assert out == once and _state(observer) == _state(whole)
    assert len(out) <= len(stream)


@PROPERTY
@given(
    words=st.lists(st.text(string.ascii_letters, min_size=1, max_size=8), min_size=1, max_size=12),
    cuts=cut_lists,
)
def test_sse_stripping_restores_the_stream_the_client_asked_for(
    words: list[str], cuts: list[int]
) -> None:
    reply = chat_reply({"model": "m", "messages": [{"role": "user", "content": " ".join(words)}]})
    asked = b"".join(sse_events(completion_chunks(reply, include_usage=False)))
    injected = b"".join(sse_events(completion_chunks(reply, include_usage=True)))
    out, observer = _observe(_chunked(injected, cuts), strip=True)
    assert out == asked
    assert observer.usage is not None
    assert observer.usage.output_tokens == reply.completion_tokens
    assert observer.done


@PROPERTY
@given(
    words=st.lists(st.text(string.ascii_letters, min_size=1, max_size=8), min_size=1, max_size=12),
    cuts=cut_lists,
    noise=sse_streams,
)
def test_a_responses_stream_is_observed_alike_in_any_chunking(
    words: list[str], cuts: list[int], noise: bytes
) -> None:
    body = {"model": "m", "input": " ".join(words), "stream": True}
    stream = b"".join(responses_events(responses_reply(body), body)) + noise
    observer = ResponsesObserver()
    parts = _chunked(stream, cuts)
    out = b"".join(observer.feed(p, i == len(parts) - 1) for i, p in enumerate(parts))
    whole = ResponsesObserver()
    whole.feed(stream, True)
    assert out == stream
    state = (observer.usage, observer.model, observer.said, observer.sequence, observer.done)
    assert state == (whole.usage, whole.model, whole.said, whole.sequence, whole.done)
    assert observer.done and observer.usage is not None
    assert observer.usage.output_tokens == responses_reply(body).completion_tokens


sse_bytes = st.lists(
    st.sampled_from(
        [b"data:", b" ", b"\n", b"\r", b",", b'"usage"', b":", b"null", b"}", b"{", b"x"]
    ),
    max_size=40,
).map(b"".join)


@PROPERTY
@given(data=sse_streams | sse_bytes)
def test_sse_fast_paths_agree_with_the_plain_definitions(data: bytes) -> None:
    # The observer's shortcuts (bytes.find, one-line events, a search from the "usage" key)
    # against what they shortcut: the regexes and the line-by-line reading.
    assert list(event_ends(data)) == [m.end() for m in _EVENT_END.finditer(data)]
    lines = (line[5:].lstrip(b" ") for line in data.splitlines() if line.startswith(b"data:"))
    assert event_data(data) == b"".join(lines)
    assert _without_usage_null(data) == _USAGE_NULL.sub(b"", data, count=1)


@PROPERTY
@given(usage=json_values)
def test_usage_fields_are_ints_whatever_the_provider_sent(usage: Any) -> None:
    parsed = from_openai(usage)
    if parsed is not None:
        for value in (parsed.input_tokens, parsed.output_tokens, parsed.total_tokens):
            assert isinstance(value, int) and not isinstance(value, bool)


# --- event stream -------------------------------------------------------------------------------

header_values: st.SearchStrategy[HeaderValue] = st.one_of(
    st.booleans(),
    st.integers(-128, 127).map(Int8),
    st.integers(-(2**15), 2**15 - 1).map(Int16),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.binary(max_size=32),
    st.text(max_size=32),
    st.uuids(),
)
header_names = st.text(min_size=1, max_size=16).filter(lambda n: len(n.encode()) < 256)
messages = st.builds(
    Message,
    headers=st.dictionaries(header_names, header_values, max_size=4),
    payload=st.binary(max_size=256),
)


def _decode(parts: list[bytes]) -> list[Message]:
    decoder = EventStreamDecoder()
    out: list[Message] = []
    for part in parts:
        out += decoder.feed(part)
    return out


@PROPERTY
@given(batch=st.lists(messages, min_size=1, max_size=4), cuts=cut_lists)
def test_eventstream_round_trip_in_any_chunking(batch: list[Message], cuts: list[int]) -> None:
    data = b"".join(encode_message(m.headers, m.payload) for m in batch)
    assert _decode(_chunked(data, cuts)) == batch


@PROPERTY
@given(message=messages, bit=st.integers(min_value=0), cuts=cut_lists)
def test_eventstream_any_flipped_bit_is_detected(
    message: Message, bit: int, cuts: list[int]
) -> None:
    frame = bytearray(encode_message(message.headers, message.payload))
    bit %= len(frame) * 8
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(EventStreamError):
        _decode(_chunked(bytes(frame), cuts))


@PROPERTY
@given(data=st.binary(max_size=2048), cuts=cut_lists)
def test_eventstream_garbage_raises_only_eventstream_error(data: bytes, cuts: list[int]) -> None:
    with contextlib.suppress(EventStreamError):
        _decode(_chunked(data, cuts))


# --- router -------------------------------------------------------------------------------------

ROUTER_CONFIG = parse_config(
    {
        "backends": {"b": {"schema": "openai", "url": "http://127.0.0.1:1/v1"}},
        "models": [{"name": "m", "backends": [{"backend": "b"}]}],
    },
    {},
)
bodies = st.one_of(
    st.binary(max_size=256),
    json_values.map(orjson.dumps),
    json_objects.map(lambda d: orjson.dumps({"model": "m", **d})),
)


@PROPERTY
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", ""]),
    path=st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/v1/models"]) | st.text(),
    header_model=st.none() | st.text(max_size=8),
    body=bodies,
)
def test_router_answers_a_4xx_or_routes_with_its_whole_decision(
    method: str, path: str, header_model: str | None, body: bytes
) -> None:
    router = Router(ROUTER_CONFIG)
    headers = {":method": method, ":path": path}
    if header_model is not None:
        headers[MODEL_HEADER] = header_model
    decision = router.on_headers(headers)
    if isinstance(decision, ReadBody):
        decision = asyncio.run(router.on_body(decision, body))
    if isinstance(decision, Respond):
        assert 200 <= decision.status < 500
        if decision.status >= 400:
            _openai_error(decision.body)
    else:
        assert isinstance(decision, Route)
        assert decision.headers[MODEL_HEADER] == decision.state.model
        assert decision.state.path == path
        assert decision.state.request_bytes == len(body)


# --- request translators ------------------------------------------------------------------------


@PROPERTY
@given(body=bodies, model=st.none() | st.text(max_size=8), include_usage=st.booleans())
def test_openai_rewrite_is_a_json_object_or_a_client_error(
    body: bytes, model: str | None, include_usage: bool
) -> None:
    try:
        out = _unless_known(lambda: rewrite_body(body, model, include_usage))
    except GatewayError as err:
        assert _is_client_error(err)
        return
    doc = orjson.loads(out)
    assert isinstance(doc, dict)
    if model is not None:
        assert doc["model"] == model
    if include_usage:
        assert doc["stream_options"]["include_usage"] is True


messages_field = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "x"])},
        optional={
            "content": json_values,
            "tool_calls": json_values,
            "tool_call_id": json_values,
            "name": json_values,
        },
    ),
    max_size=4,
)
chat_requests = st.fixed_dictionaries(
    {"messages": messages_field | json_values},
    optional={rule.name: json_values for rule in CHAT_FIELDS if rule.name != "messages"},
)


@PROPERTY
@given(doc=chat_requests, stream=st.booleans())
def test_bedrock_chat_request_is_a_converse_body_or_a_client_error(
    doc: dict[str, Any], stream: bool
) -> None:
    chat = BedrockChat(_ctx(stream=stream), "/prefix")
    try:
        request = _unless_known(lambda: chat.request(orjson.dumps(doc)))
    except GatewayError as err:
        assert _is_client_error(err)
        return
    converse = orjson.loads(request.body or b"")
    # Only system turns or blank texts would leave `messages` empty: that is a 400 above.
    assert isinstance(converse, dict) and isinstance(converse["messages"], list)
    assert converse["messages"]
    assert request.path.startswith("/prefix/model/m/converse")


@PROPERTY
@given(
    field=st.sampled_from([rule.name for rule in CHAT_FIELDS]),
    value=json_values,
)
def test_every_chat_field_with_any_value_is_handled(field: str, value: Any) -> None:
    """The wrong type in any field is a 4xx naming a parameter, or is ignored: never a 5xx."""
    doc = {"messages": [{"role": "user", "content": "hi"}], field: value}
    chat = BedrockChat(_ctx())
    try:
        _unless_known(lambda: chat.request(orjson.dumps(doc)))
    except GatewayError as err:
        assert _is_client_error(err)


embedding_models = st.sampled_from(
    [
        "amazon.titan-embed-text-v2:0",
        "amazon.titan-embed-text-v1",
        "cohere.embed-english-v3",
        "cohere.embed-v4:0",
        "meta.llama3-8b-instruct-v1:0",
    ]
)
embedding_requests = st.fixed_dictionaries(
    {},
    optional={
        "input": json_values | st.lists(st.text(max_size=8), max_size=4),
        "encoding_format": json_values,
        "dimensions": json_values | st.sampled_from([256, 512, 1024, 1536]),
        "user": json_values,
        "model": json_values,
    },
)


@PROPERTY
@given(doc=embedding_requests | json_objects, model=embedding_models)
def test_bedrock_embeddings_request_or_fan_out_or_client_error(
    doc: dict[str, Any], model: str
) -> None:
    embeddings = BedrockEmbeddings(_ctx("embeddings", model=model))
    body = orjson.dumps(doc)
    try:
        parts = embeddings.fan_out(body)
        requests = parts if parts is not None else [embeddings.request(body)]
    except GatewayError as err:
        assert _is_client_error(err)
        return
    if parts is not None:
        assert len(parts) == len(doc["input"]) >= 2
    for request in requests:
        assert isinstance(orjson.loads(request.body or b""), dict)


# --- response translators -----------------------------------------------------------------------

EVENT_TYPES = [
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
    "futureEvent",
]


@st.composite
def bedrock_events(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["event"] * 6 + ["exception", "error"]))
    if kind == "exception":
        headers: dict[str, HeaderValue] = {
            ":message-type": "exception",
            ":exception-type": draw(st.sampled_from(["throttlingException", "x", ""])),
        }
    elif kind == "error":
        headers = {":message-type": "error", ":error-code": "c", ":error-message": "m"}
    else:
        headers = {":message-type": "event", ":event-type": draw(st.sampled_from(EVENT_TYPES))}
    payload = draw(json_objects.map(orjson.dumps) | st.binary(max_size=32))
    return encode_message(headers, payload)


def _check_sse(out: bytes) -> None:
    for event in out.split(b"\n\n"):
        if event:
            assert event.startswith(b"data: ")
            if event != b"data: [DONE]":
                orjson.loads(event[6:])


REQUEST_VARIANTS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}},
    {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
    {
        "messages": [{"role": "user", "content": "x"}],
        "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "f"}}],
    },
]


@PROPERTY
@given(
    events=st.lists(bedrock_events(), max_size=10),
    tail=st.binary(max_size=24),
    cuts=cut_lists,
    variant=st.sampled_from(REQUEST_VARIANTS),
)
def test_bedrock_stream_becomes_valid_sse_whatever_the_frames(
    events: list[bytes], tail: bytes, cuts: list[int], variant: dict[str, Any]
) -> None:
    chat = BedrockChat(_ctx(stream=True))
    chat.request(orjson.dumps({**variant, "stream": True}))
    head = {"content-type": "application/vnd.amazon.eventstream"}
    chat.response_headers(200, head)
    assert chat.response_body_mode(200, head) == "streamed"
    parts = _chunked(b"".join(events) + tail, cuts)
    out = _unless_known(
        lambda: b"".join(chat.response_body(p, i == len(parts) - 1) for i, p in enumerate(parts))
    )
    _check_sse(out)
    # Exactly one end: [DONE] after a complete answer, or an error event.
    assert out.endswith((b"data: [DONE]\n\n", b"}}\n\n"))


converse_bodies = st.fixed_dictionaries(
    {},
    optional={
        "output": st.fixed_dictionaries(
            {},
            optional={
                "message": st.fixed_dictionaries(
                    {},
                    optional={
                        "content": st.lists(json_objects | json_values, max_size=4) | json_values
                    },
                )
                | json_values
            },
        )
        | json_values,
        "stopReason": json_values,
        "usage": json_objects | json_values,
    },
)


@PROPERTY
@given(
    body=converse_bodies.map(orjson.dumps) | st.binary(max_size=64),
    status=st.sampled_from([200, 400, 403, 404, 408, 424, 429, 500, 503]),
    errortype=st.sampled_from(["", "ValidationException", "ModelErrorException:x"]),
    variant=st.sampled_from(REQUEST_VARIANTS),
)
def test_bedrock_converse_answer_is_one_json_document(
    body: bytes, status: int, errortype: str, variant: dict[str, Any]
) -> None:
    chat = BedrockChat(_ctx())
    chat.request(orjson.dumps(variant))
    head = {"content-type": "application/json", "x-amzn-errortype": errortype}
    chat.response_headers(status, head)
    chat.response_body_mode(status, head)
    try:
        out = _unless_known(lambda: chat.response_body(body, True))
    except GatewayError as err:
        # An unreadable 2xx answer: buffered, so the client gets a 502 in its place.
        assert status < 300 and err.status == 502 and err.code == "bad_upstream_response"
        assert chat.failure == err.code
        _openai_error(err.body())
        return
    doc = orjson.loads(out)
    assert chat.failure is None
    if status >= 300:
        _openai_error(out)
    else:
        assert "choices" in doc


@PROPERTY
@given(
    bodies=st.lists(
        json_objects.map(orjson.dumps) | st.binary(max_size=32), min_size=1, max_size=3
    ),
    statuses=st.lists(st.sampled_from([200, 400, 429, 500]), min_size=3, max_size=3),
    model=st.sampled_from(["amazon.titan-embed-text-v2:0", "cohere.embed-v4:0"]),
)
def test_bedrock_embeddings_merge_is_one_json_document(
    bodies: list[bytes], statuses: list[int], model: str
) -> None:
    embeddings = BedrockEmbeddings(_ctx("embeddings", model=model))
    embeddings.request(orjson.dumps({"input": "x"}))
    replies = [UpstreamReply(s, {}, b) for s, b in zip(statuses, bodies, strict=False)]
    status, out = embeddings.merge(replies)
    doc = orjson.loads(out)
    assert ("data" in doc) == (status == 200)
    # Only an unreadable 2xx part is the translator's failure; a provider error has its status.
    assert embeddings.failure in (None, "bad_upstream_response")
    if embeddings.failure is not None:
        assert status == 502


@PROPERTY
@given(
    body=sse_streams | st.binary(max_size=128),
    sse=st.booleans(),
    stream=st.booleans(),
    include_usage=st.booleans(),
    status=st.sampled_from([200, 400, 500]),
    cuts=cut_lists,
)
def test_pass_through_keeps_json_untouched_and_refuses_only_unreadable_2xx(
    body: bytes, sse: bool, stream: bool, include_usage: bool, status: int, cuts: list[int]
) -> None:
    ctx = _ctx(stream=stream)
    ctx.include_usage = include_usage
    translator = PassThrough(ctx, "/v1/chat/completions")
    head = {"content-type": "text/event-stream" if sse else "application/json"}
    translator.response_headers(status, head)
    mode = translator.response_body_mode(status, head)
    parts = _chunked(body, cuts) if mode == "streamed" else [body]
    try:
        out = b"".join(
            translator.response_body(p, i == len(parts) - 1) for i, p in enumerate(parts)
        )
    except GatewayError as err:
        # Only a buffered 2xx body that is not a JSON object: the client gets a 502 instead.
        assert not sse and status < 300 and err.status == 502
        assert not isinstance(_json_or_none(body), dict)
        assert translator.failure == err.code == "bad_upstream_response"
        return
    if not sse:
        assert out == body
        assert translator.failure is None
    else:
        assert translator.failure in (None, "stream_truncated", "upstream_error")
        assert (translator.failure == "stream_truncated") == (
            status < 300 and not translator.complete
        )
    translator.output_tokens("gpt-4o-mini")


def _json_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


# --- known bugs, pinned -------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    # Written by hand: orjson itself refuses to write this deep.
    return b"[" * depth + b"]" * depth


def test_deep_json_rewrite_is_a_client_error() -> None:
    body = b'{"model": "m", "metadata": ' + _nested(300) + b"}"
    with pytest.raises(GatewayError) as info:
        rewrite_body(body, "other", include_usage=True)
    assert info.value.status == 400


def test_deep_json_to_bedrock_is_a_client_error() -> None:
    tool = b'{"type": "function", "function": {"name": "f", "parameters": {"x": ' + _nested(300)
    body = b'{"messages": [{"role": "user", "content": "hi"}], "tools": [' + tool + b"}}]}"
    with pytest.raises(GatewayError) as info:
        BedrockChat(_ctx()).request(body)
    assert info.value.status == 400


@pytest.mark.parametrize("value", ["text", ["a"], 1])
def test_bedrock_reasoning_text_not_an_object(value: Any) -> None:
    chat = BedrockChat(_ctx())
    chat.request(orjson.dumps(REQUEST_VARIANTS[0]))
    chat.response_headers(200, {"content-type": "application/json"})
    body = {"output": {"message": {"content": [{"reasoningContent": {"reasoningText": value}}]}}}
    orjson.loads(chat.response_body(orjson.dumps(body), True))


@pytest.mark.parametrize("event", ["contentBlockStart", "contentBlockDelta"])
def test_bedrock_stream_block_index_not_a_key(event: str) -> None:
    chat = BedrockChat(_ctx(stream=True))
    chat.request(orjson.dumps({**REQUEST_VARIANTS[3], "stream": True}))
    head = {"content-type": "application/vnd.amazon.eventstream"}
    chat.response_headers(200, head)
    chat.response_body_mode(200, head)
    payload = {
        "contentBlockIndex": [],
        "start": {"toolUse": {"toolUseId": "t", "name": "f"}},
        "delta": {"toolUse": {"input": "{}"}},
    }
    frame = encode_message({":message-type": "event", ":event-type": event}, orjson.dumps(payload))
    _check_sse(chat.response_body(frame, True))


def test_usage_is_never_negative() -> None:
    openai = from_openai({"prompt_tokens": -1000, "completion_tokens": -5})
    assert openai is not None and openai.input_tokens >= 0 and openai.total_tokens >= 0
    chat = BedrockChat(_ctx())
    chat.request(orjson.dumps(REQUEST_VARIANTS[0]))
    chat.response_headers(200, {"content-type": "application/json"})
    body = {
        "output": {"message": {"content": [{"text": "a"}]}},
        "usage": {"inputTokens": True, "outputTokens": -5},
    }
    chat.response_body(orjson.dumps(body), True)
    assert chat.usage is not None
    assert chat.usage.input_tokens == 0 and chat.usage.output_tokens >= 0
