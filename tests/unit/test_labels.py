"""Telemetry label bounds: client-controlled strings never grow the metrics without end."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from extproc.config import GatewayConfig, TelemetryConfig
from extproc.labels import CAPPED, NOT_ALLOWED, OTHER, TRUNCATED, LabelBounds, ValueSet
from extproc.telemetry import Record, Span, Telemetry


def bounds(
    drops: list[tuple[str, str]], directory: Path | None = None, **telemetry: object
) -> LabelBounds:
    config = TelemetryConfig.model_validate(
        {"header_attributes": {"x-tenant-id": "tenant", "x-team": "team"}, **telemetry}
    )
    return LabelBounds(config, {"gpt-4o", "up"}, lambda a, r: drops.append((a, r)), directory)


def test_configured_models_always_pass_and_others_stop_at_the_cap() -> None:
    drops: list[tuple[str, str]] = []
    b = bounds(drops, max_models=2)
    assert [b.model(m) for m in ("a", "b", "a", "c", "gpt-4o", "d")] == [
        "a", "b", "a", OTHER, "gpt-4o", OTHER,
    ]  # fmt: skip
    assert drops == [("gen_ai.request.model", CAPPED)] * 2
    assert b.model(OTHER) == OTHER and len(drops) == 2  # bounding twice counts once


def test_header_values_are_cut_capped_and_allow_listed() -> None:
    drops: list[tuple[str, str]] = []
    b = bounds(
        drops, max_value_length=4, max_header_values=2, header_values={"X-Team": ["red", "blue"]}
    )
    assert b.header_values({"tenant": "acme-corp", "team": "red"}) == {
        "tenant": "acme",
        "team": "red",
    }
    assert b.header_values({"tenant": "b", "team": "green"}) == {"tenant": "b", "team": OTHER}
    assert b.header_values({"tenant": "c", "team": ""}) == {"tenant": OTHER, "team": ""}
    assert b.header_values({"tenant": "acme", "unknown": "x"}) == {"tenant": "acme"}
    assert drops == [("tenant", TRUNCATED), ("team", NOT_ALLOWED), ("tenant", CAPPED)]


def test_the_set_is_shared_through_its_file_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "labels-x.jsonl"
    first, second = ValueSet(3, path), ValueSet(3, path)
    assert first.admit("a") and second.admit("b") and first.admit('línea\n"2"')
    assert not second.admit("d")  # three distinct values between the two processes
    assert second.admit("a") and second.admit('línea\n"2"')
    restarted = ValueSet(3, path)  # a new worker reads what its predecessors admitted
    assert not restarted.admit("e") and restarted.admit("b")


def test_telemetry_bounds_metrics_spans_and_counts_the_drops() -> None:
    config = GatewayConfig.model_validate(
        {
            "telemetry": {"header_attributes": {"x-tenant-id": "tenant"}, "max_models": 1},
            "backends": {"oa": {"schema": "openai", "url": "http://127.0.0.1:9/v1"}},
            "models": [{"name": "*", "backends": [{"backend": "oa"}]}],
        }
    )
    registry = CollectorRegistry()
    telemetry = Telemetry(config, registry=registry)
    for i in range(20):
        name = f"model-{i}-" + "x" * 200
        rec = Record("chat", "openai", name, name, "oa", 200, 0.1, extra={"tenant": "t" * 4000})
        telemetry.record(rec)
    text = generate_latest(registry).decode()
    assert "model-1-" not in text and "x" * 101 not in text and "t" * 101 not in text
    assert 'gen_ai_request_model="other"' in text
    assert (
        'ai_gateway_telemetry_labels_dropped_total{attribute="gen_ai.request.model",reason="cap"} 19.0'
        in text
    )
    assert (
        'ai_gateway_telemetry_labels_dropped_total{attribute="tenant",reason="truncated"} 20.0'
        in text
    )
    assert 'dropped_total{attribute="gen_ai.request.model",reason="truncated"} 20.0' in text


def test_label_sets_are_capped_where_bounded_values_would_multiply() -> None:
    drops: list[tuple[str, str]] = []
    b = bounds(drops, max_label_sets=3, header_values={"x-team": ["red"]})
    seen = [
        b.bound("chat", "oa", (model, model), {"tenant": tenant, "team": "red"})
        for model in ("a", "b")
        for tenant in ("t1", "t2")
    ]
    assert seen[:3] == [
        ("a", "a", {"tenant": "t1", "team": "red"}),
        ("a", "a", {"tenant": "t2", "team": "red"}),
        ("b", "b", {"tenant": "t1", "team": "red"}),
    ]
    # The fourth set: every client-chosen value is "other", what the config names stays.
    assert seen[3] == (OTHER, OTHER, {"tenant": OTHER, "team": "red"})
    assert drops == [("label_set", CAPPED)]
    # Sets of configured names only are never capped; bounding a bounded set changes nothing.
    assert b.bound("chat", "oa", ("gpt-4o", "up"), {"team": "red"})[0] == "gpt-4o"
    assert b.bound("chat", "oa", seen[3][:2], seen[3][2]) == seen[3]
    assert b.bound("chat", "oa", ("a", "a"), {"tenant": "t2", "team": "red"}) == seen[1]
    assert drops == [("label_set", CAPPED)]


def test_span_names_and_attributes_take_the_same_bounds() -> None:
    config = GatewayConfig.model_validate(
        {
            "telemetry": {"header_attributes": {"x-tenant-id": "tenant"}, "max_models": 0},
            "backends": {"oa": {"schema": "openai", "url": "http://127.0.0.1:9/v1"}},
            "models": [{"name": "*", "backends": [{"backend": "oa"}]}],
        }
    )
    telemetry = Telemetry(config, registry=CollectorRegistry())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = Span(provider.get_tracer("t").start_span("chat"), None, telemetry._bound)
    name = "n" * 200
    span.end(Record("chat", "openai", name, name, "oa", 200, 0.1, extra={"tenant": "t" * 500}))
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "chat other"
    assert finished.attributes is not None
    assert finished.attributes["gen_ai.request.model"] == "other"
    assert finished.attributes["tenant"] == "t" * 100
