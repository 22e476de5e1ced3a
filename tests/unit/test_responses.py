"""The Responses API without sockets: its usage reader, its stream observer in every split, the
pass-through's error events in Responses' shape, the prompt estimate, the router's stream kind,
Azure's path."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from extproc import tokens
from extproc.config import AzureOpenAIBackend, parse_config
from extproc.configbase import ConfigError
from extproc.render import render
from extproc.responses_usage import ResponsesObserver, error_event, from_responses
from extproc.router import ReadBody, Respond, Route, Router
from extproc.translate import RequestContext, azure
from extproc.translate.openai import PassThrough
from extproc.usage import Usage
from tests.fakes.responses import events, response, responses_reply

BODY = {"model": "gpt-4o-mini", "input": "hello there world", "stream": True}
REPLY = responses_reply(BODY)
STREAM = b"".join(events(REPLY, BODY))
SSE = {"content-type": "text/event-stream; charset=utf-8"}


def _ctx(stream: bool = True, include_usage: bool = True) -> RequestContext:
    return RequestContext(
        "responses", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini", "/v1/responses", stream,
        include_usage,
    )  # fmt: skip


def test_the_usage_object_is_read_with_its_own_names() -> None:
    usage = {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 12},
        "total_tokens": 130,
    }
    assert from_responses(usage) == Usage(100, 30, 130, 40, 12)
    assert from_responses({"input_tokens": 5, "output_tokens": -3}) == Usage(5, 0, 5)
    assert from_responses(None) is None and from_responses([1]) is None


@pytest.mark.parametrize("cut", range(1, len(STREAM), 97))
def test_the_observer_reads_a_stream_split_anywhere_and_changes_no_byte(cut: int) -> None:
    observer = ResponsesObserver()
    out = observer.feed(STREAM[:cut], False) + observer.feed(STREAM[cut:], True)
    assert out == STREAM
    assert observer.done and not observer.error
    assert observer.usage == Usage(3, 4, 7)  # the fake's word counts
    assert observer.model == "gpt-4o-mini"
    assert "".join(observer.said) == "Echo: hello there world"
    assert observer.sequence == STREAM.count(b"\n\n") - 1


def test_a_failed_response_and_an_error_event_end_the_stream_as_errors() -> None:
    failed = {"type": "response.failed", "sequence_number": 3, "response": {"usage": None}}
    for doc in (failed, {"type": "error", "code": "server_error", "sequence_number": 3}):
        observer = ResponsesObserver()
        observer.feed(b"data: " + orjson.dumps(doc) + b"\n\n", True)
        assert observer.done and observer.error


def test_a_buffered_answer_is_accounted_from_its_usage() -> None:
    translator = PassThrough(_ctx(stream=False), "/v1/responses")
    assert not translator.needs_request_body  # nothing to rewrite
    assert translator.response_body_mode(200, {"content-type": "application/json"}) == "buffered"
    translator.response_body(orjson.dumps(response(REPLY, BODY)), True)
    assert translator.usage == Usage(3, 4, 7)
    assert translator.response_model == "gpt-4o-mini"


def test_no_usage_is_asked_for_a_stream_whatever_the_route_said() -> None:
    translator = PassThrough(_ctx(include_usage=False), "/v1/responses")
    assert translator.forwards_unchanged and not translator.needs_request_body


def test_a_stream_cut_before_its_last_event_ends_with_a_responses_error_event() -> None:
    translator = PassThrough(_ctx(), "/v1/responses")
    assert translator.response_body_mode(200, SSE) == "streamed"
    kept = STREAM[: STREAM.index(b"event: response.output_text.done")]
    out = translator.response_body(kept, True)
    assert out.startswith(kept)
    last = out[len(kept) :]
    assert last.startswith(b"event: error\ndata: ")
    doc = orjson.loads(last.split(b"data: ", 1)[1])
    assert doc["type"] == "error" and doc["code"] == "stream_truncated"
    assert doc["sequence_number"] == kept.count(b"\n\n")  # the next after the last one seen
    assert translator.failure == "stream_truncated"
    assert translator.usage is None
    assert translator.output_tokens("gpt-4o-mini") == tokens.count(
        "Echo: hello there world", "gpt-4o-mini"
    )


def test_the_error_event_is_openais() -> None:
    event = error_event("event_too_large", "too big", 7)
    assert event.startswith(b"event: error\n") and event.endswith(b"\n\n")
    assert orjson.loads(event.split(b"data: ")[1]) == {
        "type": "error",
        "code": "event_too_large",
        "message": "too big",
        "param": None,
        "sequence_number": 7,
    }


def test_the_prompt_estimate_reads_instructions_items_and_tools() -> None:
    body = {
        "model": "gpt-4o-mini",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather in Paris?"}]},
            {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "sunny"},
        ],
        "tools": [{"type": "function", "name": "get_weather"}],
    }
    bare = {"model": "gpt-4o-mini", "input": "weather in Paris?"}
    assert tokens.prompt_tokens(orjson.dumps(bare), "gpt-4o-mini") == tokens.count(
        "weather in Paris?", "gpt-4o-mini"
    )
    assert tokens.prompt_tokens(orjson.dumps(body), "gpt-4o-mini") > 3 * tokens.TOKENS_PER_MESSAGE


def test_a_responses_stream_is_routed_as_one_that_reports_its_usage() -> None:
    config = parse_config(
        {
            "backends": {"oa": {"schema": "openai", "url": "http://127.0.0.1:1/v1"}},
            "models": [{"name": "gpt-4o-mini", "backends": [{"backend": "oa"}]}],
        }
    )
    router = Router(config)
    read = router.on_headers({":method": "POST", ":path": "/v1/responses"})
    assert isinstance(read, ReadBody) and read.api.operation == "responses"
    route = asyncio.run(router.on_body(read, orjson.dumps(BODY)))
    assert isinstance(route, Route) and route.state.stream == "usage"


def test_azure_sends_responses_to_its_v1_surface_on_either_surface() -> None:
    ctx = RequestContext("responses", "m", "my-gpt", "m", "/v1/responses?x=1")
    for surface in ("deployments", "v1"):
        config = parse_config(
            {"backends": {"az": {"schema": "azure_openai", "url": "https://r.openai.azure.com",
                                 "surface": surface, "api_key": "${K}"}}},
            {"K": "k"},
        )  # fmt: skip
        backend = config.backends["az"]
        assert isinstance(backend, AzureOpenAIBackend)
        translator = azure.translator(ctx, backend)
        request = translator.request(orjson.dumps({"model": "m", "input": "hi"}))
        assert request.path == "/openai/v1/responses?x=1", surface
        assert request.body is not None and orjson.loads(request.body)["model"] == "my-gpt"


STORED_CONFIG = {
    "backends": {
        "a": {"schema": "openai", "url": "http://127.0.0.1:1/v1"},
        "b": {"schema": "openai", "url": "http://127.0.0.1:2/v1"},
    },
    "models": [
        {"name": "solo", "backends": [{"backend": "a"}]},
        {"name": "pair", "backends": [{"backend": "a"}, {"backend": "b", "priority": 1}]},
    ],
}


def _stored(path: str, method: str = "GET", **headers: str) -> ReadBody | Respond:
    router = Router(parse_config(STORED_CONFIG))
    decision = router.on_headers({":method": method, ":path": path, **headers})
    assert isinstance(decision, ReadBody | Respond)
    return decision


def test_a_stored_response_needs_a_model_from_the_header_or_the_default() -> None:
    read = _stored("/v1/responses/resp_1")
    assert isinstance(read, ReadBody) and read.api.operation == "stored_responses"
    router = Router(parse_config(STORED_CONFIG))
    answer = asyncio.run(router.on_body(read, b""))
    assert isinstance(answer, Respond) and answer.status == 400
    assert b"x-ai-eg-model header, or set responses.default_model" in answer.body
    defaulted = Router(parse_config({**STORED_CONFIG, "responses": {"default_model": "solo"}}))
    route = asyncio.run(defaulted.on_body(read, b""))
    assert isinstance(route, Route) and route.state.model == "solo" and route.backend == "a"
    # input_tokens names its model in the body.
    count = _stored("/v1/responses/input_tokens", "POST")
    assert isinstance(count, ReadBody)
    route = asyncio.run(router.on_body(count, b'{"model": "pair", "input": "x"}'))
    assert isinstance(route, Route) and route.state.model == "pair"


def test_a_stored_response_keeps_the_query_it_defines_and_refuses_others() -> None:
    read = _stored("/v1/responses/resp_1/input_items?limit=5&order=asc")
    assert isinstance(read, ReadBody) and read.path.endswith("?limit=5&order=asc")
    refused = _stored("/v1/responses/resp_1?limit=1&secret=x")
    assert isinstance(refused, Respond) and refused.status == 400
    assert orjson.loads(refused.body)["error"]["param"] == "secret"
    wrong = _stored("/v1/responses/resp_1", "PUT")
    assert isinstance(wrong, Respond) and wrong.status == 405
    assert wrong.headers["allow"] == "GET, POST, DELETE"


def test_an_unknown_default_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"responses.default_model: unknown model 'nope'"):
        parse_config({**STORED_CONFIG, "responses": {"default_model": "nope"}})


def test_a_stored_response_of_a_model_of_several_backends_is_asked_of_each() -> None:
    doc = render(parse_config(STORED_CONFIG))
    hcm = doc["static_resources"]["listeners"][1]["filter_chains"][0]["filters"][0]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    (stored,) = [r for r in routes if r["name"] == "pair" and "prefix" in r["match"]]
    assert stored["match"]["prefix"] == "/v1/responses/"
    policy = stored["route"]["retry_policy"]
    assert 404 in policy["retriable_status_codes"] and policy["num_retries"] >= 1
    (made,) = [
        r for r in routes if r["name"] == "pair" and r["match"].get("path") == "/v1/responses"
    ]
    assert 404 not in made["route"]["retry_policy"].get("retriable_status_codes", [])


def test_a_stored_response_request_naming_no_model_is_not_rewritten() -> None:
    # Found by the secrets scan: a GET through a route whose backend renames the model was read
    # as a body to rewrite, and its empty body was a 400.
    ctx = RequestContext("stored_responses", "route", "upstream", None, "/v1/responses/resp_1")
    translator = PassThrough(ctx, "/v1/responses/resp_1")
    assert not translator.needs_request_body
    assert translator.request(None).path == "/v1/responses/resp_1"
    count = RequestContext("stored_responses", "route", "upstream", "route", "/v1/responses/x")
    assert PassThrough(count, "/v1/responses/input_tokens").needs_request_body  # it names one
