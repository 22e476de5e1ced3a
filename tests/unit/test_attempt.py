"""The attempt an exchange serves: fixed by its request headers, recorded once it ended."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from extproc.config import parse_config
from extproc.router import RouteState
from extproc.telemetry import Record, Telemetry
from extproc.upstream import UpstreamStage

CONFIG = {
    "backends": {
        "az": {
            "schema": "azure_openai",
            "url": "https://res.openai.azure.com",
            "api_key": "${KEY}",
        },
    },
    "models": [{"name": "*", "backends": [{"backend": "az"}]}],
}


class Recorded(Telemetry):
    def __init__(self) -> None:
        super().__init__(parse_config(CONFIG, {"KEY": "unused"}), registry=CollectorRegistry())
        self.records: list[Record] = []

    def record(self, rec: Record) -> None:
        self.records.append(rec)
        super().record(rec)


def test_a_request_the_backend_refuses_before_it_is_served_is_recorded() -> None:
    telemetry = Recorded()
    stage = UpstreamStage(parse_config(CONFIG, {"KEY": "unused"}), telemetry)
    ex = stage.exchange()
    # Azure puts the model in its path: a dot segment there is refused as the attempt starts.
    state = RouteState("a/../b", "a/../b", "/v1/chat/completions", 10)
    step = asyncio.run(ex.request_headers({"x-envoy-attempt-count": "2"}, "az", state))
    assert step.error is not None and step.done
    assert (step.error.status, step.error.code) == (400, "invalid_model")
    ex.abort()  # the stream ends: the attempt was recorded once, already
    assert len(telemetry.records) == 1
    rec = telemetry.records[0]
    assert (rec.status, rec.error_type, rec.attempt) == (400, "invalid_model", 2)
    assert (rec.backend, rec.request_model, rec.response_model) == ("az", "a/../b", "a/../b")
    assert rec.usage is None


def test_a_message_before_the_request_headers_is_a_bug_not_a_record() -> None:
    telemetry = Recorded()
    ex = UpstreamStage(parse_config(CONFIG, {"KEY": "unused"}), telemetry).exchange()
    with pytest.raises(RuntimeError, match="before the attempt's request headers"):
        ex.response_headers({":status": "200"}, False)
    ex.abort()
    assert telemetry.records == []
