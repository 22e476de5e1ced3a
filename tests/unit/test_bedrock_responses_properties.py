"""Properties of the Responses translator on Bedrock: any request is a Converse body or a 4xx
naming a parameter; any Converse answer or event stream, cut anywhere, becomes a document or
typed events the SDK reads, ending once."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from extproc.errors import GatewayError
from extproc.translate import RequestContext
from extproc.translate.bedrock.responses import BedrockResponses
from extproc.translate.bedrock.responses_fields import RESPONSES_FIELDS
from tests.unit.test_bedrock_responses_answer import parse
from tests.unit.test_properties import (
    PROPERTY,
    _chunked,
    _is_client_error,
    _unless_known,
    bedrock_events,
    converse_bodies,
    cut_lists,
    json_values,
)

EVENT_STREAM = {"content-type": "application/vnd.amazon.eventstream"}


def _translator() -> BedrockResponses:
    ctx = RequestContext("responses", "client-model", "m", "client-model", "/v1/responses")
    return BedrockResponses(ctx, "/prefix")


items = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(
                ["message", "function_call", "function_call_output", "reasoning", "x"]
            ),
            "role": st.sampled_from(["system", "developer", "user", "assistant", "tool"]),
            "content": json_values,
            "call_id": json_values,
            "name": json_values,
            "arguments": json_values,
            "output": json_values,
            "summary": json_values,
            "encrypted_content": json_values,
        },
    ),
    max_size=4,
)
requests = st.fixed_dictionaries(
    {"input": items | json_values},
    optional={rule.name: json_values for rule in RESPONSES_FIELDS if rule.name != "input"},
)


@PROPERTY
@given(doc=requests)
def test_a_request_is_a_converse_body_or_a_client_error(doc: dict[str, Any]) -> None:
    t = _translator()
    try:
        request = _unless_known(lambda: t.request(orjson.dumps(doc)))
    except GatewayError as err:
        assert _is_client_error(err) and err.param
        return
    converse = orjson.loads(request.body or b"")
    assert isinstance(converse, dict) and converse["messages"]
    assert request.path.startswith("/prefix/model/m/converse")


@PROPERTY
@given(
    field=st.sampled_from([rule.name for rule in RESPONSES_FIELDS]),
    value=json_values,
)
def test_every_field_with_any_value_is_handled(field: str, value: Any) -> None:
    t = _translator()
    try:
        _unless_known(lambda: t.request(orjson.dumps({"input": "hi", field: value})))
    except GatewayError as err:
        assert _is_client_error(err) and err.param


@PROPERTY
@given(body=converse_bodies.map(orjson.dumps) | st.binary(max_size=64))
def test_any_answer_is_a_document_or_a_502(body: bytes) -> None:
    t = _translator()
    t.request(b'{"input": "hi"}')
    t.response_headers(200, {"content-type": "application/json"})
    try:
        out = _unless_known(lambda: t.response_body(body, True))
    except GatewayError as err:
        assert err.status == 502
        return
    assert orjson.loads(out)["object"] == "response"


@PROPERTY
@given(events=st.lists(bedrock_events(), max_size=10), tail=st.binary(max_size=24), cuts=cut_lists)
def test_any_event_stream_becomes_typed_events_that_end_once(
    events: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    t = _translator()
    t.request(b'{"input": "hi", "stream": true}')
    t.response_headers(200, EVENT_STREAM)
    assert t.response_body_mode(200, EVENT_STREAM) == "streamed"
    parts = _chunked(b"".join(events) + tail, cuts)
    out = _unless_known(
        lambda: b"".join(t.response_body(p, i == len(parts) - 1) for i, p in enumerate(parts))
    )
    docs = parse(out)
    assert [doc["sequence_number"] for doc in docs] == list(range(len(docs)))
    last = ("response.completed", "response.incomplete", "response.failed", "error")
    assert [doc["type"] in last for doc in docs].count(True) == 1
    assert docs[-1]["type"] in last
