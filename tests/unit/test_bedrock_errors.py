"""Bedrock's errors -> OpenAI's, and 2xx answers the gateway cannot read (buffered: a 502)."""

from __future__ import annotations

import orjson
import pytest

from extproc.errors import GatewayError
from extproc.translate.bedrock.chat import BedrockChat
from tests.bedrock_cases import COHERE_V3, HEAD, Json, chat, converse, embeddings


@pytest.mark.parametrize("body", [b"<html>", b"[]", b'{"embeddings": "none"}'])
def test_unreadable_success_body_is_a_502(body: bytes) -> None:
    chat_translator = chat()
    converse({}, chat_translator)
    embeddings_translator = embeddings(COHERE_V3)
    embeddings_translator.request(b'{"input": "x"}')
    for t in (chat_translator, embeddings_translator):
        assert t.response_body_mode(200, HEAD) == "buffered"
        t.response_headers(200, HEAD)
        assert t.failure is None
        # The body is buffered: its head has not left, so the whole answer can be a 502.
        with pytest.raises(GatewayError) as raised:
            t.response_body(body, True)
        error = raised.value
        assert (error.status, error.type, error.code) == (
            502,
            "upstream_error",
            "bad_upstream_response",
        )
        assert t.failure == "bad_upstream_response"


@pytest.mark.parametrize("status", [400, 429, 500])
def test_provider_errors_are_no_translator_failure(status: int) -> None:
    """A provider error is told by its status: ``failure`` is for 2xx answers gone wrong."""
    t = chat()
    converse({}, t)
    head = {**HEAD, "x-amzn-errortype": "ValidationException"}
    t.response_body_mode(status, head)
    t.response_headers(status, head)
    orjson.loads(t.response_body(b"<html>not json</html>", True))
    assert t.failure is None and t.complete


@pytest.mark.parametrize(
    ("status", "kind", "body", "expected_status", "expected_type"),
    [
        (400, "ValidationException", {"message": "Bad input"}, 400, "invalid_request_error"),
        (403, "AccessDeniedException", {"message": "Denied"}, 403, "permission_error"),
        (403, "UnrecognizedClientException", {"Message": "Bad token"}, 403, "authentication_error"),
        (404, "ResourceNotFoundException", {"message": "No model"}, 404, "not_found_error"),
        (429, "ThrottlingException", {"message": "Slow down"}, 429, "rate_limit_error"),
        (400, "ServiceQuotaExceededException", {"message": "Quota"}, 429, "rate_limit_error"),
        (424, "ModelErrorException", {"message": "Model broke"}, 502, "upstream_error"),
        (408, "ModelTimeoutException", {"message": "Too slow"}, 504, "upstream_error"),
        (500, "InternalServerException", {"message": "Oops"}, 500, "server_error"),
        (503, "ServiceUnavailableException", {"message": "Later"}, 503, "server_error"),
        (502, "", {"message": "Bad gateway"}, 502, "server_error"),
    ],
)
def test_bedrock_errors_become_openai_errors(
    status: int, kind: str, body: Json, expected_status: int, expected_type: str
) -> None:
    head = {"content-type": "application/json"}
    if kind:
        head["x-amzn-errortype"] = f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    for t in (chat(), embeddings()):
        if isinstance(t, BedrockChat):
            converse({"stream": True}, t)  # a failed stream is answered in JSON too
        assert t.response_body_mode(status, head) == "buffered"
        response_head = t.response_headers(status, head)
        assert response_head.status == (expected_status if expected_status != status else None)
        assert response_head.set["content-type"] == "application/json"
        error = orjson.loads(t.response_body(orjson.dumps(body), True))["error"]
        assert error == {
            "message": next(iter(body.values())),
            "type": expected_type,
            "param": None,
            "code": kind or None,
        }


def test_error_body_that_is_not_json() -> None:
    t = chat()
    t.response_headers(500, {})
    error = orjson.loads(t.response_body(b"upstream connect error", True))["error"]
    assert error["message"] == "upstream connect error"
    assert error["type"] == "server_error"
