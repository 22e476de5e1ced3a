"""Records of handed-off attempts, from Envoy's access-log entries (accounting.mode: envoy)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2
from prometheus_client import CollectorRegistry

from extproc import tokens
from extproc.accesslog import AccessLogReceiver, attempt, unanswered
from extproc.config import Pricing, parse_config
from extproc.cost import cost_usd
from extproc.telemetry import Record, Telemetry
from extproc.upstream import UpstreamStage
from extproc.usage import Usage
from extproc.wire import NAMESPACE

PRICE = {"input": 1.0, "cached_input": 0.5, "output": 2.0}


@pytest.fixture
def stage() -> UpstreamStage:
    config = parse_config(
        {
            "accounting": {"mode": "envoy"},
            "backends": {"oa": {"schema": "openai", "url": "http://127.0.0.1:9/v1"}},
            "models": [{"name": "m", "backends": [{"backend": "oa", "model": "up"}], "pricing": PRICE}],
        },
        {},
    )  # fmt: skip
    return UpstreamStage(config, Telemetry(config, registry=CollectorRegistry()))


def _entry(
    fields: dict[str, Any], status: int = 200, stream: bool = False, **flags: bool
) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    meta = struct_pb2.Struct()
    meta.update(
        {
            "handed_off": True,
            "backend": "oa",
            "model": "m",
            "upstream_model": "up",
            "operation": "chat",
            "stream": stream,
            **fields,
        }
    )
    common.metadata.filter_metadata[NAMESPACE].CopyFrom(meta)
    common.start_time.FromNanoseconds(1_700_000_000_000_000_000)
    common.duration.FromMilliseconds(250)
    common.time_to_first_upstream_rx_byte.FromMilliseconds(40)
    common.upstream_request_attempt_count = 1
    for name, value in flags.items():
        setattr(common.response_flags, name, value)
    if status:
        entry.response.response_code.value = status
    return entry


USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "total_tokens": 120,
    "cached_input_tokens": 40,
    "reasoning_tokens": 5,
    "response_model": "up-2024",
}


def test_a_buffered_answer_is_recorded_like_the_sidecar_records_it(stage: UpstreamStage) -> None:
    found = attempt(_entry({**USAGE, "extra": {"tenant": "acme"}}), stage)
    assert found is not None
    rec = found.record
    usage = Usage(100, 20, 120, 40, 5)
    assert rec.usage == usage
    assert rec.cost_usd == cost_usd(usage, Pricing(**PRICE))
    assert (rec.provider, rec.backend, rec.request_model, rec.response_model) == (
        "openai", "oa", "m", "up-2024",
    )  # fmt: skip
    assert rec.error_type is None and not rec.cut and rec.ttft is None
    assert rec.duration == pytest.approx(0.25)
    assert rec.extra == {"tenant": "acme"}
    assert found.end_ns - found.start_ns == 250_000_000


def test_a_stream_gets_its_time_to_first_byte(stage: UpstreamStage) -> None:
    found = attempt(_entry(USAGE, stream=True), stage)
    assert found is not None and found.record.ttft == pytest.approx(0.04)


@pytest.mark.parametrize(
    ("value", "counted"),
    [(12, 12), (-3, 0), ("12", 0), (True, 0), (2.5, 0), (None, 0)],
)
def test_token_counts_are_read_as_the_sidecar_reads_them(
    stage: UpstreamStage, value: Any, counted: int
) -> None:
    found = attempt(_entry({"input_tokens": value, "output_tokens": 3}), stage)
    assert found is not None and found.record.usage is not None
    assert found.record.usage.input_tokens == counted
    assert found.record.usage.total_tokens == counted + 3


@pytest.mark.parametrize(
    ("fields", "status", "stream", "flags", "error_type", "cut"),
    [
        ({"not_json": True}, 200, False, {}, "bad_upstream_response", False),
        ({"not_json": True}, 500, False, {}, "500", False),
        ({}, 200, True, {"downstream_connection_termination": True}, "interrupted", True),
        ({}, 0, True, {"upstream_request_timeout": True}, "no_response", True),
        (USAGE, 200, True, {"downstream_connection_termination": True}, None, False),
        ({}, 200, True, {}, None, False),
        ({}, 429, False, {}, "429", False),
    ],
)
def test_failures_are_named(
    stage: UpstreamStage,
    fields: dict[str, Any],
    status: int,
    stream: bool,
    flags: dict[str, bool],
    error_type: str | None,
    cut: bool,
) -> None:
    found = attempt(_entry(fields, status=status, stream=stream, **flags), stage)
    assert found is not None
    assert (found.record.error_type, found.record.cut) == (error_type, cut)


@pytest.mark.parametrize("stream", [True, False])
def test_an_answer_without_usage_is_estimated_from_its_sizes(
    stage: UpstreamStage, stream: bool
) -> None:
    """Envoy reads no text: a 2xx answer without usage is counted from the bytes it moved."""
    entry = _entry({}, stream=stream, downstream_connection_termination=stream)
    entry.request.request_body_bytes = 460
    entry.response.response_body_bytes = 4000
    found = attempt(entry, stage)
    assert found is not None
    output = tokens.answer_tokens(4000, stream)
    assert found.record.usage == Usage(100, output, 100 + output, estimated=True)
    assert found.record.usage_source == "estimated"
    assert found.record.cost_usd == cost_usd(found.record.usage, Pricing(**PRICE))


def test_an_error_without_usage_is_not_estimated(stage: UpstreamStage) -> None:
    found = attempt(_entry({}, status=429), stage)
    assert found is not None and found.record.usage is None


def test_entries_of_requests_the_sidecar_served_are_ignored(stage: UpstreamStage) -> None:
    entry = _entry(USAGE)
    del entry.common_properties.metadata.filter_metadata[NAMESPACE].fields["handed_off"]
    assert attempt(entry, stage) is None
    unknown = _entry({**USAGE, "backend": "gone"})
    assert attempt(unknown, stage) is None


def test_one_bad_entry_does_not_cost_the_others_their_records(stage: UpstreamStage) -> None:
    recorded: list[Record] = []

    def account(rec: Record, buckets: str = "") -> None:
        if rec.request_model == "bad":
            raise RuntimeError("boom")
        recorded.append(rec)

    stage.account = account  # type: ignore[method-assign]
    message = als_pb2.StreamAccessLogsMessage()
    message.http_logs.log_entry.extend([_entry({**USAGE, "model": "bad"}), _entry(USAGE)])
    AccessLogReceiver(stage).take(message)
    assert [r.request_model for r in recorded] == ["m"]


# --- attempts that got no answer (the router's per-attempt log) --------------------------------


def _two_tier_stage() -> UpstreamStage:
    config = parse_config(
        {
            "backends": {
                "a": {"schema": "openai", "url": "http://127.0.0.1:9/v1"},
                "b": {"schema": "openai", "url": "http://127.0.0.1:10/v1"},
            },
            "models": [
                {"name": "m", "backends": [{"backend": "a", "model": "up"}, {"backend": "b"}]},
                {"name": "single", "backends": [{"backend": "a"}]},
            ],
            "telemetry": {"header_attributes": {"x-tenant": "tenant"}},
        },
        {},
    )
    return UpstreamStage(config, Telemetry(config, registry=CollectorRegistry()))


def _unanswered_entry(model: str = "m", **flags: bool) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    # The tags render_logs._unanswered_to_sidecar asks Envoy for: the router's decision.
    common.custom_tags.update({"backend": "a", "model": model, "operation": "chat"})
    common.start_time.FromNanoseconds(1_700_000_000_000_000_000)
    common.duration.FromMilliseconds(3)
    for name, value in flags.items():
        setattr(common.response_flags, name, value)
    entry.request.request_headers.update(
        {
            "x-envoy-attempt-count": "1",
            "x-tenant": "acme",
        }
    )
    return entry


@pytest.mark.parametrize(
    ("flags", "error", "cut"),
    [
        ({"upstream_connection_failure": True}, "connect_failure", False),
        ({"upstream_request_timeout": True}, "timeout", False),
        ({"upstream_remote_reset": True}, "reset", False),
        ({"upstream_connection_termination": True}, "reset", False),
        ({"downstream_remote_reset": True}, "no_response", True),  # the client left
    ],
)
def test_an_unanswered_attempt_is_named_by_envoys_flags(
    flags: dict[str, bool], error: str, cut: bool
) -> None:
    found = unanswered(_unanswered_entry(**flags), _two_tier_stage())
    assert found is not None
    rec = found.record
    assert (rec.backend, rec.request_model, rec.response_model) == ("a", "m", "up")
    assert (rec.status, rec.error_type, rec.cut, rec.attempt) == (0, error, cut, 1)
    assert (rec.operation, rec.streaming, rec.extra) == ("chat", False, {"tenant": "acme"})
    assert rec.usage is None and rec.cost_usd == 0.0
    assert found.end_ns - found.start_ns == 3_000_000


def test_a_single_backend_models_attempt_is_left_to_the_router_stage() -> None:
    entry = _unanswered_entry(model="single", upstream_connection_failure=True)
    assert unanswered(entry, _two_tier_stage()) is None


def test_an_entry_of_a_route_without_metadata_is_not_taken_for_the_wildcard() -> None:
    # A single-backend model's route carries no model tag; with a wildcard route over the same
    # backend, the empty name must not be recorded as a second, wildcard attempt.
    config = parse_config(
        {
            "backends": {
                "a": {"schema": "openai", "url": "http://127.0.0.1:9/v1"},
                "b": {"schema": "openai", "url": "http://127.0.0.1:10/v1"},
            },
            "models": [
                {"name": "single", "backends": [{"backend": "a"}]},
                {"name": "*", "backends": [{"backend": "a"}, {"backend": "b"}]},
            ],
        },
        {},
    )
    stage = UpstreamStage(config, Telemetry(config, registry=CollectorRegistry()))
    entry = _unanswered_entry(upstream_connection_failure=True)
    del entry.common_properties.custom_tags["model"]
    assert unanswered(entry, stage) is None


def test_the_receiver_accounts_unanswered_attempts() -> None:
    stage = _two_tier_stage()
    message = als_pb2.StreamAccessLogsMessage()
    message.http_logs.log_entry.append(_unanswered_entry(upstream_connection_failure=True))
    got: list[Record] = []
    stage.account = lambda rec, buckets="": got.append(rec)  # type: ignore[method-assign]
    AccessLogReceiver(stage).take(message)
    assert [r.error_type for r in got] == ["connect_failure"]
