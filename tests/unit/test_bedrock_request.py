"""OpenAI chat request -> Converse request, and the translator chosen for an endpoint."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc.backends import runtime
from extproc.config import AWSBedrockBackend
from extproc.errors import GatewayError
from extproc.translate import RequestContext
from extproc.translate.bedrock.chat import BedrockChat
from extproc.translate.bedrock.embeddings import BedrockEmbeddings
from tests.bedrock_cases import (
    CLAUDE,
    COSINE_TOOL,
    PNG,
    SCHEMA_FORMAT,
    TITAN_V2,
    Json,
    Weather,
    chat,
    converse,
    rejected,
)

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


# --- the translator for an endpoint ------------------------------------------------------------


def test_dispatch_by_endpoint_and_url_prefix() -> None:
    # The schema registry's entry for Bedrock, behind a proxy at /proxy/bedrock.
    config = {"schema": "aws_bedrock", "region": "us-east-1", "url": "https://p/proxy/bedrock"}
    translator = runtime("b", AWSBedrockBackend.model_validate(config)).translator
    plain = runtime("b", AWSBedrockBackend.model_validate({**config, "url": None})).translator
    ctx = RequestContext("embeddings", "e", TITAN_V2, "e", "/v1/embeddings")
    t = translator(ctx)
    assert isinstance(t, BedrockEmbeddings)
    assert (
        t.request(b'{"input": "x"}').path
        == "/proxy/bedrock/model/amazon.titan-embed-text-v2%3A0/invoke"
    )
    ctx = RequestContext("chat", "c", CLAUDE, "c", "/v1/chat/completions")
    assert isinstance(plain(ctx), BedrockChat)
