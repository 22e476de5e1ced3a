"""The Responses API -> Converse: every row of the field table does what it says; bad input is
a 400 naming the Responses parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.responses import response_create_params

from extproc.errors import GatewayError
from extproc.translate import RequestContext
from extproc.translate.bedrock.fields import fields_markdown
from extproc.translate.bedrock.responses import BedrockResponses
from extproc.translate.bedrock.responses_fields import RESPONSES_FIELDS
from tests.bedrock_cases import CLAUDE, PNG, Json, Weather

NOVA = "amazon.nova-lite-v1:0"
SONNET_4 = "us.anthropic.claude-sonnet-4-20250514-v1:0"
WEATHER: Json = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
SPEC = {
    "toolSpec": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "inputSchema": {"json": WEATHER["parameters"]},
    }
}


def responses(upstream_model: str = CLAUDE) -> BedrockResponses:
    ctx = RequestContext("responses", "my-model", upstream_model, "my-model", "/v1/responses")
    return BedrockResponses(ctx)


def converse(doc: Json, model: str = CLAUDE) -> Json:
    body = {"model": "my-model", "input": "hi", **doc}
    upstream = responses(model).request(orjson.dumps(body))
    assert upstream.body is not None
    result: Json = orjson.loads(upstream.body)
    return result


def rejected(doc: Json, model: str = CLAUDE) -> GatewayError:
    body = {"model": "my-model", "input": "hi", **doc}
    with pytest.raises(GatewayError) as raised:
        responses(model).request(orjson.dumps(body))
    assert raised.value.status == 400
    return raised.value


# --- the field table ----------------------------------------------------------------------------


def test_every_responses_field_has_a_rule() -> None:
    sdk = set(response_create_params.ResponseCreateParamsBase.__annotations__)
    assert sdk | {"stream"} == {rule.name for rule in RESPONSES_FIELDS}


def test_readme_shows_the_table_as_it_is() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert fields_markdown(RESPONSES_FIELDS) in readme


IGNORED: Json = {
    "store": True,
    "metadata": {"k": "v"},
    "user": "u-1",
    "safety_identifier": "s-1",
    "prompt_cache_key": "k",
    "prompt_cache_options": {"ttl": "30m"},
    "prompt_cache_retention": "24h",
    "stream_options": {"include_obfuscation": False},
}
REJECTED: Json = {
    "include": ["message.output_text.logprobs"],
    "truncation": "auto",
    "previous_response_id": "resp_1",
    "conversation": "conv_1",
    "background": True,
    "background_options": {},
    "prompt": {"id": "pmpt_1"},
    "context_management": [{"type": "compaction"}],
    "max_tool_calls": 3,
    "top_logprobs": 2,
    "moderation": {"mode": "block"},
    "image": {},
    "access_programs": {"cyber": "standard"},
}
HARMLESS: Json = {
    "include": ["reasoning.encrypted_content"],
    "truncation": "disabled",
    "background": False,
    "top_logprobs": 0,
}


def test_value_tables_cover_the_rules() -> None:
    assert set(IGNORED) == {r.name for r in RESPONSES_FIELDS if r.disposition == "ignored"}
    assert set(REJECTED) == {r.name for r in RESPONSES_FIELDS if r.disposition == "rejected"}


@pytest.mark.parametrize(("name", "value"), IGNORED.items())
def test_ignored_fields_change_nothing(name: str, value: Any) -> None:
    assert converse({name: value}) == converse({})


@pytest.mark.parametrize(("name", "value"), REJECTED.items())
def test_rejected_fields_are_a_400_naming_them(name: str, value: Any) -> None:
    err = rejected({name: value})
    assert err.param == name and err.code == "unsupported_parameter"


@pytest.mark.parametrize(("name", "value"), HARMLESS.items())
def test_values_that_ask_for_nothing_pass(name: str, value: Any) -> None:
    assert converse({name: value}) == converse({})


def test_an_unknown_field_is_a_400_naming_it() -> None:
    assert rejected({"temprature": 1}).param == "temprature"


# --- mapped fields ------------------------------------------------------------------------------


def test_input_string_and_instructions() -> None:
    body = converse({"instructions": "Be brief.", "input": "hello"})
    assert body == {
        "messages": [{"role": "user", "content": [{"text": "hello"}]}],
        "system": [{"text": "Be brief."}],
    }


def test_message_items_roles_and_parts() -> None:
    body = converse(
        {
            "instructions": "A",
            "input": [
                {"role": "system", "content": "B"},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "C"}]},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": PNG, "detail": "auto"},
                ]},
                {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                 "content": [{"type": "output_text", "text": "a cat", "annotations": []}]},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no more"}]},
                {"role": "user", "content": "thanks"},
            ],
        }
    )  # fmt: skip
    assert body["system"] == [{"text": "A"}, {"text": "B"}, {"text": "C"}]
    image = {"image": {"format": "png", "source": {"bytes": PNG.partition(",")[2]}}}
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "look"}, image]},
        {"role": "assistant", "content": [{"text": "a cat"}, {"text": "no more"}]},
        {"role": "user", "content": [{"text": "thanks"}]},
    ]


def test_function_calls_and_outputs_are_tool_blocks_in_alternating_turns() -> None:
    body = converse(
        {
            "tools": [WEATHER],
            "input": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"type": "function_call", "call_id": "c1", "name": "get_weather",
                 "arguments": '{"city": "Paris"}', "id": "fc_1", "status": "completed"},
                {"type": "function_call", "call_id": "c2", "name": "get_weather",
                 "arguments": '{"city": "Rome"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "c2",
                 "output": [{"type": "input_text", "text": "rain"}]},
            ],
        }
    )  # fmt: skip
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "c1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "c2", "name": "get_weather", "input": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "c1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "c2", "content": [{"text": "rain"}]}},
            ],
        },
    ]
    assert body["toolConfig"] == {"tools": [SPEC]}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "name": "get_weather"}, {"tool": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice: Any, expected: Json) -> None:
    body = converse({"tools": [WEATHER], "tool_choice": choice})
    assert body["toolConfig"] == {"tools": [SPEC], "toolChoice": expected}


def test_tool_choice_none_sends_no_tools_and_the_history_as_text() -> None:
    body = converse(
        {
            "tools": [WEATHER],
            "tool_choice": "none",
            "input": [
                {"role": "user", "content": "hi"},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
        }
    )
    assert "toolConfig" not in body
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [{"text": "[called tool get_weather (call c1) with {}]"}],
    }
    assert body["messages"][2]["content"] == [{"text": "[result of tool call c1]: sunny"}]


def test_sampling_fields() -> None:
    body = converse({"max_output_tokens": 100, "temperature": 0.2, "top_p": 0.9})
    assert body["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.2, "topP": 0.9}


def test_text_format_json_schema_is_the_forced_answer_tool() -> None:
    schema = Weather.model_json_schema()
    body = converse({"text": {"format": {"type": "json_schema", "name": "Weather", "schema": schema, "strict": True}}})  # fmt: skip
    (tool,) = body["toolConfig"]["tools"]
    assert tool["toolSpec"]["name"] == "Weather"
    assert tool["toolSpec"]["inputSchema"] == {"json": schema}
    assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "Weather"}}


def test_text_format_json_object_and_text() -> None:
    body = converse({"text": {"format": {"type": "json_object"}}})
    assert body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": {"type": "object"}}
    assert converse({"text": {"format": {"type": "text"}, "verbosity": "medium"}}) == converse({})


def test_reasoning_effort_is_claudes_thinking() -> None:
    body = converse({"reasoning": {"effort": "low", "summary": "auto"}}, SONNET_4)
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 4096}
    }
    assert body["inferenceConfig"] == {"maxTokens": 4096 + 4096}


def test_reasoning_items_go_back_first_in_their_turn() -> None:
    body = converse(
        {
            "tools": [WEATHER],
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "reasoning", "id": "rs_1", "summary": [],
                 "content": [{"type": "reasoning_text", "text": "think"}],
                 "encrypted_content": "c2ln"},
                {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "redacted:ZGF0YQ=="},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": ""},
            ],
        },
        SONNET_4,
    )  # fmt: skip
    assert body["messages"][1]["content"][:2] == [
        {"reasoningContent": {"reasoningText": {"text": "think", "signature": "c2ln"}}},
        {"reasoningContent": {"redactedContent": "ZGF0YQ=="}},
    ]
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "c1", "content": [{"text": "(no output)"}]}}
    ]


def test_service_tier_is_converses() -> None:
    assert converse({"service_tier": "scale"})["serviceTier"] == {"type": "reserved"}
    assert rejected({"service_tier": "turbo"}).param == "service_tier"


def test_parallel_tool_calls_false_and_stream() -> None:
    upstream = responses().request(
        orjson.dumps({"model": "m", "input": "hi", "stream": True, "parallel_tool_calls": False})
    )
    assert upstream.path.endswith("/converse-stream")
    assert upstream.headers["accept"] == "application/vnd.amazon.eventstream"


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "param"),
    [
        ({"input": None}, "input"),
        ({"input": []}, "input"),
        ({"input": 3}, "input"),
        ({"input": ["hi"]}, "input[0]"),
        ({"input": [{"type": "web_search_call", "id": "ws"}]}, "input[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
         "input[0].content[0].image_url"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
         "input[0].content[0].file_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
         "input[0].content[0].text"),
        ({"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": PNG}]}]},
         "input[0].content[0].type"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]},
         "input[0].arguments"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 3}]},
         "input[0].output"),
        ({"input": [{"type": "reasoning", "summary": [{"type": "x"}]}]}, "input[0].summary"),
        ({"input": [{"role": "system", "content": "only instructions"}]}, "input"),
        ({"instructions": 3}, "instructions"),
        ({"tools": {}}, "tools"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "name": ""}]}, "tools[0].name"),
        ({"tools": [{"type": "function", "name": "f", "parameters": 1}]}, "tools[0].parameters"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"stream": "yes"}, "stream"),
        ({"text": "json"}, "text"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"text": {"format": {"type": "json_schema", "name": "L", "schema": {"type": "array"}}}},
         "text.format.schema"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"text": {"colour": "red"}}, "text.colour"),
        ({"tools": [WEATHER], "text": {"format": {"type": "json_schema", "name": "get_weather"}}},
         "text.format.name"),
        ({"reasoning": "high"}, "reasoning"),
        ({"reasoning": {"effort": "huge"}}, "reasoning.effort"),
        ({"reasoning": {"effort": "high", "context": "all_turns"}}, "reasoning.context"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_param(doc: Json, param: str) -> None:
    assert rejected(doc).param == param


def test_reasoning_on_a_model_without_it_names_reasoning_effort() -> None:
    err = rejected({"reasoning": {"effort": "high"}}, NOVA)
    assert err.param == "reasoning.effort" and "'reasoning.effort'" in err.message


def test_claudes_thinking_constraints_name_the_responses_fields() -> None:
    schema_format = {"type": "json_schema", "name": "W", "schema": {"type": "object"}}
    err = rejected({"reasoning": {"effort": "low"}, "text": {"format": schema_format}}, SONNET_4)
    assert err.param == "text.format"
    err = rejected({"reasoning": {"effort": "high"}, "max_output_tokens": 2000}, SONNET_4)
    assert err.param == "max_output_tokens" and "'max_output_tokens'" in err.message


def test_a_tool_output_takes_text_parts_only() -> None:
    output = [{"type": "input_image", "image_url": PNG}]
    err = rejected({"input": [{"type": "function_call_output", "call_id": "c", "output": output}]})
    assert err.param == "input[0].output[0].type" and "tool output" in err.message
