"""The Bedrock inputs beyond text and images: service tiers, documents, guardrails (one test per
new row of the field table, and the guardrail setting)."""

from __future__ import annotations

import base64

import orjson
import pytest

from extproc.translate.bedrock.chat_response import usage_of
from extproc.translate.bedrock.guardrails import text_units
from extproc.translate.bedrock.stream import ConverseStream
from tests.bedrock_cases import HEAD, Json, chat, converse, rejected
from tests.fakes.bedrock import event_frame

PDF = base64.b64encode(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n").decode()
DOCX = base64.b64encode(b"PK\x03\x04" + b"\x00" * 40).decode()
XLS = base64.b64encode(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 40).decode()
TXT = base64.b64encode(b"plain words\n").decode()
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def _file(file: Json) -> Json:
    return {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "read this"}, {"type": "file", "file": file}]}]}  # fmt: skip


def _document(file: Json) -> Json:
    block: Json = converse(_file(file))["messages"][0]["content"][1]["document"]
    return block


# --- service_tier -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "sent"),
    [("default", "default"), ("flex", "flex"), ("priority", "priority"), ("scale", "reserved")],
)
def test_service_tier_maps_to_converse(tier: str, sent: str) -> None:
    assert converse({"service_tier": tier})["serviceTier"] == {"type": sent}


def test_service_tier_auto_sends_none_and_others_are_refused_by_name() -> None:
    assert "serviceTier" not in converse({"service_tier": "auto"})
    for value in ("standard", 1, ["flex"]):
        error = rejected({"service_tier": value})
        assert error.param == "service_tier" and "priority" in error.message


def test_the_served_tier_is_echoed() -> None:
    t = chat()
    t.request(
        orjson.dumps({"messages": [{"role": "user", "content": "hi"}], "service_tier": "flex"})
    )
    answer = {
        "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
        "stopReason": "end_turn",
        "serviceTier": {"type": "default"},
    }
    t.response_headers(200, HEAD)
    # Bedrock says which tier served: that one, not the one asked for.
    assert orjson.loads(t.response_body(orjson.dumps(answer), True))["service_tier"] == "default"
    t = chat()
    t.request(orjson.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    t.response_headers(200, HEAD)
    assert "service_tier" not in orjson.loads(
        t.response_body(orjson.dumps({**answer, "serviceTier": None}), True)
    )


def test_a_stream_carries_the_requested_tier() -> None:
    t = chat()
    t.request(orjson.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True,
                            "service_tier": "priority"}))  # fmt: skip
    head = {"content-type": "application/vnd.amazon.eventstream"}
    assert t.response_body_mode(200, head) == "streamed"
    t.response_headers(200, head)
    out = t.response_body(event_frame("messageStart", {"role": "assistant"}), False)
    assert orjson.loads(out.removeprefix(b"data: "))["service_tier"] == "priority"
    assert isinstance(t._stream, ConverseStream)


# --- file parts -> document blocks ---------------------------------------------------------------


def test_a_pdf_data_uri_becomes_a_document_block() -> None:
    assert _document({"file_data": f"data:application/pdf;base64,{PDF}", "filename": "Q3 report.pdf"}) == {
        "format": "pdf", "name": "Q3 report", "source": {"bytes": PDF}}  # fmt: skip


@pytest.mark.parametrize(
    ("file", "fmt"),
    [
        ({"file_data": f"data:{DOCX_MIME};base64,{DOCX}"}, "docx"),
        ({"file_data": XLS, "filename": "sheet.xls"}, "xls"),
        ({"file_data": f"data:text/markdown;base64,{TXT}"}, "md"),
        ({"file_data": f"data:text/csv;base64,{TXT}"}, "csv"),
        ({"file_data": TXT, "filename": "page.htm"}, "html"),
        ({"file_data": f"data:text/plain;base64,{TXT}", "filename": "notes.txt"}, "txt"),
    ],
)
def test_document_formats(file: Json, fmt: str) -> None:
    assert _document(file)["format"] == fmt


def test_document_names_follow_converse_rules() -> None:
    uri = f"data:application/pdf;base64,{PDF}"
    assert _document({"file_data": uri, "filename": "a_b..  c/../d!.pdf"})["name"] == "a b c d"
    assert _document({"file_data": uri, "filename": "x" * 300})["name"] == "x" * 200
    assert _document({"file_data": uri})["name"] == "document"
    two = {
        "role": "user",
        "content": [{"type": "file", "file": {"file_data": uri, "filename": "r.pdf"}}],
    }
    body = converse({"messages": [two, {"role": "assistant", "content": "ok"}, two]})
    names = [m["content"][0]["document"]["name"] for m in body["messages"][::2]]
    assert names == ["r", "r (2)"]


@pytest.mark.parametrize(
    ("file", "param", "says"),
    [
        ({"file_id": "file-abc"}, "file.file_id", "file_id"),
        ({"file_data": f"data:application/pdf;base64,{DOCX}"}, "file.file_data", "not a pdf"),
        ({"file_data": f"data:{DOCX_MIME};base64,{PDF}"}, "file.file_data", "not a docx"),
        ({"file_data": f"data:text/plain;base64,{PDF}"}, "file.file_data", "not a txt"),
        ({"file_data": f"data:image/png;base64,{TXT}"}, "file.file_data", "formats only"),
        ({"file_data": TXT, "filename": "noext"}, "file.file_data", "formats only"),
        ({"file_data": "data:application/pdf,%PDF"}, "file.file_data", "base64"),
        ({"file_data": "data:application/pdf;base64,!!!!"}, "file.file_data", "base64"),
        ({}, "file.file_data", "data: URI"),
    ],
)
def test_bad_file_parts_are_refused_by_name(file: Json, param: str, says: str) -> None:
    error = rejected(_file(file))
    assert error.param == f"messages[0].content[1].{param}"
    assert says in error.message


# --- guardrails ---------------------------------------------------------------------------------

GUARDRAIL = {"id": "gr1abc", "version": "2", "trace": "enabled"}


def test_a_guardrail_is_sent_with_every_call() -> None:
    assert converse({}, chat(guardrail=GUARDRAIL))["guardrailConfig"] == {
        "guardrailIdentifier": "gr1abc", "guardrailVersion": "2", "trace": "enabled"}  # fmt: skip
    streamed = converse(
        {"stream": True}, chat(guardrail={**GUARDRAIL, "stream_processing_mode": "async"})
    )
    assert streamed["guardrailConfig"]["streamProcessingMode"] == "async"
    assert "guardrailConfig" not in converse({})


def test_an_intervention_is_a_content_filter_with_the_guardrails_message() -> None:
    t = chat(guardrail=GUARDRAIL)
    t.request(orjson.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    t.response_headers(200, HEAD)
    answer = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Blocked by policy."}]}},
        "stopReason": "guardrail_intervened",
        "usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
        "trace": {"guardrail": {"inputAssessment": {"gr1abc": {}}}},
    }
    choice = orjson.loads(t.response_body(orjson.dumps(answer), True))["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] == "Blocked by policy."


# --- model families of ARNs on the chat side ----------------------------------------------------

PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"


def test_an_arn_reasons_as_its_declared_family() -> None:
    thought = converse({"reasoning_effort": "low"}, chat(PROFILE, family="claude"))
    assert thought["additionalModelRequestFields"]["thinking"]["budget_tokens"] == 4096
    for t in (chat(PROFILE, family="nova"), chat(PROFILE)):
        assert rejected({"reasoning_effort": "low"}, t).param == "reasoning_effort"
    # A named id keeps its own family and version rules.
    assert rejected({"reasoning_effort": "low"}, chat("anthropic.claude-3-haiku-v1:0")).param == (
        "reasoning_effort"
    )


def test_guardrail_text_units_sum_the_billed_policies_of_every_assessment() -> None:
    metrics = {
        "invocationMetrics": {
            "usage": {
                "topicPolicyUnits": 2,
                "contentPolicyUnits": 3,
                "wordPolicyUnits": 5,
                "sensitiveInformationPolicyUnits": 1,
                "sensitiveInformationPolicyFreeUnits": 7,
                "contextualGroundingPolicyUnits": -4,
            }
        }
    }
    trace = {
        "guardrail": {
            "inputAssessment": {"g1": metrics},
            "outputAssessments": {"g1": [metrics, {"invocationMetrics": None}], "g2": "odd"},
        }
    }
    assert text_units(trace) == 2 * (2 + 3 + 1)
    assert text_units(None) == text_units({"guardrail": []}) == 0
    usage = usage_of({"inputTokens": 1, "outputTokens": 2}, trace)
    assert usage.guardrail_units == 12
