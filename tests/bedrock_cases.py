"""What the Bedrock translator tests share: the models, a tool, a schema, translators for a
context, and what an OpenAI client assembles from stream chunks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam
from pydantic import BaseModel

from extproc.config import ModelBackend
from extproc.errors import GatewayError
from extproc.translate import RequestContext
from extproc.translate.bedrock.chat import BedrockChat
from extproc.translate.bedrock.embeddings import BedrockEmbeddings
from tests.fakes.bedrock import RECORDING

Json = dict[str, Any]

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TITAN_V2 = "amazon.titan-embed-text-v2:0"
COHERE_V3 = "cohere.embed-english-v3"
EXPECTED = orjson.loads((RECORDING.parent / f"{RECORDING.stem}.expected.json").read_bytes())
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
COSINE_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "cosine",
        "description": "Cosine of x",
        "parameters": {"type": "object", "properties": {"x": {"type": "number"}}},
    },
}
HEAD = {"content-type": "application/json", "x-amzn-requestid": "req-1"}
STREAM_HEAD = {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "req-1"}


def chat(upstream_model: str = CLAUDE, **settings: Any) -> BedrockChat:
    """``settings``: the route entry's keys (``family``, ``guardrail``...)."""
    ctx = RequestContext("chat", "my-model", upstream_model, "my-model", "/v1/chat/completions")
    ctx.settings = ModelBackend(backend="bedrock", model=upstream_model, **settings)
    return BedrockChat(ctx)


def embeddings(upstream_model: str = TITAN_V2, **settings: Any) -> BedrockEmbeddings:
    ctx = RequestContext("embeddings", "my-embed", upstream_model, "my-embed", "/v1/embeddings")
    ctx.settings = ModelBackend(backend="bedrock", model=upstream_model, **settings)
    return BedrockEmbeddings(ctx)


def converse(doc: Json, t: BedrockChat | None = None) -> Json:
    """The Converse body for an OpenAI chat body (``model`` and ``messages`` defaulted)."""
    body = {"model": "my-model", "messages": [{"role": "user", "content": "hi"}], **doc}
    upstream = (t or chat()).request(orjson.dumps(body))
    assert upstream.body is not None
    result: Json = orjson.loads(upstream.body)
    return result


def rejected(doc: Json, t: BedrockChat | BedrockEmbeddings | None = None) -> GatewayError:
    body = {"model": "my-model", "messages": [{"role": "user", "content": "hi"}], **doc}
    with pytest.raises(GatewayError) as raised:
        (t or chat()).request(orjson.dumps(body))
    assert raised.value.status == 400
    return raised.value


class Weather(BaseModel):
    city: str
    celsius: float


SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "Weather", "schema": Weather.model_json_schema(), "strict": True},
}


def accumulate(chunks: list[Json]) -> Json:
    """What an OpenAI client assembles from the chunks."""
    content = ""
    calls: dict[int, Json] = {}
    finish = None
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                if call.get("id"):
                    calls[call["index"]] = {**call, "function": dict(call["function"])}
                else:
                    calls[call["index"]]["function"]["arguments"] += call["function"]["arguments"]
            finish = choice["finish_reason"] or finish
    return {
        "content": content,
        "tool_calls": list(calls.values()),
        "finish_reason": finish,
        "usage": usage,
    }
