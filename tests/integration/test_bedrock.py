"""AWS Bedrock through real Envoy + sidecar: the official SDK cannot tell it is not OpenAI.

The fake Bedrock recomputes every SigV4 signature (403 on mismatch), speaks Converse,
ConverseStream (real event-stream frames in random splits) and InvokeModel.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionChunk
from pydantic import BaseModel

from extproc.config import Pricing
from extproc.cost import cost_usd
from extproc.translate.bedrock.fields import MAX_TITAN_INPUTS
from extproc.usage import Usage
from tests.fakes.bedrock import RECORDED_MODEL, THROTTLE, THROTTLED_MODEL, FakeBedrock
from tests.fakes.openai import count_tokens, vector
from tests.harness import Gateway

EXPECTED = json.loads(
    (
        Path(__file__).resolve().parents[3]
        / "shared/conformance/bedrock/converse-stream-claude-text-tooluse.expected.json"
    ).read_text()
)["expected_openai"]
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TITAN_PRICE = {"input": 0.02}
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock(session_token="session-token-canary") as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(bedrock: FakeBedrock) -> Iterator[Gateway]:
    backend = {
        "schema": "aws_bedrock",
        "url": bedrock.url,
        "region": bedrock.region,
        "access_key_id": "${AWS_KEY}",
        "secret_access_key": "${AWS_SECRET}",
        "session_token": "${AWS_TOKEN}",
    }
    one = {"retry": {"attempts": 1}}
    config = {
        "backends": {"bedrock": backend},
        "models": [
            {"name": "claude-sonnet", "backends": [{"backend": "bedrock", "model": CLAUDE}], **one},
            {"name": "recorded", "backends": [{"backend": "bedrock", "model": RECORDED_MODEL}], **one},
            {"name": "throttled", "backends": [{"backend": "bedrock", "model": THROTTLED_MODEL}], **one},
            {"name": "titan", "backends": [{"backend": "bedrock", "model": "amazon.titan-embed-text-v2:0"}], "pricing": TITAN_PRICE},
            {"name": "cohere", "backends": [{"backend": "bedrock", "model": "cohere.embed-english-v3"}]},
        ],
    }  # fmt: skip
    env = {
        "AWS_KEY": bedrock.access_key,
        "AWS_SECRET": bedrock.secret_key,
        "AWS_TOKEN": "session-token-canary",
    }
    with Gateway(config, env=env) as gw:
        yield gw


@pytest.fixture
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="client", max_retries=0)


def test_system_and_multi_turn(client: OpenAI, bedrock: FakeBedrock) -> None:
    reply = client.chat.completions.create(
        model="claude-sonnet",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "how are you"},
        ],
        temperature=0.2,
        max_tokens=50,
    )
    assert reply.model == "claude-sonnet"
    assert reply.choices[0].message.content == "You said: how are you"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens > 0
    seen = bedrock.requests[-1]
    assert seen.raw_path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    body = seen.json()
    assert body["system"] == [{"text": "Be brief."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["inferenceConfig"] == {"temperature": 0.2, "maxTokens": 50}
    assert seen.headers["x-amz-security-token"] == "session-token-canary"
    assert "client" not in seen.headers.get("authorization", "").lower().split("credential=")[0]


def test_image_data_uri(client: OpenAI, bedrock: FakeBedrock) -> None:
    client.chat.completions.create(
        model="claude-sonnet",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}},
                ],
            }
        ],
    )
    blocks = bedrock.requests[-1].json()["messages"][0]["content"]
    assert blocks[1]["image"]["format"] == "png"
    assert blocks[1]["image"]["source"]["bytes"] == PNG_1PX


def test_http_image_url_is_refused(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="fetch"):
        client.chat.completions.create(
            model="claude-sonnet",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                }
            ],
        )


@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(client: OpenAI, stream: bool) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "weather in Paris? [[tool]]"}]
    if stream:
        chunks: list[ChatCompletionChunk] = list(
            client.chat.completions.create(
                model="claude-sonnet", messages=messages, tools=TOOLS, stream=True
            )
        )
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        call_id = calls[0].id
        name = calls[0].function.name
        arguments = "".join(tc.function.arguments or "" for tc in calls)
        finish = [
            c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
        ]
        assert finish == ["tool_calls"]
    else:
        reply = client.chat.completions.create(
            model="claude-sonnet", messages=messages, tools=TOOLS
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        call = reply.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert name == "get_weather" and "city" in json.loads(arguments)
    messages += [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"},
    ]
    final = client.chat.completions.create(model="claude-sonnet", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "Tool said: sunny, 21C"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"tool": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice(
    client: OpenAI, bedrock: FakeBedrock, choice: object, expected: object
) -> None:
    client.chat.completions.create(
        model="claude-sonnet",
        messages=[{"role": "user", "content": "x"}],
        tools=TOOLS,
        tool_choice=choice,
    )
    assert bedrock.requests[-1].json()["toolConfig"]["toolChoice"] == expected


def test_tool_choice_none_stops_tool_use(client: OpenAI, bedrock: FakeBedrock) -> None:
    reply = client.chat.completions.create(
        model="claude-sonnet",
        messages=[{"role": "user", "content": "weather? [[tool]]"}],
        tools=TOOLS,
        tool_choice="none",
    )
    assert reply.choices[0].message.tool_calls is None
    assert "toolConfig" not in bedrock.requests[-1].json()


class Person(BaseModel):
    name: str
    age: int


def test_parse_into_pydantic(client: OpenAI) -> None:
    completion = client.chat.completions.parse(
        model="claude-sonnet",
        messages=[{"role": "user", "content": "a person"}],
        response_format=Person,
    )
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person)
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("model", "inputs"),
    [
        ("titan", ["one input"]),
        ("titan", ["first input", "second", "third one"]),
        ("cohere", ["one input"]),
        ("cohere", ["first input", "second", "third one"]),
    ],
)
def test_embeddings(client: OpenAI, model: str, inputs: list[str]) -> None:
    floats = client.embeddings.create(model=model, input=inputs, encoding_format="float")
    assert [d.index for d in floats.data] == list(range(len(inputs)))
    assert floats.usage.prompt_tokens > 0
    raw = client.post(
        "/embeddings",
        body={"model": model, "input": inputs, "encoding_format": "base64"},
        cast_to=object,
    )
    for item, expected in zip(raw["data"], floats.data, strict=True):
        data = base64.b64decode(item["embedding"])
        assert list(struct.unpack(f"<{len(data) // 4}f", data)) == pytest.approx(
            expected.embedding, abs=1e-6
        )


def test_titan_v2_dimensions(client: OpenAI, bedrock: FakeBedrock) -> None:
    result = client.embeddings.create(
        model="titan", input="x", dimensions=256, encoding_format="float"
    )
    assert len(result.data[0].embedding) == 256
    assert bedrock.requests[-1].json()["dimensions"] == 256


def test_titan_batch_is_one_signed_call_per_input(
    client: OpenAI, bedrock: FakeBedrock, gateway: Gateway
) -> None:
    inputs = ["a batch of seven words to embed", "then two", "and at last three"]
    tokens = sum(count_tokens(text) for text in inputs)
    seen = len(bedrock.requests)
    raw = client.embeddings.with_raw_response.create(
        model="titan", input=inputs, dimensions=256, encoding_format="float"
    )
    result = raw.parse()
    assert [d.embedding for d in result.data] == [vector(text, 256) for text in inputs]
    assert [d.index for d in result.data] == [0, 1, 2]
    assert result.usage.prompt_tokens == result.usage.total_tokens == tokens
    assert raw.headers["content-type"] == "application/json"
    expected_cost = cost_usd(
        Usage(input_tokens=tokens, total_tokens=tokens), Pricing(**TITAN_PRICE)
    )
    assert float(raw.headers["x-ai-eg-cost-usd"]) == pytest.approx(expected_cost, abs=1e-6)

    sent = bedrock.requests[seen:]
    assert sorted(r.json()["inputText"] for r in sent) == sorted(inputs)
    assert all(r.json()["dimensions"] == 256 for r in sent)
    # Each part carries its own signature (the fake checked every one).
    assert len({r.headers["authorization"] for r in sent}) == len(inputs)

    def logged() -> bool:
        return any(
            # The merged answer is the sidecar's own reply, sent before Envoy routed the request:
            # the line has the sidecar's accounting, not the routing header.
            e["path"] == "/v1/embeddings" and e.get("total_tokens") == tokens and e["status"] == 200
            for e in gateway.access_log()
        )

    deadline = time.monotonic() + 5
    while not logged():
        assert time.monotonic() < deadline, "the fan-out was not accounted in the access log"
        time.sleep(0.1)


def test_a_huge_titan_batch_is_refused_before_any_call(
    client: OpenAI, bedrock: FakeBedrock
) -> None:
    seen = len(bedrock.requests)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="titan", input=[f"t{i}" for i in range(20_000)])
    error = info.value.response.json()["error"]
    assert error["param"] == "input" and error["code"] == "too_many_inputs"
    assert str(MAX_TITAN_INPUTS) in error["message"]
    assert len(bedrock.requests) == seen  # not one of the 20,000 calls was made


def test_titan_batch_with_a_throttled_part_is_a_rate_limit_error(
    client: OpenAI, bedrock: FakeBedrock
) -> None:
    seen = len(bedrock.requests)
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(
            model="titan",
            input=["fine", f"too fast {THROTTLE}", "fine too"],
            encoding_format="float",
        )
    assert info.value.status_code == 429
    error = info.value.response.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "ThrottlingException"
    sent = bedrock.requests[seen:]
    assert len(sent) == 3
    assert len({r.headers["authorization"] for r in sent}) == 3


def test_throttling_is_a_rate_limit_error(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="throttled", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 429
    assert info.value.response.json()["error"]["type"] == "rate_limit_error"


def test_validation_error_keeps_bedrock_message(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="claude-sonnet", messages=[{"role": "user", "content": "bad [[invalid]]"}]
        )
    body = info.value.response.json()["error"]
    assert body["type"] == "invalid_request_error" and body["message"]


def test_mid_stream_exception_becomes_error_event(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="claude-sonnet",
        messages=[{"role": "user", "content": "talk [[stream-error]]"}],
        stream=True,
    )
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received, "the chunks before the failure reach the client"


def test_unsupported_parameter_is_rejected(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="claude-sonnet", messages=[{"role": "user", "content": "x"}], n=2
        )
    assert info.value.response.json()["error"]["param"] == "n"


@pytest.mark.parametrize("attempt", range(3))
def test_recorded_stream_reaches_the_sdk_exactly(client: OpenAI, attempt: int) -> None:
    chunks = list(
        client.chat.completions.create(
            model="recorded",
            messages=[{"role": "user", "content": "cos(7)?"}],
            tools=[
                {
                    "type": "function",
                    "function": {"name": "cosine", "parameters": {"type": "object"}},
                }
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == EXPECTED["content"]
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    (expected_call,) = EXPECTED["tool_calls"]
    assert calls[0].id == expected_call["id"] and calls[0].function.name == "cosine"
    assert (
        "".join(tc.function.arguments or "" for tc in calls)
        == expected_call["function"]["arguments"]
    )
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == [EXPECTED["finish_reason"]]
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        EXPECTED["usage"]["prompt_tokens"],
        EXPECTED["usage"]["completion_tokens"],
        EXPECTED["usage"]["total_tokens"],
    )


def test_credentials_not_in_output(gateway: Gateway, bedrock: FakeBedrock) -> None:
    output = "".join(gateway.output)
    assert bedrock.secret_key not in output and "session-token-canary" not in output
