"""Embeddings: InvokeModel requests and answers for Titan and Cohere; Titan batches split into one
call per input and merged back.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest

from extproc.errors import GatewayError
from extproc.translate import FanOut, UpstreamReply
from extproc.translate.bedrock.embeddings import BedrockEmbeddings
from extproc.translate.bedrock.fields import MAX_TITAN_INPUTS
from extproc.usage import Usage
from tests.bedrock_cases import COHERE_V3, TITAN_V2, Json, chat, embeddings
from tests.fakes.openai import vector

# --- embeddings ---------------------------------------------------------------------------------


def embed_request(t: BedrockEmbeddings, doc: Json) -> Json:
    upstream = t.request(orjson.dumps({"model": "my-embed", **doc}))
    assert upstream.path.endswith("/invoke")
    assert upstream.body is not None
    result: Json = orjson.loads(upstream.body)
    return result


def test_embedding_requests() -> None:
    titan = embeddings()
    assert embed_request(titan, {"input": "hello", "dimensions": 256}) == {
        "inputText": "hello",
        "dimensions": 256,
    }
    assert titan.request(orjson.dumps({"input": ["one"]})).path == (
        "/model/amazon.titan-embed-text-v2%3A0/invoke"
    )
    assert embed_request(embeddings("amazon.titan-embed-text-v1"), {"input": ["x"]}) == {
        "inputText": "x"
    }
    assert embed_request(embeddings(COHERE_V3), {"input": ["a", "b"], "dimensions": 1024}) == {
        "texts": ["a", "b"],
        "input_type": "search_document",
        "embedding_types": ["float"],
    }
    assert (
        embed_request(embeddings("us.cohere.embed-v4:0"), {"input": "a", "dimensions": 512})[
            "output_dimension"
        ]
        == 512
    )


@pytest.mark.parametrize(
    ("model", "doc", "param"),
    [
        (TITAN_V2, {"input": ["a", "b"]}, "input"),
        (TITAN_V2, {"input": [1, 2, 3]}, "input[0]"),
        (TITAN_V2, {"input": []}, "input"),
        (TITAN_V2, {"input": "a", "dimensions": 300}, "dimensions"),
        ("amazon.titan-embed-text-v1", {"input": "a", "dimensions": 1024}, "dimensions"),
        (COHERE_V3, {"input": "a", "dimensions": 1536}, "dimensions"),
        (TITAN_V2, {"input": "a", "encoding_format": "int8"}, "encoding_format"),
        (TITAN_V2, {"input": "a", "truncate": "END"}, "truncate"),
        ("meta.llama3-8b-instruct-v1:0", {"input": "a"}, "model"),
    ],
)
def test_embedding_requests_refused(model: str, doc: Json, param: str) -> None:
    with pytest.raises(GatewayError) as raised:
        embeddings(model).request(orjson.dumps(doc))
    assert raised.value.status == 400
    assert raised.value.param == param


def embed_response(t: BedrockEmbeddings, doc: Json, head: dict[str, str]) -> Json:
    assert t.response_body_mode(200, head) == "buffered"
    t.response_headers(200, head)
    result: Json = orjson.loads(t.response_body(orjson.dumps(doc), True))
    return result


def test_titan_response_in_floats_and_base64() -> None:
    values = vector("hello", 4)
    for encoding in ("float", "base64"):
        t = embeddings()
        t.request(orjson.dumps({"input": "hello", "encoding_format": encoding}))
        doc = embed_response(t, {"embedding": values, "inputTextTokenCount": 3}, {})
        item = doc["data"][0]
        if encoding == "base64":
            decoded = struct.unpack("<4f", base64.b64decode(item["embedding"]))
            assert list(decoded) == values
        else:
            assert item["embedding"] == values
        assert doc["object"] == "list"
        assert doc["model"] == "my-embed"
        assert item["object"] == "embedding"
        assert item["index"] == 0
        assert doc["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
        assert t.usage == Usage(input_tokens=3, total_tokens=3)


@pytest.mark.parametrize(
    "bedrock_embeddings",
    [[[0.5, 0.25], [1.0, -1.0]], {"float": [[0.5, 0.25], [1.0, -1.0]]}],
    ids=["floats", "by-type"],
)
def test_cohere_response(bedrock_embeddings: Any) -> None:
    t = embeddings(COHERE_V3)
    t.request(orjson.dumps({"input": ["a", "b"]}))
    doc = embed_response(
        t,
        {"id": "x", "embeddings": bedrock_embeddings, "texts": ["a", "b"]},
        {"x-amzn-bedrock-input-token-count": "9"},
    )
    assert [d["embedding"] for d in doc["data"]] == [[0.5, 0.25], [1.0, -1.0]]
    assert [d["index"] for d in doc["data"]] == [0, 1]
    assert doc["usage"] == {"prompt_tokens": 9, "total_tokens": 9}


@pytest.mark.parametrize("count", ["\u00b2", "9" * 5000, "-3", "1e3"])
def test_a_token_count_header_that_is_no_count_counts_nothing(count: str) -> None:
    t = embeddings(COHERE_V3)
    t.request(orjson.dumps({"input": ["a"]}))
    doc = embed_response(
        t,
        {"id": "x", "embeddings": [[0.5]], "texts": ["a"]},
        {"x-amzn-bedrock-input-token-count": count},
    )
    assert doc["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


@pytest.mark.parametrize(
    ("encoding", "embedding"),
    [
        ("float", [0.5, "x"]),
        ("base64", [0.5, "x"]),
        ("float", {"0": 0.5}),
        ("base64", [1e300]),  # no float32 holds it
    ],
)
def test_a_vector_that_is_not_numbers_is_a_bad_gateway(encoding: str, embedding: Any) -> None:
    t = embeddings()
    t.request(orjson.dumps({"input": "hello", "encoding_format": encoding}))
    t.response_headers(200, {})
    with pytest.raises(GatewayError) as raised:
        t.response_body(orjson.dumps({"embedding": embedding, "inputTextTokenCount": 3}), True)
    assert (raised.value.status, raised.value.code) == (502, "bad_upstream_response")
    assert t.failure == "bad_upstream_response"


# --- Titan batches: split into one call per input, merged back ---------------------------------


def titan_reply(text: str, dims: int = 4, status: int = 200) -> UpstreamReply:
    doc = {"embedding": vector(text, dims), "inputTextTokenCount": len(text.split())}
    return UpstreamReply(status, {"content-type": "application/json"}, orjson.dumps(doc))


def aws_reply(status: int, kind: str, message: str) -> UpstreamReply:
    head = {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    return UpstreamReply(status, head, orjson.dumps({"message": message}))


def test_only_embeddings_translators_fan_out() -> None:
    assert isinstance(embeddings(), FanOut)
    assert not isinstance(chat(), FanOut)


def test_a_titan_batch_is_refused_to_a_caller_that_cannot_fan_out() -> None:
    with pytest.raises(GatewayError, match="one input per request") as raised:
        embeddings().request(orjson.dumps({"input": ["a", "b"]}))
    assert raised.value.status == 400


def test_titan_batch_is_one_request_per_input() -> None:
    t = embeddings()
    parts = t.fan_out(orjson.dumps({"input": ["a", "b c", "d"], "dimensions": 256}))
    assert parts is not None
    assert [orjson.loads(p.body or b"") for p in parts] == [
        {"inputText": "a", "dimensions": 256},
        {"inputText": "b c", "dimensions": 256},
        {"inputText": "d", "dimensions": 256},
    ]
    assert {p.path for p in parts} == {"/model/amazon.titan-embed-text-v2%3A0/invoke"}
    json_head = {"content-type": "application/json", "accept": "application/json"}
    assert all(p.headers == json_head for p in parts)
    # Each part is its own request object: each is signed on its own.
    assert len({id(p.headers) for p in parts}) == 3


@pytest.mark.parametrize(
    ("model", "doc"),
    [
        (TITAN_V2, {"input": "one"}),
        (TITAN_V2, {"input": ["one"]}),
        (COHERE_V3, {"input": ["a", "b", "c"]}),
    ],
)
def test_one_call_needs_no_fan_out(model: str, doc: Json) -> None:
    assert embeddings(model).fan_out(orjson.dumps(doc)) is None


def test_a_titan_batch_has_a_maximum() -> None:
    at_most = [f"text {i}" for i in range(MAX_TITAN_INPUTS)]
    parts = embeddings().fan_out(orjson.dumps({"input": at_most}))
    assert parts is not None and len(parts) == MAX_TITAN_INPUTS
    with pytest.raises(GatewayError) as raised:
        embeddings().fan_out(orjson.dumps({"input": [*at_most, "one more"]}))
    error = raised.value
    assert (error.status, error.param, error.code) == (400, "input", "too_many_inputs")
    assert str(MAX_TITAN_INPUTS) in error.message and str(MAX_TITAN_INPUTS + 1) in error.message


def test_fan_out_refuses_bad_input_like_request() -> None:
    with pytest.raises(GatewayError) as raised:
        embeddings().fan_out(orjson.dumps({"input": ["a", "b"], "dimensions": 300}))
    assert raised.value.status == 400 and raised.value.param == "dimensions"


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_merge_keeps_input_order_and_sums_usage(encoding: str) -> None:
    t = embeddings()
    texts = ["first input", "second", "third one here"]
    t.fan_out(orjson.dumps({"input": texts, "encoding_format": encoding}))
    # The last reply counts its tokens in the header only, as InvokeModel may.
    last = UpstreamReply(
        200,
        {"x-amzn-bedrock-input-token-count": "3"},
        orjson.dumps({"embedding": vector(texts[2], 4)}),
    )
    status, body = t.merge([titan_reply(texts[0]), titan_reply(texts[1]), last])
    assert status == 200
    doc = orjson.loads(body)
    assert doc["object"] == "list" and doc["model"] == "my-embed"
    assert [item["index"] for item in doc["data"]] == [0, 1, 2]
    for item, text in zip(doc["data"], texts, strict=True):
        got = item["embedding"]
        if encoding == "base64":
            got = list(struct.unpack("<4f", base64.b64decode(got)))
        assert got == vector(text, 4)
    assert doc["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    assert t.usage == Usage(input_tokens=6, total_tokens=6)


@pytest.mark.parametrize(
    ("failure", "status", "error_type"),
    [
        (aws_reply(429, "ThrottlingException", "Slow down"), 429, "rate_limit_error"),
        (aws_reply(400, "ServiceQuotaExceededException", "Quota"), 429, "rate_limit_error"),
        (aws_reply(400, "ValidationException", "Bad input"), 400, "invalid_request_error"),
        (aws_reply(424, "ModelErrorException", "Model broke"), 502, "upstream_error"),
    ],
)
def test_a_failed_part_is_the_answer(failure: UpstreamReply, status: int, error_type: str) -> None:
    t = embeddings()
    t.fan_out(orjson.dumps({"input": ["a b", "c", "d"]}))
    got_status, body = t.merge([titan_reply("a b"), failure, titan_reply("d")])
    assert got_status == status
    error = orjson.loads(body)["error"]
    assert error["type"] == error_type
    assert error["message"] == orjson.loads(failure.body)["message"]
    assert error["code"] == failure.headers["x-amzn-errortype"].partition(":")[0]
    # The parts that succeeded are billed all the same.
    assert t.usage == Usage(input_tokens=3, total_tokens=3)


def test_the_first_failure_in_input_order_answers() -> None:
    t = embeddings()
    t.fan_out(orjson.dumps({"input": ["a", "b", "c"]}))
    status, body = t.merge(
        [
            aws_reply(400, "ValidationException", "Bad input"),
            aws_reply(429, "ThrottlingException", "Slow down"),
        ]
    )
    assert status == 400 and orjson.loads(body)["error"]["message"] == "Bad input"
    assert t.usage is None


def test_an_unreadable_part_is_a_bad_gateway() -> None:
    t = embeddings()
    t.fan_out(orjson.dumps({"input": ["a", "b"]}))
    assert t.failure is None
    status, body = t.merge([titan_reply("a"), UpstreamReply(200, {}, b"<html>")])
    assert status == 502
    error = orjson.loads(body)["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "bad_upstream_response")
    assert t.failure == "bad_upstream_response"


def test_a_merged_answer_or_provider_error_is_no_translator_failure() -> None:
    t = embeddings()
    t.fan_out(orjson.dumps({"input": ["a", "b"]}))
    assert t.merge([titan_reply("a"), titan_reply("b")])[0] == 200
    assert t.failure is None and t.complete
    t = embeddings()
    t.fan_out(orjson.dumps({"input": ["a", "b"]}))
    failed = aws_reply(429, "ThrottlingException", "Slow down")
    assert t.merge([titan_reply("a"), failed])[0] == 429
    assert t.failure is None  # the status tells it


# --- model ids that name no model (ARNs) --------------------------------------------------------

PROVISIONED = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123def456"


def test_an_arn_with_a_declared_family_is_served_in_that_family() -> None:
    titan = embeddings(PROVISIONED, family="titan")
    assert embed_request(titan, {"input": "hello", "dimensions": 512}) == {
        "inputText": "hello",
        "dimensions": 512,
    }
    assert titan.request(orjson.dumps({"input": "x"})).path == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fabc123def456"
        "/invoke"
    )
    cohere = embeddings(PROVISIONED, family="cohere")
    assert embed_request(cohere, {"input": ["a", "b"]})["texts"] == ["a", "b"]
    assert isinstance(titan, FanOut) and titan.fan_out(orjson.dumps({"input": ["a", "b"]}))


def test_an_arn_without_a_family_or_of_a_chat_family_is_refused() -> None:
    for t in (embeddings(PROVISIONED), embeddings(PROVISIONED, family="claude")):
        with pytest.raises(GatewayError) as raised:
            t.request(orjson.dumps({"input": "x"}))
        assert raised.value.param == "model" and "not a supported embeddings" in str(
            raised.value.message
        )
