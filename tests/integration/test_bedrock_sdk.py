"""The official OpenAI SDK against the real upstream stage (extproc.upstream.Exchange: translator,
SigV4) in front of the signature-checking FakeBedrock; a small aiohttp server plays Envoy's part.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
import yarl
from aiohttp import web
from prometheus_client import CollectorRegistry

from extproc.config import GatewayConfig
from extproc.router import RouteState, error_response
from extproc.telemetry import Telemetry
from extproc.upstream import Exchange, Step, UpstreamStage
from extproc.wire import Key
from tests.bedrock_cases import (
    CLAUDE,
    COHERE_V3,
    COSINE_TOOL,
    EXPECTED,
    PNG,
    TITAN_V2,
    Weather,
    accumulate,
)
from tests.fakes.bedrock import (
    INVALID,
    RECORDED_MODEL,
    STREAM_ERROR,
    STREAM_THROTTLE,
    THROTTLE,
    THROTTLED_MODEL,
    FakeBedrock,
)
from tests.fakes.openai import vector
from tests.fakes.server import FakeServer


class MiniGateway(FakeServer):
    """Envoy's part around the real upstream stage: each request is one attempt of an
    :class:`~extproc.upstream.Exchange` (translator, SigV4, fan-out), driven in the order the gRPC
    layer drives it, and sent on with the changes it asks for. The dynamic metadata of each
    attempt that ended with an answer is kept in :attr:`attempts`."""

    def __init__(self, bedrock: FakeBedrock, models: dict[str, str]) -> None:
        super().__init__()
        self.bedrock = bedrock
        config = GatewayConfig.model_validate(
            {
                "backends": {"bedrock": bedrock.backend()},
                "models": [
                    {"name": name, "backends": [{"backend": "bedrock", "model": model}]}
                    for name, model in models.items()
                ],
            }
        )
        self.stage = UpstreamStage(config, Telemetry(config, registry=CollectorRegistry()))
        self.attempts: list[dict[str, Any]] = []

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._proxy)
        app.router.add_post("/v1/embeddings", self._proxy)
        app.on_cleanup.append(self._close)

    async def _close(self, app: web.Application) -> None:
        await self.stage.close()

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        doc = orjson.loads(body)
        options = doc.get("stream_options") or {}
        stream = ("usage" if options.get("include_usage") else "plain") if doc.get("stream") else ""
        state = RouteState(doc["model"], doc["model"], request.path, len(body), stream)
        exchange = self.stage.exchange()
        try:
            head = await exchange.request_headers(dict(request.headers), "bedrock", state)
            if head.error is not None:
                return self._immediate(head)
            assert head.request_body == "buffered"  # a Bedrock translator reads every body
            sent = await exchange.request_body(body)
            if sent.error is not None or sent.respond is not None:
                return self._immediate(sent)  # a refusal, or the merge of a fan-out
            headers = {**head.set_headers, **sent.set_headers}
            return await self._forward(request, exchange, headers, sent.body)
        finally:
            exchange.abort()

    async def _forward(
        self, request: web.Request, exchange: Exchange, headers: dict[str, str], body: bytes | None
    ) -> web.StreamResponse:
        # encoded=True: send the path exactly as translated, %3A included.
        url = yarl.URL(self.bedrock.url + headers[":path"], encoded=True)
        sent = {name: value for name, value in headers.items() if not name.startswith(":")}
        async with (
            # Like Envoy, leave a compressed answer as it is: the exchange decodes it.
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.post(url, data=body, headers=sent) as reply,
        ):
            upstream = {name.lower(): value for name, value in reply.headers.items()}
            head = exchange.response_headers({":status": str(reply.status), **upstream}, False)
            if head.error is not None:
                return self._immediate(head)
            status = int(head.set_headers.pop(":status", reply.status))
            if head.response_body == "buffered":  # Envoy holds the head until the body is in
                whole = await reply.read()
                step = exchange.response_body(whole, True)
                if step.error is not None:
                    return self._immediate(step)
                self._ended(step)
                out = whole if step.body is None else step.body
                return web.Response(
                    status=status, body=out, headers={**head.set_headers, **step.set_headers}
                )
            response = web.StreamResponse(status=status, headers=head.set_headers)
            await response.prepare(request)
            async for chunk in reply.content.iter_any():
                await response.write(self._streamed(exchange.response_body(chunk, False), chunk))
            await response.write(self._streamed(exchange.response_body(b"", True), b""))
            await response.write_eof()
            return response

    def _streamed(self, step: Step, chunk: bytes) -> bytes:
        assert step.error is None, step.error  # a 2xx stream ends with an error event instead
        self._ended(step)
        return chunk if step.body is None else step.body

    def _ended(self, step: Step) -> None:
        if step.metadata:
            self.attempts.append(step.metadata)

    def _immediate(self, step: Step) -> web.Response:
        """An answer the gateway makes itself: an error, or a fan-out's merge."""
        answer = error_response(step.error) if step.error is not None else step.respond
        assert answer is not None
        self._ended(step)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


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
    # What the upstream stage reported of the attempt: Bedrock's chat, with Bedrock's usage.
    last = gateway.attempts[-1]
    assert (last[Key.BACKEND], last[Key.MODEL]) == ("bedrock", "recorded")
    assert last[Key.USAGE_SOURCE] == "provider"
    assert last[Key.INPUT_TOKENS] == want["usage"]["prompt_tokens"]


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
    # The upstream stage sends a Titan batch as one call per input and merges the answers (a
    # caller that cannot fan out is refused it: test_bedrock_embeddings.py).
    batch = client.embeddings.create(model="titan", input=["a", "b"], encoding_format="float")
    assert [d.embedding for d in batch.data] == [vector("a", 1024), vector("b", 1024)]


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
