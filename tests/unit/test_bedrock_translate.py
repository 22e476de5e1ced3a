"""OpenAI <-> Bedrock translation: request shapes, responses, streams, errors, embeddings.

The SDK part runs the official OpenAI SDK against the translators and SigV4 wired together the
way the upstream stage wires them (no Envoy), in front of the signature-checking FakeBedrock.
The last parts split and merge Titan batches, and send the parts with the fan-out client.
"""

from __future__ import annotations

import asyncio
import base64
import random
import socket
import ssl
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
import trustme
import yarl
from aiohttp import web
from openai.types import embedding_create_params
from openai.types.chat import ChatCompletionFunctionToolParam, completion_create_params
from pydantic import BaseModel

from extproc.auth.sigv4 import SigV4
from extproc.backends import BackendRuntime, build_backends
from extproc.config import AWSBedrockBackend, GatewayConfig
from extproc.errors import GatewayError
from extproc.eventstream import encode_message
from extproc.fanout import FanOutClient
from extproc.translate import FanOut, RequestContext, Translator, UpstreamReply
from extproc.translate.bedrock import translator
from extproc.translate.bedrock.chat import BedrockChat
from extproc.translate.bedrock.embeddings import BedrockEmbeddings
from extproc.translate.bedrock.fields import (
    CHAT_FIELDS,
    EMBEDDINGS_FIELDS,
    MAX_TITAN_INPUTS,
    fields_markdown,
)
from extproc.usage import Usage
from tests.fakes.bedrock import (
    CONFORMANCE,
    INVALID,
    RECORDED_MODEL,
    RECORDING,
    STREAM_ERROR,
    STREAM_THROTTLE,
    THROTTLE,
    THROTTLED_MODEL,
    FakeBedrock,
    event_frame,
    exception_frame,
)
from tests.fakes.openai import vector
from tests.fakes.server import FakeServer

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


def chat(upstream_model: str = CLAUDE) -> BedrockChat:
    ctx = RequestContext("chat", "my-model", upstream_model, "my-model", "/v1/chat/completions")
    return BedrockChat(ctx)


def embeddings(upstream_model: str = TITAN_V2) -> BedrockEmbeddings:
    ctx = RequestContext("embeddings", "my-embed", upstream_model, "my-embed", "/v1/embeddings")
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


# --- the field table ----------------------------------------------------------------------------


def test_every_openai_chat_field_has_a_rule() -> None:
    openai_fields = set(completion_create_params.CompletionCreateParamsBase.__annotations__)
    assert openai_fields | {"stream"} <= {rule.name for rule in CHAT_FIELDS}
    assert set(embedding_create_params.EmbeddingCreateParams.__annotations__) <= {
        rule.name for rule in EMBEDDINGS_FIELDS
    }


def test_markdown_table_lists_every_field() -> None:
    table = fields_markdown()
    assert table.startswith("| Field | Handling | Notes |\n|---|---|---|\n")
    for rule in CHAT_FIELDS:
        assert f"| `{rule.name}` | {rule.disposition} |" in table
    assert "`dimensions`" in fields_markdown(EMBEDDINGS_FIELDS)


IGNORED_VALUES: Json = {
    "user": "u-1",
    "safety_identifier": "s-1",
    "metadata": {"k": "v"},
    "store": True,
    "service_tier": "flex",
    "prompt_cache_key": "k",
    "prompt_cache_options": {"ttl": "30m"},
    "prompt_cache_retention": "24h",
}
REJECTED_VALUES: Json = {
    "n": 2,
    "logprobs": True,
    "top_logprobs": 3,
    "logit_bias": {"50256": -100},
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "seed": 42,
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "x"},
    "web_search_options": {},
    "reasoning_effort": "high",
    "verbosity": "low",
    "moderation": {"model": "omni-moderation-latest"},
    "functions": [{"name": "f"}],
    "function_call": "auto",
}
HARMLESS_VALUES: Json = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": 0,
    "logit_bias": {},
    "presence_penalty": 0,
    "frequency_penalty": 0.0,
    "modalities": ["text"],
    "reasoning_effort": "none",
    "verbosity": "medium",
}


def test_value_tables_cover_the_rules() -> None:
    assert set(IGNORED_VALUES) == {r.name for r in CHAT_FIELDS if r.disposition == "ignored"}
    assert set(REJECTED_VALUES) == {r.name for r in CHAT_FIELDS if r.disposition == "rejected"}


def test_ignored_fields_pass_and_change_nothing() -> None:
    assert converse(IGNORED_VALUES) == converse({})


@pytest.mark.parametrize(("field", "value"), REJECTED_VALUES.items())
def test_rejected_fields_name_the_parameter(field: str, value: Any) -> None:
    error = rejected({field: value})
    assert error.param == field
    assert error.code == "unsupported_parameter"
    assert field in error.message


def test_default_values_of_rejected_fields_and_nulls_pass() -> None:
    assert converse(HARMLESS_VALUES) == converse({})
    assert converse(dict.fromkeys(REJECTED_VALUES)) == converse({})


def test_unknown_fields_are_refused_by_name() -> None:
    error = rejected({"temperatur": 0.5, "zzz": 1})
    assert error.param == "temperatur"
    assert "temperatur, zzz" in error.message


# --- chat requests ------------------------------------------------------------------------------


def test_path_headers_and_encoded_model_id() -> None:
    t = chat()
    upstream = t.request(
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    )
    assert upstream.path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert upstream.headers == {"content-type": "application/json", "accept": "application/json"}
    assert t.needs_request_body
    streaming = chat("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x-v1:0")
    upstream = streaming.request(
        orjson.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    )
    assert upstream.path == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.x-v1%3A0"
        "/converse-stream"
    )
    assert upstream.headers["accept"] == "application/vnd.amazon.eventstream"


def test_messages_become_alternating_converse_turns() -> None:
    body = converse(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
                {"role": "user", "content": "Hello"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "cosine", "arguments": '{"x": 7}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "cosine", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "0.75"},
                {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": ""}]},
                {"role": "user", "content": "Thanks"},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
            ],
            "tools": [COSINE_TOOL],
        }
    )
    assert body["system"] == [{"text": "Be brief."}, {"text": "Use metric."}]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"text": "Hello"},
                {"text": "What is this?"},
                {"image": {"format": "png", "source": {"bytes": PNG.split(",", 1)[1]}}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "c1", "name": "cosine", "input": {"x": 7}}},
                {"toolUse": {"toolUseId": "c2", "name": "cosine", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "c1", "content": [{"text": "0.75"}]}},
                {"toolResult": {"toolUseId": "c2", "content": [{"text": "(no output)"}]}},
                {"text": "Thanks"},
            ],
        },
        {"role": "assistant", "content": [{"text": "No."}]},
    ]
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "cosine",
                    "description": "Cosine of x",
                    "inputSchema": {"json": COSINE_TOOL["function"].get("parameters")},
                }
            }
        ]
    }


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://example.com/cat.png", "does not fetch"),
        ("data:image/tiff;base64,AAAA", "PNG, JPEG, GIF or WebP"),
        ("data:image/png,rawbytes", "PNG, JPEG, GIF or WebP"),
        ("file:///etc/passwd", "PNG, JPEG, GIF or WebP"),
    ],
)
def test_images_must_be_inline(url: str, fragment: str) -> None:
    part = {"type": "image_url", "image_url": {"url": url}}
    error = rejected({"messages": [{"role": "user", "content": [part]}]})
    assert fragment in error.message
    assert error.param == "messages[0].content[0].image_url.url"


def test_jpg_data_uri_is_jpeg() -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/"}}
    body = converse({"messages": [{"role": "user", "content": [part]}]})
    assert body["messages"][0]["content"] == [
        {"image": {"format": "jpeg", "source": {"bytes": "/9j/"}}}
    ]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{x"}}
                ],
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ],
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"role": "user", "content": [{"type": "input_audio"}]}, "messages[1].content[0].type"),
        ({"role": "function", "content": "x", "name": "f"}, "messages[1].role"),
        ({"role": "tool", "content": "x"}, "messages[1].tool_call_id"),
        (
            {"role": "assistant", "content": "x", "function_call": {"name": "f"}},
            "messages[1].function_call",
        ),
    ],
)
def test_bad_messages_are_refused_by_path(message: Json, param: str) -> None:
    error = rejected({"messages": [{"role": "user", "content": "hi"}, message]})
    assert error.param == param


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "Be brief."}],
        [{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Really."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  "}],
    ],
    ids=["system", "system-and-developer", "system-and-blank-user"],
)
def test_messages_without_a_turn_are_refused(messages: list[Json]) -> None:
    """Converse refuses an empty ``messages``: the client gets a 400 naming the field, not
    Bedrock's own error after a provider call."""
    error = rejected({"messages": messages})
    assert error.param == "messages"
    assert "system" in error.message


HISTORY = [
    {"role": "user", "content": "cos 7?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "cosine", "arguments": '{"x":7}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "0.7539"},
]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "cosine"}}, {"tool": {"name": "cosine"}}),
    ],
)
def test_tool_choice(choice: Any, expected: Json | None) -> None:
    config = converse({"messages": HISTORY, "tools": [COSINE_TOOL], "tool_choice": choice})[
        "toolConfig"
    ]
    assert config.get("toolChoice") == expected
    assert [t["toolSpec"]["name"] for t in config["tools"]] == ["cosine"]


@pytest.mark.parametrize("tools", [{"tools": [COSINE_TOOL], "tool_choice": "none"}, {}])
def test_without_tools_the_history_is_sent_as_text(tools: Json) -> None:
    body = converse({"messages": HISTORY, **tools})
    assert "toolConfig" not in body
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "cos 7?"}]},
        {"role": "assistant", "content": [{"text": '[called tool cosine (call c1) with {"x":7}]'}]},
        {"role": "user", "content": [{"text": "[result of tool call c1]: 0.7539"}]},
    ]


@pytest.mark.parametrize(
    "doc",
    [
        {"tool_choice": "required"},
        {"tools": [COSINE_TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
        {"tools": [COSINE_TOOL], "tool_choice": "sometimes"},
        {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
    ],
)
def test_bad_tool_settings(doc: Json) -> None:
    assert rejected(doc).param in ("tool_choice", "tools[0].type")


class Weather(BaseModel):
    city: str
    celsius: float


SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "Weather", "schema": Weather.model_json_schema(), "strict": True},
}


def test_json_schema_is_a_forced_tool() -> None:
    config = converse({"response_format": SCHEMA_FORMAT})["toolConfig"]
    (tool,) = config["tools"]
    assert tool["toolSpec"]["name"] == "Weather"
    assert tool["toolSpec"]["inputSchema"]["json"] == Weather.model_json_schema()
    assert config["toolChoice"] == {"tool": {"name": "Weather"}}


def test_json_object_is_a_forced_permissive_tool() -> None:
    config = converse({"response_format": {"type": "json_object"}})["toolConfig"]
    assert config["tools"][0]["toolSpec"]["inputSchema"] == {"json": {"type": "object"}}
    assert config["toolChoice"] == {"tool": {"name": "json_response"}}
    assert "toolConfig" not in converse({"response_format": {"type": "text"}})


def test_json_schema_with_client_tools() -> None:
    both = converse({"response_format": SCHEMA_FORMAT, "tools": [COSINE_TOOL]})["toolConfig"]
    assert [t["toolSpec"]["name"] for t in both["tools"]] == ["cosine", "Weather"]
    assert both["toolChoice"] == {"any": {}}
    demanded = converse(
        {"response_format": SCHEMA_FORMAT, "tools": [COSINE_TOOL], "tool_choice": "required"}
    )["toolConfig"]
    assert [t["toolSpec"]["name"] for t in demanded["tools"]] == ["cosine"]
    none = converse(
        {"response_format": SCHEMA_FORMAT, "tools": [COSINE_TOOL], "tool_choice": "none"}
    )["toolConfig"]
    assert [t["toolSpec"]["name"] for t in none["tools"]] == ["Weather"]


@pytest.mark.parametrize(
    ("response_format", "extra", "param"),
    [
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "cosine", "schema": {"type": "object"}},
            },
            {"tools": [COSINE_TOOL]},
            "response_format.json_schema.name",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "L", "schema": {"type": "array"}}},
            {},
            "response_format.json_schema.schema",
        ),
        ({"type": "yaml"}, {}, "response_format.type"),
    ],
)
def test_bad_response_formats(response_format: Json, extra: Json, param: str) -> None:
    assert rejected({"response_format": response_format, **extra}).param == param


def test_inference_config() -> None:
    body = converse(
        {
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 50,
            "max_completion_tokens": 40,
            "stop": "END",
        }
    )
    assert body["inferenceConfig"] == {
        "maxTokens": 40,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert converse({"max_tokens": 7, "stop": ["a", "b"]})["inferenceConfig"] == {
        "maxTokens": 7,
        "stopSequences": ["a", "b"],
    }
    assert "inferenceConfig" not in converse({"stop": []})
    assert rejected({"max_tokens": 0}).param == "max_tokens"
    assert rejected({"temperature": "hot"}).param == "temperature"
    assert rejected({"stop": [1]}).param == "stop"


@pytest.mark.parametrize("body", [b"", b"not json", b"[1]"])
def test_unreadable_bodies(body: bytes) -> None:
    with pytest.raises(GatewayError) as raised:
        chat().request(body)
    assert raised.value.status == 400


# --- chat responses -----------------------------------------------------------------------------


def respond(t: BedrockChat, doc: Json, status: int = 200, head: Json = HEAD) -> Json:
    assert t.response_body_mode(status, head) == "buffered"
    t.response_headers(status, head)
    result: Json = orjson.loads(t.response_body(orjson.dumps(doc), True))
    return result


def converse_response(*blocks: Json, stop: str = "end_turn", usage: Json | None = None) -> Json:
    return {
        "output": {"message": {"role": "assistant", "content": list(blocks)}},
        "stopReason": stop,
        "usage": usage or {"inputTokens": 10, "outputTokens": 3, "totalTokens": 13},
        "metrics": {"latencyMs": 5},
    }


def test_text_response() -> None:
    t = chat()
    converse({}, t)
    head = t.response_headers(200, HEAD)
    assert head.set == {"content-type": "application/json"}
    assert head.remove == ["content-length"]
    assert head.status is None
    doc = respond(t, converse_response({"text": "Hello "}, {"text": "there."}))
    assert doc["id"] == "chatcmpl-req-1"
    assert doc["object"] == "chat.completion"
    assert doc["model"] == "my-model"
    assert isinstance(doc["created"], int)
    assert doc["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert doc["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert t.usage == Usage(input_tokens=10, output_tokens=3, total_tokens=13)
    assert t.response_model is None
    assert t.output_tokens("model") == 3  # "Hello there." at 4 characters per token


def test_id_is_generated_without_a_request_id() -> None:
    t = chat()
    converse({}, t)
    doc = respond(t, converse_response({"text": "x"}), head={"content-type": "application/json"})
    assert doc["id"].startswith("chatcmpl-")
    assert len(doc["id"]) > len("chatcmpl-")


def test_cached_tokens_count_as_prompt_tokens() -> None:
    t = chat()
    converse({}, t)
    usage = {
        "inputTokens": 4,
        "outputTokens": 6,
        "cacheReadInputTokens": 100,
        "cacheWriteInputTokens": 20,
        "totalTokens": 130,
    }
    doc = respond(t, converse_response({"text": "x"}, usage=usage))
    assert doc["usage"] == {
        "prompt_tokens": 124,
        "completion_tokens": 6,
        "total_tokens": 130,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_tool_calls_response() -> None:
    t = chat()
    converse({"tools": [COSINE_TOOL]}, t)
    doc = respond(
        t,
        converse_response(
            {"text": "Calling."},
            {"toolUse": {"toolUseId": "tu1", "name": "cosine", "input": {"x": 7}}},
            {"toolUse": {"toolUseId": "tu2", "name": "cosine", "input": {"x": 8}}},
            stop="tool_use",
        ),
    )
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Calling."
    assert choice["message"]["tool_calls"] == [
        {"id": "tu1", "type": "function", "function": {"name": "cosine", "arguments": '{"x":7}'}},
        {"id": "tu2", "type": "function", "function": {"name": "cosine", "arguments": '{"x":8}'}},
    ]


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    t = chat()
    converse({"tools": [COSINE_TOOL], "parallel_tool_calls": False}, t)
    doc = respond(
        t,
        converse_response(
            {"toolUse": {"toolUseId": "tu1", "name": "cosine", "input": {"x": 7}}},
            {"toolUse": {"toolUseId": "tu2", "name": "cosine", "input": {"x": 8}}},
            stop="tool_use",
        ),
    )
    message = doc["choices"][0]["message"]
    assert [c["id"] for c in message["tool_calls"]] == ["tu1"]
    assert message["content"] is None


def test_answer_tool_input_is_the_content() -> None:
    t = chat()
    converse({"response_format": SCHEMA_FORMAT}, t)
    answer = {
        "toolUse": {
            "toolUseId": "tu",
            "name": "Weather",
            "input": {"city": "Paris", "celsius": 21.5},
        }
    }
    doc = respond(t, converse_response(answer, stop="tool_use"))
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    assert Weather.model_validate_json(choice["message"]["content"]) == Weather(
        city="Paris", celsius=21.5
    )


def test_reasoning_is_passed_on() -> None:
    t = chat()
    converse({}, t)
    thought = {"reasoningContent": {"reasoningText": {"text": "Hmm.", "signature": "s"}}}
    doc = respond(t, converse_response(thought, {"text": "42"}))
    assert doc["choices"][0]["message"]["reasoning_content"] == "Hmm."
    assert doc["choices"][0]["message"]["content"] == "42"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
        ("tool_use", "stop"),  # no tool call reached the client
        ("something_new", "stop"),
    ],
)
def test_finish_reasons(stop: str, finish: str) -> None:
    t = chat()
    converse({}, t)
    doc = respond(t, converse_response({"text": "x"}, stop=stop))
    assert doc["choices"][0]["finish_reason"] == finish


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


def test_a_readable_answer_is_complete_and_no_failure() -> None:
    t = chat()
    converse({}, t)
    assert not t.complete
    respond(t, converse_response({"text": "hi"}))
    assert t.complete and t.failure is None


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


# --- chat streams -------------------------------------------------------------------------------


def stream(t: BedrockChat, data: bytes, sizes: Callable[[], int]) -> list[Any]:
    """Feed ``data`` in pieces of ``sizes()`` bytes; the SSE events the client gets."""
    assert t.response_body_mode(200, STREAM_HEAD) == "streamed"
    head = t.response_headers(200, STREAM_HEAD)
    assert head.set["content-type"] == "text/event-stream"
    assert "content-length" in head.remove
    out = bytearray()
    pos = 0
    while pos < len(data):
        size = sizes()
        out += t.response_body(data[pos : pos + size], False)
        pos += size
    out += t.response_body(b"", True)
    return sse_events(bytes(out))


def sse_events(raw: bytes) -> list[Any]:
    text = raw.decode()
    assert text.endswith("\n\n")
    events: list[Any] = []
    for event in text[:-2].split("\n\n"):
        assert event.startswith("data: ")
        data = event.removeprefix("data: ")
        events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


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


def _random_sizes(seed: int) -> Callable[[], int]:
    rng = random.Random(seed)
    return lambda: rng.randint(1, 64)


SPLITS: list[tuple[str, Callable[[], int]]] = [
    ("one-byte", lambda: 1),
    ("two-bytes", lambda: 2),
    ("seven-bytes", lambda: 7),
    ("whole", lambda: 1 << 20),
    *((f"random-{seed}", _random_sizes(seed)) for seed in range(10)),
]


@pytest.mark.parametrize("sizes", [s for _, s in SPLITS], ids=[name for name, _ in SPLITS])
def test_recorded_stream_in_any_split_gives_the_expected_answer(sizes: Callable[[], int]) -> None:
    t = chat()
    converse({"stream": True, "stream_options": {"include_usage": True}, "tools": [COSINE_TOOL]}, t)
    events = stream(t, RECORDING.read_bytes(), sizes)
    assert events[-1] == "[DONE]"
    chunks: list[Json] = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("chatcmpl-req-1", chunks[0]["created"], "my-model", "chat.completion.chunk")
    }
    # With include_usage: usage null everywhere but in the last chunk, which has no choices.
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    got = accumulate(chunks)
    want = EXPECTED["expected_openai"]
    assert got["content"] == want["content"]
    assert got["tool_calls"] == want["tool_calls"]
    assert got["finish_reason"] == want["finish_reason"]
    assert {k: got["usage"][k] for k in want["usage"]} == want["usage"]
    assert t.usage == Usage(
        input_tokens=want["usage"]["prompt_tokens"],
        output_tokens=want["usage"]["completion_tokens"],
        total_tokens=want["usage"]["total_tokens"],
    )


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    t = chat()
    converse({"stream": True, "tools": [COSINE_TOOL]}, t)
    events = stream(t, RECORDING.read_bytes(), lambda: 100)
    chunks = events[:-1]
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert t.usage is not None
    assert t.usage.total_tokens == 461


def frames(*events: tuple[str, Json]) -> bytes:
    return b"".join(event_frame(kind, payload, "abc") for kind, payload in events)


START = ("messageStart", {"role": "assistant"})
STOP = ("messageStop", {"stopReason": "end_turn"})
METADATA = (
    "metadata",
    {"usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}, "metrics": {"latencyMs": 1}},
)


def text_delta(text: str, index: int = 0) -> tuple[str, Json]:
    return ("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": text}})


def tool_start(index: int, tool_id: str, name: str) -> tuple[str, Json]:
    start = {"toolUse": {"toolUseId": tool_id, "name": name}}
    return ("contentBlockStart", {"contentBlockIndex": index, "start": start})


def tool_delta(index: int, fragment: str) -> tuple[str, Json]:
    return (
        "contentBlockDelta",
        {"contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}},
    )


@pytest.mark.parametrize(
    ("exception_type", "error_type"),
    [
        ("throttlingException", "rate_limit_error"),
        ("modelStreamErrorException", "upstream_error"),
        ("validationException", "invalid_request_error"),
        ("internalServerException", "server_error"),
        ("serviceUnavailableException", "server_error"),
    ],
)
def test_exception_frame_ends_the_stream_with_an_error_event(
    exception_type: str, error_type: str
) -> None:
    t = chat()
    converse({"stream": True}, t)
    data = (
        frames(START, text_delta("Hel"))
        + exception_frame(exception_type, "It broke.")
        + frames(text_delta("lo"), STOP)  # nothing after the exception reaches the client
    )
    events = stream(t, data, lambda: 5)
    assert events[1]["choices"][0]["delta"] == {"content": "Hel"}
    assert events[-1] == {
        "error": {
            "message": "It broke.",
            "type": error_type,
            "param": None,
            "code": exception_type[0].upper() + exception_type[1:],
        }
    }
    assert "[DONE]" not in events
    assert len(events) == 3


@pytest.mark.parametrize(
    "data",
    [
        frames(START, text_delta("Hel")),  # no messageStop
        frames(START, text_delta("Hel"), STOP)[:-3],  # cut inside the last frame
        frames(START) + b"\x00\x00\x00\x20garbage-garbage-garbage-garbage",  # bad prelude CRC
    ],
    ids=["no-stop", "cut", "corrupt"],
)
def test_broken_streams_end_with_an_error_event(data: bytes) -> None:
    t = chat()
    converse({"stream": True}, t)
    events = stream(t, data, lambda: 3)
    assert events[-1]["error"]["type"] == "upstream_error"
    assert "[DONE]" not in events
    # The attempt is recorded as failed, with the error code the client saw.
    assert t.failure == events[-1]["error"]["code"]
    assert t.failure in ("stream_truncated", "bad_upstream_response")
    assert not t.complete


NOT_AN_OBJECT = encode_message({":message-type": "event", ":event-type": "messageStop"}, b"[]")


@pytest.mark.parametrize(
    ("data", "failure"),
    [
        (frames(START, text_delta("Hel")), "stream_truncated"),
        (frames(START, text_delta("Hel"), STOP)[:-3], "stream_truncated"),
        (
            frames(START) + b"\x00\x00\x00\x20garbage-garbage-garbage-garbage",
            "bad_upstream_response",
        ),
        (frames(START) + NOT_AN_OBJECT, "bad_upstream_response"),
        (
            frames(START) + exception_frame("throttlingException", "Slow down"),
            "ThrottlingException",
        ),
        (frames(START) + exception_frame("madeUpException", "?"), "upstream_error"),
    ],
    ids=["no-stop", "cut", "corrupt", "unreadable-event", "exception", "unknown-exception"],
)
def test_stream_failure_names_what_went_wrong(data: bytes, failure: str) -> None:
    t = chat()
    converse({"stream": True}, t)
    stream(t, data, lambda: 7)
    assert t.failure == failure


def test_a_complete_stream_is_complete_and_no_failure() -> None:
    t = chat()
    converse({"stream": True}, t)
    assert t.failure is None and not t.complete
    events = stream(t, frames(START, text_delta("Hi"), STOP, METADATA), lambda: 5)
    assert events[-1] == "[DONE]"
    assert t.complete and t.failure is None


@pytest.mark.parametrize("index", [[], {}, "0", None, True, 1.5])
def test_unreadable_block_index_of_a_tool_call_is_malformed_output(index: Any) -> None:
    t = chat()
    converse({"stream": True, "tools": [COSINE_TOOL]}, t)
    start = {"toolUse": {"toolUseId": "tu0", "name": "cosine"}}
    data = frames(START, ("contentBlockStart", {"contentBlockIndex": index, "start": start}))
    events = stream(t, data, lambda: 9)
    assert events[-1]["error"]["code"] == "bad_upstream_response"
    assert t.failure == "bad_upstream_response"
    assert "[DONE]" not in events


@pytest.mark.parametrize("index", [[], {}, "0", None])
def test_tool_input_of_an_unreadable_block_index_is_dropped(index: Any) -> None:
    t = chat()
    converse({"stream": True, "tools": [COSINE_TOOL]}, t)
    bad = ("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": "{"}}})
    data = frames(
        START,
        tool_start(0, "tu0", "cosine"),
        tool_delta(0, '{"x": 1}'),
        bad,
        ("messageStop", {"stopReason": "tool_use"}),
        METADATA,
    )
    events = stream(t, data, lambda: 9)
    got = accumulate(events[:-1])
    assert [c["function"]["arguments"] for c in got["tool_calls"]] == ['{"x": 1}']
    assert events[-1] == "[DONE]" and t.failure is None


def test_cut_stream_counts_what_the_deltas_said() -> None:
    t = chat()
    converse({"stream": True}, t)
    stream(t, frames(START, text_delta("a"), text_delta("b"), text_delta("c")), lambda: 4)
    assert t.usage is None
    assert t.output_tokens("anthropic.claude-3-5-sonnet") == 1  # "abc" at 3.5 characters
    assert t.output_tokens("gpt-4o") == 1  # "abc": one cl100k token


def test_stream_json_answer_and_dropped_parallel_calls() -> None:
    t = chat()
    converse(
        {
            "stream": True,
            "response_format": SCHEMA_FORMAT,
            "tools": [COSINE_TOOL],
            "parallel_tool_calls": False,
        },
        t,
    )
    data = frames(
        START,
        tool_start(0, "tu0", "Weather"),
        tool_delta(0, '{"city": "Pa'),
        tool_delta(0, 'ris", "celsius": 21.5}'),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "tool_use"}),
        METADATA,
    )
    events = stream(t, data, lambda: 11)
    got = accumulate(events[:-1])
    assert Weather.model_validate_json(got["content"]) == Weather(city="Paris", celsius=21.5)
    assert got["tool_calls"] == []
    assert got["finish_reason"] == "stop"

    t = chat()
    converse({"stream": True, "tools": [COSINE_TOOL], "parallel_tool_calls": False}, t)
    data = frames(
        START,
        tool_start(0, "tu0", "cosine"),
        tool_delta(0, '{"x": 1}'),
        tool_start(1, "tu1", "cosine"),
        tool_delta(1, '{"x": 2}'),
        ("messageStop", {"stopReason": "tool_use"}),
        METADATA,
    )
    got = accumulate(stream(t, data, lambda: 1)[:-1])
    assert [(c["id"], c["function"]["arguments"]) for c in got["tool_calls"]] == [
        ("tu0", '{"x": 1}')
    ]
    assert got["finish_reason"] == "tool_calls"


def test_stream_reasoning_and_unknown_events() -> None:
    t = chat()
    converse({"stream": True}, t)
    reasoning = (
        "contentBlockDelta",
        {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Thinking"}}},
    )
    data = frames(START, reasoning, ("somethingNew", {"x": 1}), text_delta("Hi", 1), STOP, METADATA)
    events = stream(t, data, lambda: 9)
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Thinking"},
        {"content": "Hi"},
        {},
    ]


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


def test_dispatch_by_endpoint_and_url_prefix() -> None:
    ctx = RequestContext("embeddings", "e", TITAN_V2, "e", "/v1/embeddings")
    t = translator(ctx, "/proxy/bedrock")
    assert isinstance(t, BedrockEmbeddings)
    assert (
        t.request(b'{"input": "x"}').path
        == "/proxy/bedrock/model/amazon.titan-embed-text-v2%3A0/invoke"
    )
    ctx = RequestContext("chat", "c", CLAUDE, "c", "/v1/chat/completions")
    assert isinstance(translator(ctx), BedrockChat)


# --- the OpenAI SDK, end to end through the translators, SigV4 and the fake -------------------


class MiniGateway(FakeServer):
    """What the ext_proc upstream stage does with a translator and an Auth, minus Envoy."""

    def __init__(self, bedrock: FakeBedrock, models: dict[str, str]) -> None:
        super().__init__()
        self.bedrock = bedrock
        self.models = models
        self.translators: list[Translator] = []
        self.auth = SigV4(
            AWSBedrockBackend.model_validate(
                {
                    "schema": "aws_bedrock",
                    "url": bedrock.url,
                    "region": bedrock.region,
                    "access_key_id": bedrock.access_key,
                    "secret_access_key": bedrock.secret_key,
                }
            )
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._proxy)
        app.router.add_post("/v1/embeddings", self._proxy)

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        model = orjson.loads(body)["model"]
        endpoint = "chat" if request.path.endswith("/chat/completions") else "embeddings"
        t = translator(RequestContext(endpoint, model, self.models[model], model, request.path))
        self.translators.append(t)
        try:
            upstream = t.request(body)
            await self.auth.apply(upstream, self.bedrock.authority)
        except GatewayError as error:
            return web.Response(
                status=error.status, body=error.body(), content_type="application/json"
            )
        # encoded=True: send the path exactly as translated, %3A included.
        url = yarl.URL(self.bedrock.url + upstream.path, encoded=True)
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=upstream.body, headers=upstream.headers) as reply,
        ):
            headers = dict(reply.headers)
            mode = t.response_body_mode(reply.status, headers)
            head = t.response_headers(reply.status, headers)
            response = web.StreamResponse(status=head.status or reply.status, headers=head.set)
            await response.prepare(request)
            if mode == "streamed":
                async for chunk in reply.content.iter_any():
                    await response.write(t.response_body(chunk, False))
                await response.write(t.response_body(b"", True))
            else:
                await response.write(t.response_body(await reply.read(), True))
            await response.write_eof()
            return response


@pytest.fixture(scope="module")
def wired() -> Iterator[tuple[openai.OpenAI, FakeBedrock, MiniGateway]]:
    models = {
        "claude": CLAUDE,
        "recorded": RECORDED_MODEL,
        "throttled": THROTTLED_MODEL,
        "titan": TITAN_V2,
        "cohere": COHERE_V3,
    }
    with FakeBedrock() as fake, MiniGateway(fake, models) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        yield client, fake, gateway


def test_sdk_chat(wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway]) -> None:
    client, fake, _ = wired
    completion = client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi there"},
        ],
        max_tokens=3,
    )
    assert completion.choices[0].message.content == "You said: Hi"
    assert completion.choices[0].finish_reason == "length"
    assert completion.model == "claude"
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 3
    assert (
        fake.requests[-1].raw_path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    )


def test_sdk_stream_with_usage(wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway]) -> None:
    client, _, _ = wired
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "stream this please [[cached]]"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: stream this please [[cached]]"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens_details is not None
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 100


def test_sdk_tool_round_trip(wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway]) -> None:
    client, fake, _ = wired
    messages: list[Any] = [{"role": "user", "content": "cosine of 7 [[tool]]"}]
    first = client.chat.completions.create(model="claude", messages=messages, tools=[COSINE_TOOL])
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "cosine"
    assert orjson.loads(call.function.arguments) == {"x": 1.5}
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "0.7539"},
    ]
    second = client.chat.completions.create(model="claude", messages=messages, tools=[COSINE_TOOL])
    assert second.choices[0].message.content == "Tool said: 0.7539"
    # tool_choice none: the fake (like Bedrock) accepts the text history without toolConfig.
    third = client.chat.completions.create(
        model="claude",
        messages=messages,
        tools=[COSINE_TOOL],
        tool_choice="none",
    )
    assert third.choices[0].message.tool_calls is None
    assert "toolConfig" not in fake.requests[-1].json()


def test_sdk_structured_output(wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway]) -> None:
    client, _, _ = wired
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    parsed = client.chat.completions.parse(
        model="claude", messages=messages, response_format=Weather
    )
    assert parsed.choices[0].message.parsed == Weather(city="fake", celsius=1.5)
    with client.chat.completions.stream(
        model="claude", messages=messages, response_format=Weather
    ) as events:
        final = events.get_final_completion()
    assert final.choices[0].message.parsed == Weather(city="fake", celsius=1.5)


def test_sdk_errors(wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway]) -> None:
    client, _, _ = wired
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": THROTTLE}]
        )
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="throttled", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.BadRequestError, match="Malformed input request"):
        client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": INVALID}]
        )
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with pytest.raises(openai.BadRequestError, match="does not fetch") as raised:
        messages: list[Any] = [{"role": "user", "content": [image]}]
        client.chat.completions.create(model="claude", messages=messages)
    assert raised.value.param == "messages[0].content[0].image_url.url"
    with pytest.raises(openai.BadRequestError, match="'n'"):
        client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "x"}], n=2
        )


@pytest.mark.parametrize("marker", [STREAM_ERROR, STREAM_THROTTLE])
def test_sdk_mid_stream_error(
    wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway], marker: str
) -> None:
    client, _, _ = wired
    chunks = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": f"go {marker}"}], stream=True
    )
    with pytest.raises(openai.APIError, match=r"please wait|stream failed"):
        list(chunks)


def test_sdk_image(wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway]) -> None:
    client, fake, _ = wired
    content = [{"type": "text", "text": "What?"}, {"type": "image_url", "image_url": {"url": PNG}}]
    messages: list[Any] = [{"role": "user", "content": content}]
    completion = client.chat.completions.create(model="claude", messages=messages)
    assert completion.choices[0].message.content == "You said: What?"
    assert fake.requests[-1].json()["messages"][0]["content"][1]["image"]["format"] == "png"


def test_sdk_recorded_stream(wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway]) -> None:
    client, _, gateway = wired
    chunks = list(
        client.chat.completions.create(
            model="recorded",
            messages=[{"role": "user", "content": "cos 7"}],
            stream=True,
            tools=[COSINE_TOOL],
        )
    )
    got = accumulate([c.model_dump() for c in chunks])
    want = EXPECTED["expected_openai"]
    assert got["content"] == want["content"]
    assert [c["function"] for c in got["tool_calls"]] == [want["tool_calls"][0]["function"]]
    assert got["finish_reason"] == want["finish_reason"]
    last = gateway.translators[-1]
    assert isinstance(last, BedrockChat)
    assert last.usage is not None
    assert last.usage.input_tokens == want["usage"]["prompt_tokens"]


def test_sdk_embeddings(wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway]) -> None:
    client, fake, _ = wired
    # The SDK asks for base64 by default and decodes it: the floats must survive the trip.
    titan = client.embeddings.create(model="titan", input="hello world", dimensions=256)
    assert titan.data[0].embedding == vector("hello world", 256)
    assert titan.usage.prompt_tokens == 2
    assert fake.requests[-1].json() == {"inputText": "hello world", "dimensions": 256}
    cohere = client.embeddings.create(model="cohere", input=["a b", "c"], encoding_format="float")
    assert [d.embedding for d in cohere.data] == [vector("a b", 1024), vector("c", 1024)]
    assert cohere.usage.prompt_tokens == 3
    # MiniGateway makes one call per request: without fan-out, a Titan batch is refused.
    with pytest.raises(openai.BadRequestError, match="one input per request"):
        client.embeddings.create(model="titan", input=["a", "b"])


def test_conformance_corpus_is_where_the_fake_expects_it() -> None:
    assert (CONFORMANCE / "README.md").is_file()


def test_fake_scripting_hooks(wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway]) -> None:
    client, fake, _ = wired
    fake.reply_text = "Scripted answer."
    fake.tool_input = {"x": 42}
    try:
        text = client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "anything"}]
        )
        assert text.choices[0].message.content == "Scripted answer."
        call = client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "x"}],
            tools=[COSINE_TOOL],
            tool_choice="required",
        )
        (tool_call,) = call.choices[0].message.tool_calls or []
        assert tool_call.type == "function"
        assert orjson.loads(tool_call.function.arguments) == {"x": 42}
    finally:
        fake.reply_text = None
        fake.tool_input = None
    throttling = {"x-amzn-errortype": "ThrottlingException:http://internal.amazon.com/coral/"}
    fake.fail_next(429, headers=throttling)
    with pytest.raises(openai.RateLimitError, match="injected fault"):
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}])


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


# --- the fan-out client, against the signature-checking fake -----------------------------------


def fan_out_client(
    url: str, fake: FakeBedrock, concurrency: int = 8, message_timeout: float = 10.0, **extra: Any
) -> tuple[FanOutClient, BackendRuntime]:
    backend = {
        "schema": "aws_bedrock",
        "url": url,
        "region": fake.region,
        "access_key_id": fake.access_key,
        "secret_access_key": fake.secret_key,
        **extra,
    }
    config = GatewayConfig.model_validate(
        {"sidecar": {"message_timeout": message_timeout}, "backends": {"bedrock": backend}}
    )
    return FanOutClient(config, concurrency), build_backends(config)["bedrock"]


TRACEPARENT = f"00-{'1' * 32}-{'2' * 16}-01"


def send_parts(
    client: FanOutClient, backend: BackendRuntime, texts: list[str]
) -> list[UpstreamReply]:
    parts = embeddings().fan_out(orjson.dumps({"input": texts}))
    assert parts is not None

    async def send() -> list[UpstreamReply]:
        try:
            return await client.send(backend, parts, {"traceparent": TRACEPARENT})
        finally:
            await client.close()

    return asyncio.run(send())


def test_parts_are_signed_and_sent_separately(
    wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway],
) -> None:
    _, fake, _ = wired
    seen = len(fake.requests)
    texts = [f"text number {i}" for i in range(10)]
    replies = send_parts(*fan_out_client(fake.url, fake), texts)
    assert [r.status for r in replies] == [200] * 10
    assert [orjson.loads(r.body)["embedding"] for r in replies] == [
        vector(text, 1024) for text in texts
    ]
    sent = fake.requests[seen:]
    assert sorted(r.json()["inputText"] for r in sent) == sorted(texts)
    assert len({r.headers["authorization"] for r in sent}) == 10
    assert {r.headers["host"] for r in sent} == {fake.authority}
    assert {r.headers["traceparent"] for r in sent} == {TRACEPARENT}


def test_no_part_is_sent_after_a_failure(
    wired: tuple[openai.OpenAI, FakeBedrock, MiniGateway],
) -> None:
    _, fake, _ = wired
    seen = len(fake.requests)
    replies = send_parts(*fan_out_client(fake.url, fake, concurrency=1), ["a", THROTTLE, "c"])
    assert [r.status for r in replies] == [200, 429]
    assert len(fake.requests) == seen + 2


class SlowTitan(FakeServer):
    """Answers any POST like Titan after ``delay`` seconds, counting the calls in flight."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.in_flight = self.most_in_flight = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.json_response({"embedding": [0.5], "inputTextTokenCount": 1})


def test_concurrency_is_bounded() -> None:
    with FakeBedrock() as fake, SlowTitan(0.05) as slow:
        replies = send_parts(*fan_out_client(slow.url, fake, concurrency=3), list("abcdefghij"))
    assert len(replies) == 10
    assert slow.most_in_flight == 3


def test_slow_parts_time_out_before_envoy_gives_up() -> None:
    with FakeBedrock() as fake, SlowTitan(5.0) as slow:
        client, backend = fan_out_client(slow.url, fake, message_timeout=0.3)
        with pytest.raises(GatewayError) as raised:
            send_parts(client, backend, ["a", "b"])
    assert raised.value.status == 504 and raised.value.code == "upstream_timeout"


def test_unreachable_backend() -> None:
    with FakeBedrock() as fake:
        with socket.socket() as sock:  # a port nobody listens on once closed
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(GatewayError) as raised:
            send_parts(*fan_out_client(f"http://127.0.0.1:{port}", fake), ["a", "b"])
    assert raised.value.status == 503 and raised.value.code == "upstream_unavailable"


def test_tls_verifies_the_backend_ca_and_sni(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("bedrock.internal").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with FakeBedrock(ssl_context=server_ctx) as fake:
        tls = {"ca_file": str(ca_file), "sni": "bedrock.internal"}
        replies = send_parts(*fan_out_client(fake.url, fake, tls=tls), ["a", "b"])
        assert [r.status for r in replies] == [200, 200]
        for wrong in ({"sni": "bedrock.internal"}, {"ca_file": str(ca_file)}):
            with pytest.raises(GatewayError) as raised:
                send_parts(*fan_out_client(fake.url, fake, tls=wrong), ["a", "b"])
            assert raised.value.status == 503
