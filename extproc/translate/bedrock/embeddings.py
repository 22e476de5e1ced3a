"""``/v1/embeddings`` on Bedrock: InvokeModel on Amazon Titan Text Embeddings or Cohere Embed,
a Titan batch split into one call per input (:meth:`BedrockEmbeddings.fan_out`) and merged."""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from extproc.bedrockmodels import Family
from extproc.errors import bad_request
from extproc.translate import (
    BAD_UPSTREAM_RESPONSE,
    RequestContext,
    UpstreamReply,
    UpstreamRequest,
    bad_upstream_response,
    dump_json,
    json_object,
)
from extproc.translate.bedrock.buffered import (
    JSON,
    UNREADABLE,
    BedrockTranslator,
    Unreadable,
    parse_upstream,
)
from extproc.translate.bedrock.errors import client_status, error_kind, openai_error_body
from extproc.translate.bedrock.fields import (
    EMBEDDINGS_RULES,
    MAX_TITAN_INPUTS,
    check_fields,
    positive_int,
)
from extproc.usage import Usage

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _EmbeddingModel:
    marker: str  # found in the model id, which may carry a region prefix or be an ARN
    family: Literal["titan", "cohere"]
    # The sizes the model can return; None: not known here (an ARN), Bedrock checks the size.
    dimensions: tuple[int, ...] | None
    dimensions_field: str | None  # the request field choosing one; None: fixed size


# Ordered: the first marker found in the model id wins.
_EMBEDDING_MODELS = (
    _EmbeddingModel("amazon.titan-embed-text-v2", "titan", (256, 512, 1024), "dimensions"),
    _EmbeddingModel("amazon.titan-embed-text-v1", "titan", (1536,), None),
    _EmbeddingModel("amazon.titan-embed-g1-text", "titan", (1536,), None),
    _EmbeddingModel("cohere.embed-v4", "cohere", (256, 512, 1024, 1536), "output_dimension"),
    _EmbeddingModel("cohere.embed-", "cohere", (1024,), None),
)
# A model id that names no model (a provisioned-throughput or inference-profile ARN) whose route
# declares its family: the family's request shape, the size left to Bedrock to check.
_DECLARED = {
    "titan": _EmbeddingModel("", "titan", None, "dimensions"),
    "cohere": _EmbeddingModel("", "cohere", None, "output_dimension"),
}
_INPUT_COUNT_HEADER = "x-amzn-bedrock-input-token-count"


def _embedding_model(model_id: str, family: Family | None) -> _EmbeddingModel:
    for model in _EMBEDDING_MODELS:
        if model.marker in model_id:
            return model
    if family in _DECLARED:
        return _DECLARED[family]
    raise bad_request(
        f"Bedrock model {model_id!r} is not a supported embeddings model (Amazon Titan Text"
        " Embeddings or Cohere Embed).",
        "model",
    )


def _embedding_texts(raw: Any) -> list[str]:
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise bad_request("'input' must be a non-empty string or array of strings.", "input")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise bad_request(
                "Bedrock embeddings models take text: token arrays are not supported.",
                f"input[{i}]" if isinstance(raw, list) else "input",
            )
    return texts


def _packed(values: Any, kind: str) -> bytes | None:
    """A vector as packed floats (``f`` 32-bit, ``d`` 64-bit); None unless it is a list of
    numbers that fit: a provider's vector is checked as fast as it is encoded."""
    if not isinstance(values, list):
        return None
    try:
        return struct.pack(f"<{len(values)}{kind}", *values)
    except (struct.error, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class _EmbeddingsRequest:
    """An OpenAI embeddings request, checked against the Bedrock model it goes to."""

    model: _EmbeddingModel
    texts: list[str]
    dimensions: int | None
    base64: bool


def _embeddings_request(
    body: bytes | None, model_id: str, family: Family | None
) -> _EmbeddingsRequest:
    doc = json_object(body)
    check_fields(doc, EMBEDDINGS_RULES)
    model = _embedding_model(model_id, family)
    texts = _embedding_texts(doc.get("input"))
    encoding = doc.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    dimensions = positive_int(doc, "dimensions")
    if dimensions is not None and model.dimensions and dimensions not in model.dimensions:
        sizes = ", ".join(map(str, model.dimensions))
        raise bad_request(f"'dimensions' must be one of {sizes} for {model_id}.", "dimensions")
    return _EmbeddingsRequest(model, texts, dimensions, encoding == "base64")


class BedrockEmbeddings(BedrockTranslator):
    """``/v1/embeddings`` -> InvokeModel on Amazon Titan Text Embeddings or Cohere Embed.

    Titan embeds one text per call, so a Titan batch is a :class:`~extproc.translate.FanOut`:
    one InvokeModel request per input, merged back into one OpenAI response.
    """

    def __init__(self, ctx: RequestContext, prefix: str = "") -> None:
        super().__init__(ctx, prefix)
        self._family: Literal["titan", "cohere"] = "titan"
        self._base64 = False

    def request(self, body: bytes | None) -> UpstreamRequest:
        read = self._read(body)
        if read.model.family == "cohere":
            invoke: Json = {
                "texts": read.texts,
                "input_type": "search_document",
                "embedding_types": ["float"],
            }
        elif len(read.texts) == 1:
            invoke = {"inputText": read.texts[0]}
        else:
            # One call cannot carry a Titan batch: the upstream stage sends it through fan_out(),
            # only a caller that cannot fan out gets here.
            raise bad_request(
                f"{self._ctx.upstream_model} embeds one input per request on Bedrock: send"
                " the inputs one by one, or use a Cohere Embed model for batches.",
                "input",
            )
        return self._invoke(invoke, read)

    def fan_out(self, body: bytes) -> list[UpstreamRequest] | None:
        read = self._read(body)
        if read.model.family != "titan" or len(read.texts) == 1:
            return None
        if len(read.texts) > MAX_TITAN_INPUTS:
            # Each input is a signed call of the sidecar's own: a batch must not turn one
            # request into thousands of them (nor outlast sidecar.message_timeout).
            raise bad_request(
                f"Amazon Titan embeds one input per call; the gateway sends at most"
                f" {MAX_TITAN_INPUTS} inputs of one request ({len(read.texts)} given):"
                " split the batch.",
                "input",
                "too_many_inputs",
            )
        return [self._invoke({"inputText": text}, read) for text in read.texts]

    def merge(self, replies: Sequence[UpstreamReply]) -> tuple[int, bytes]:
        self._ended = True
        vectors: list[Any] = []
        tokens = 0
        failure: tuple[int, bytes] | None = None
        for reply in replies:
            if 200 <= reply.status < 300:
                try:
                    embedded, count = self._vectors(reply.body, reply.headers)
                except Unreadable:
                    # Unlike a forwarded response, no status has left yet: a proper 502.
                    if failure is None:
                        self._failure = BAD_UPSTREAM_RESPONSE
                        failure = (502, bad_upstream_response(UNREADABLE).body())
                    continue
                vectors += embedded
                tokens += count
            elif failure is None:
                kind = error_kind(reply.headers)
                failure = (
                    client_status(kind, reply.status),
                    openai_error_body(kind, reply.status, reply.body),
                )
        if failure is None:
            return 200, self._answer(vectors, tokens)
        if vectors:
            self._usage = Usage(input_tokens=tokens, total_tokens=tokens)
        return failure

    def _read(self, body: bytes | None) -> _EmbeddingsRequest:
        read = _embeddings_request(body, self._ctx.upstream_model, self.family)
        self._family = read.model.family
        self._base64 = read.base64
        return read

    def _invoke(self, invoke: Json, read: _EmbeddingsRequest) -> UpstreamRequest:
        if read.dimensions is not None and read.model.dimensions_field is not None:
            invoke[read.model.dimensions_field] = read.dimensions
        return UpstreamRequest(
            path=self._path("invoke"),
            body=dump_json(invoke),
            headers={"content-type": JSON, "accept": JSON},
        )

    def _translate(self, body: bytes) -> bytes:
        return self._answer(*self._vectors(body, self._head))

    def _vectors(self, body: bytes, head: Mapping[str, str]) -> tuple[list[Any], int]:
        """The vectors (as the client asked them encoded) and the input token count of one 2xx
        InvokeModel response."""
        doc = parse_upstream(body)
        if self._family == "titan":
            vectors: Any = [doc.get("embedding")]
            tokens = doc.get("inputTextTokenCount")
        else:
            vectors = doc.get("embeddings")
            if isinstance(vectors, dict):  # response_type "embeddings_by_type"
                vectors = vectors.get("float")
            tokens = None
        if not isinstance(tokens, int):
            header = head.get(_INPUT_COUNT_HEADER, "")
            # ASCII and short: int() refuses other digits ("²") and more than 4300 of them.
            tokens = (
                int(header) if header.isascii() and header.isdigit() and len(header) < 19 else 0
            )
        if not isinstance(vectors, list):
            raise Unreadable
        encoded: list[Any] = []
        for vector in vectors:
            raw = _packed(vector, "f" if self._base64 else "d")
            if raw is None:
                raise Unreadable
            # OpenAI's base64 encoding: little-endian float32, what the SDKs decode.
            encoded.append(base64.b64encode(raw).decode() if self._base64 else vector)
        return encoded, tokens

    def _answer(self, vectors: list[Any], tokens: int) -> bytes:
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": vector,
            }
            for index, vector in enumerate(vectors)
        ]
        self._usage = Usage(input_tokens=tokens, total_tokens=tokens)
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": self._ctx.route_model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
