"""The Bedrock request translators (translate/bedrock/: chat, Responses, embeddings): any client
body.

Invariants: the only exception is a 4xx :class:`GatewayError`; every upstream request carries a
JSON object body and a path under ``/model/<quoted id>/``; a Titan batch fans out into one
request per input.
"""

from __future__ import annotations

import atheris
import orjson
from _common import argv, guard, json_object

with atheris.instrument_imports():
    from extproc.endpoints import Operation
    from extproc.errors import GatewayError
    from extproc.translate import RequestContext, UpstreamRequest
    from extproc.translate.bedrock.chat import BedrockChat
    from extproc.translate.bedrock.embeddings import BedrockEmbeddings
    from extproc.translate.bedrock.responses import BedrockResponses

CHAT_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
EMBEDDING_MODELS = [
    "amazon.titan-embed-text-v2:0",
    "amazon.titan-embed-text-v1",
    "cohere.embed-english-v3",
    "cohere.embed-v4:0",
    "meta.llama3-8b-instruct-v1:0",
]


_PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}


def _context(endpoint: Operation, model: str, stream: bool) -> RequestContext:
    return RequestContext(
        endpoint=endpoint,
        route_model="client-model",
        upstream_model=model,
        body_model="client-model",
        path=_PATHS.get(endpoint, "/v1/embeddings"),
        stream=stream,
    )


def _check_request(request: UpstreamRequest) -> None:
    if not request.path.startswith("/model/"):
        raise AssertionError(f"path {request.path!r}")
    if request.body is None or not isinstance(orjson.loads(request.body), dict):
        raise AssertionError("upstream body is not a JSON object")


def _client_error(err: GatewayError) -> None:
    if not 400 <= err.status < 500 or not err.message:
        raise AssertionError(f"GatewayError {err.status}: {err.message!r}")


def check(data: bytes) -> None:
    # data[0]: which translator; data[1]: stream; data[2]: the rest is the body as is, or the
    # seed of a generated JSON document.
    head = data[:3].ljust(3, b"\0")
    which = head[0] % (len(EMBEDDING_MODELS) + 2)
    stream = bool(head[1] & 1)
    rest = data[3:]
    body = rest if head[2] & 1 else json_object(atheris.FuzzedDataProvider(rest))
    if which >= len(EMBEDDING_MODELS):
        endpoint: Operation = "chat" if which == len(EMBEDDING_MODELS) else "responses"
        ctx = _context(endpoint, CHAT_MODEL, stream)
        translator = BedrockChat(ctx) if endpoint == "chat" else BedrockResponses(ctx)
        try:
            _check_request(translator.request(body))
        except GatewayError as err:
            _client_error(err)
        return
    embeddings = BedrockEmbeddings(_context("embeddings", EMBEDDING_MODELS[which], False))
    try:
        parts = embeddings.fan_out(body)
    except GatewayError as err:
        _client_error(err)
        return
    if parts is not None:
        texts = orjson.loads(body)["input"]
        if len(parts) != len(texts) or len(parts) < 2:
            raise AssertionError("a Titan batch must fan out into one request per input")
        for part in parts:
            _check_request(part)
        return
    try:
        _check_request(embeddings.request(body))
    except GatewayError as err:
        _client_error(err)


def main() -> None:
    atheris.Setup(argv(), guard("request", check))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
