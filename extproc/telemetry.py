"""Where accounting goes: OpenTelemetry (OTLP metrics and traces) and Prometheus.

One :class:`Record` per upstream attempt, built by the upstream stage when the response ends
(or the client leaves). Metric names and attributes follow the OpenTelemetry GenAI semantic
conventions; the cost counter is ours.

OTLP export is configured by the standard ``OTEL_*`` environment variables and is off unless an
endpoint is set. Prometheus metrics are written by every worker into a shared directory
(``PROMETHEUS_MULTIPROC_DIR``) and served, summed over workers, by the supervisor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Histogram, Meter, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client import Histogram as PromHistogram

from extproc.endpoints import BY_OPERATION
from extproc.labels import LabelBounds
from extproc.usage import Usage

if TYPE_CHECKING:
    from collections.abc import Callable

    from extproc.config import GatewayConfig

log = logging.getLogger(__name__)

# Bucket boundaries recommended by the GenAI semantic conventions.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

# Who counted a record's tokens: "provider" or "estimated" (extproc.tokens, for an answer
# that ended without the provider's usage).
USAGE_SOURCE_ATTRIBUTE = "ai_gateway.usage_source"
USAGE_SOURCE_LABEL = "ai_gateway_usage_source"

_BASE_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "ai_gateway_backend",
    "error_type",
)


@dataclass(slots=True)
class Record:
    """One attempt to one backend, as it ended."""

    operation: str  # "chat" | "embeddings"
    provider: str  # gen_ai.provider.name: "openai", "azure.openai", "aws.bedrock"
    request_model: str
    response_model: str
    backend: str
    status: int
    duration: float  # seconds, request headers to last response byte
    usage: Usage | None = None
    cost_usd: float = 0.0
    ttft: float | None = None  # streams: seconds to the first response chunk
    streaming: bool = False
    cut: bool = False  # the client went away before the end
    error_type: str | None = None
    attempt: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    def attributes(self) -> dict[str, str]:
        attrs = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.request_model,
            "gen_ai.response.model": self.response_model,
            "ai_gateway.backend": self.backend,
            **self.extra,
        }
        if self.error_type:
            attrs["error.type"] = self.error_type
        return attrs

    @property
    def usage_source(self) -> str:
        """Who counted the tokens: ``provider``, ``estimated`` (the gateway), or ``""``."""
        return self.usage.source if self.usage is not None else ""

    def token_counts(self) -> dict[str, int]:
        u = self.usage
        if u is None:
            return {}
        counts = {"input": u.input_tokens}
        api = BY_OPERATION.get(self.operation)
        if api is None or api.output_tokens:  # embeddings have no output tokens to observe
            counts["output"] = u.output_tokens
        if u.cached_input_tokens:
            counts["cached_input"] = u.cached_input_tokens
        if u.cache_write_input_tokens:
            counts["cache_write"] = u.cache_write_input_tokens
        if u.reasoning_tokens:
            counts["reasoning"] = u.reasoning_tokens
        return counts

    def time_per_output_token(self) -> float | None:
        if self.ttft is None or self.usage is None or self.usage.output_tokens < 2:
            return None
        return (self.duration - self.ttft) / (self.usage.output_tokens - 1)


class _Prometheus:
    def __init__(self, extra_labels: Sequence[str], registry: CollectorRegistry) -> None:
        labels = [*_BASE_LABELS, *extra_labels]
        self.extra = list(extra_labels)
        self.tokens = PromHistogram(
            "gen_ai_client_token_usage",
            "Tokens used, by gen_ai_token_type and who counted them (ai_gateway_usage_source).",
            [*labels, "gen_ai_token_type", USAGE_SOURCE_LABEL], buckets=TOKEN_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.duration = PromHistogram(
            "gen_ai_server_request_duration_seconds", "Time to the last response byte.",
            labels, buckets=DURATION_BUCKETS, registry=registry,
        )  # fmt: skip
        self.ttft = PromHistogram(
            "gen_ai_server_time_to_first_token_seconds", "Streams: time to the first chunk.",
            labels, buckets=TTFT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.tpot = PromHistogram(
            "gen_ai_server_time_per_output_token_seconds", "Streams: time per output token after the first.",
            labels, buckets=TPOT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.cost = Counter(
            "ai_gateway_cost_usd", "Cost of the requests in USD.", labels, registry=registry
        )
        self.requests = Counter(
            "ai_gateway_requests", "Upstream attempts, by outcome.",
            [*labels, "ai_gateway_cut"], registry=registry,
        )  # fmt: skip
        self.dropped = Counter(
            "ai_gateway_telemetry_labels_dropped",
            "Label values replaced by 'other' or cut, because a bound was reached.",
            ["attribute", "reason"], registry=registry,
        )  # fmt: skip
        # (metric, label values) -> its child: labels() validates and converts its arguments
        # on every call, which cost more than the observation itself. The metrics keep one
        # child per label set anyway, so this holds nothing they do not.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def record(self, rec: Record) -> None:
        values = (
            rec.operation, rec.provider, rec.request_model, rec.response_model, rec.backend,
            rec.error_type or "", *(rec.extra.get(k, "") for k in self.extra),
        )  # fmt: skip
        source = rec.usage_source
        for kind, count in rec.token_counts().items():
            self._child(self.tokens, *values, kind, source).observe(count)
        self._child(self.duration, *values).observe(rec.duration)
        if rec.ttft is not None:
            self._child(self.ttft, *values).observe(rec.ttft)
        tpot = rec.time_per_output_token()
        if tpot is not None:
            self._child(self.tpot, *values).observe(tpot)
        if rec.cost_usd:
            self._child(self.cost, *values).inc(rec.cost_usd)
        self._child(self.requests, *values, "true" if rec.cut else "false").inc()


class _OTelMetrics:
    def __init__(self, meter: Meter) -> None:
        self.tokens: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used."
        )
        self.duration = meter.create_histogram(
            "gen_ai.server.request.duration", unit="s", description="Time to the last byte."
        )
        self.ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token", unit="s", description="Time to the first chunk."
        )
        self.tpot = meter.create_histogram(
            "gen_ai.server.time_per_output_token", unit="s", description="Time per output token."
        )
        self.cost = meter.create_counter(
            "ai_gateway.cost", unit="USD", description="Cost of the requests."
        )
        self.requests = meter.create_counter(
            "ai_gateway.requests", unit="{request}", description="Upstream attempts."
        )
        self.dropped = meter.create_counter(
            "ai_gateway.telemetry.labels_dropped",
            unit="{value}",
            description="Label values replaced or cut because a bound was reached.",
        )

    def record(self, rec: Record) -> None:
        attrs = rec.attributes()
        source = {USAGE_SOURCE_ATTRIBUTE: rec.usage_source}
        for kind, count in rec.token_counts().items():
            self.tokens.record(count, {**attrs, **source, "gen_ai.token.type": kind})
        self.duration.record(rec.duration, attrs)
        if rec.ttft is not None:
            self.ttft.record(rec.ttft, attrs)
        tpot = rec.time_per_output_token()
        if tpot is not None:
            self.tpot.record(tpot, attrs)
        if rec.cost_usd:
            self.cost.add(rec.cost_usd, attrs)
        self.requests.add(1, {**attrs, "ai_gateway.cut": rec.cut})


def _views() -> list[View]:
    buckets = {
        "gen_ai.client.token.usage": TOKEN_BUCKETS,
        "gen_ai.server.request.duration": DURATION_BUCKETS,
        "gen_ai.server.time_to_first_token": TTFT_BUCKETS,
        "gen_ai.server.time_per_output_token": TPOT_BUCKETS,
    }
    return [
        View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(list(b)))
        for name, b in buckets.items()
    ]


def _otlp_enabled(signal: str) -> bool:
    if os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp") == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def span_name(operation: str, model: str) -> str:
    return f"{operation} {model}"


def error_type(status: int, cut: bool, failure: str | None) -> str | None:
    """The ``error.type`` of an attempt: the failure the gateway named, the provider's error
    status, or for an answer cut short, whether any of it had arrived."""
    if failure is not None:
        return failure
    if status >= 400:
        return str(status)
    if cut:
        # Who ended the stream is unknown (Envoy does not say): only that it is incomplete.
        return "interrupted" if status else "no_response"
    return None


class _PresetIds(RandomIdGenerator):
    """Random ids, except for a span ended from Envoy's access log: it keeps the ids its
    attempt already sent to the provider in ``traceparent``."""

    def __init__(self) -> None:
        self.preset: tuple[int, int] | None = None  # (trace id, span id)

    def generate_trace_id(self) -> int:
        return self.preset[0] if self.preset is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        return self.preset[1] if self.preset is not None else super().generate_span_id()


class Span:
    """The span of one attempt, and the ``traceparent`` to send to the provider."""

    __slots__ = ("_bound", "_span", "traceparent")

    def __init__(
        self, span: trace.Span, traceparent: str | None, bound: Callable[[Record], None]
    ) -> None:
        self._span = span
        self.traceparent = traceparent
        self._bound = bound

    def ids(self) -> str | None:
        """``trace id:span id:parent span id`` (hex; no parent: empty), for a span that another
        worker ends later (:meth:`Telemetry.end_span_later`); None when not recording."""
        if not self._span.is_recording():
            return None
        ctx = self._span.get_span_context()
        parent = getattr(self._span, "parent", None)
        parent_id = f"{parent.span_id:016x}" if parent is not None else ""
        return f"{ctx.trace_id:032x}:{ctx.span_id:016x}:{parent_id}"

    def end(self, rec: Record, end_time: int | None = None) -> None:
        if not self._span.is_recording():
            return
        self._bound(rec)
        self._span.update_name(span_name(rec.operation, rec.request_model))
        self._span.set_attributes(rec.attributes())
        self._span.set_attributes(
            {"http.response.status_code": rec.status, "ai_gateway.attempt": rec.attempt}
        )
        for kind, count in rec.token_counts().items():
            self._span.set_attribute(f"gen_ai.usage.{kind}_tokens", count)
        if rec.usage is not None:
            self._span.set_attribute(USAGE_SOURCE_ATTRIBUTE, rec.usage_source)
            for unit in ("guardrail_units", "input_characters", "images", "audio_seconds"):
                if count := getattr(rec.usage, unit):
                    self._span.set_attribute(f"ai_gateway.{unit}", count)
        if rec.cost_usd:
            self._span.set_attribute("ai_gateway.cost_usd", rec.cost_usd)
        if rec.cut:
            self._span.set_attribute("ai_gateway.cut", True)
        if rec.error_type:
            self._span.set_status(trace.StatusCode.ERROR, rec.error_type)
        self._span.end(end_time)


class Telemetry:
    """Per worker process: the instruments, created once."""

    def __init__(
        self,
        config: GatewayConfig,
        registry: CollectorRegistry | None = None,
        service_name: str = "ai-gateway",
        directory: Path | None = None,
    ) -> None:
        """``directory``: where the workers of one gateway share the label bounds' sets."""
        resource = Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}
        )
        readers = []
        if _otlp_enabled("METRICS"):
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        self._ids = _PresetIds()
        self._meter_provider: MeterProvider | None = None
        if readers:
            self._meter_provider = MeterProvider(
                resource=resource, metric_readers=readers, views=_views()
            )
            meter = self._meter_provider.get_meter("ai-gateway")
        else:
            meter = NoOpMeterProvider().get_meter("ai-gateway")
        self._otel = _OTelMetrics(meter)
        self._tracer_provider: TracerProvider | None = None
        if _otlp_enabled("TRACES"):
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            self._tracer_provider = TracerProvider(resource=resource, id_generator=self._ids)
            self._tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            self._tracer: trace.Tracer = self._tracer_provider.get_tracer("ai-gateway")
        else:
            self._tracer = trace.NoOpTracer()
        self._propagator = TraceContextTextMapPropagator()
        extra_labels = sorted(set(config.telemetry.header_attributes.values()))
        self._prometheus = _Prometheus(extra_labels, registry or REGISTRY)
        configured = {m.name for m in config.models}
        configured.update(b.model for m in config.models for b in m.backends if b.model)
        self._bounds = LabelBounds(config.telemetry, configured, self._dropped, directory)

    def _dropped(self, attribute: str, reason: str) -> None:
        self._prometheus.dropped.labels(attribute, reason).inc()
        self._otel.dropped.add(1, {"attribute": attribute, "reason": reason})

    def _bound(self, rec: Record) -> None:
        """Bound the record's client-controlled labels, in place (a second call changes
        nothing: a bounded value passes its bound)."""
        models = (rec.request_model, rec.response_model)
        rec.request_model, rec.response_model, rec.extra = self._bounds.bound(
            rec.operation, rec.backend, models, rec.extra
        )

    def start_span(self, operation: str, headers: Mapping[str, str]) -> Span:
        """A client span continuing the request's W3C trace context, if any; named for its
        model when it ends (:meth:`Span.end`), once the model's label is bounded."""
        parent = self._propagator.extract(headers)
        span = self._tracer.start_span(operation, context=parent, kind=trace.SpanKind.CLIENT)
        if not span.is_recording():
            return Span(span, None, self._bound)
        carrier: dict[str, Any] = {}
        self._propagator.inject(
            carrier, context=trace.set_span_in_context(span, otel_context.Context())
        )
        return Span(span, carrier.get("traceparent"), self._bound)

    def end_span_later(self, ids: str, start_ns: int, end_ns: int, rec: Record) -> None:
        """The span of an attempt whose answer Envoy read (see :mod:`extproc.accesslog`),
        with the ids :meth:`Span.ids` gave when the attempt started, and Envoy's times."""
        trace_hex, span_hex, parent_hex = ids.split(":")
        trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
        parent = otel_context.Context()
        if parent_hex:
            remote = trace.SpanContext(
                trace_id, int(parent_hex, 16), is_remote=True, trace_flags=trace.TraceFlags(1)
            )
            parent = trace.set_span_in_context(trace.NonRecordingSpan(remote), parent)
        self._bound(rec)
        self._ids.preset = (trace_id, span_id)
        try:
            span = self._tracer.start_span(
                span_name(rec.operation, rec.request_model),
                context=parent,
                kind=trace.SpanKind.CLIENT,
                start_time=start_ns,
            )
        finally:
            self._ids.preset = None
        Span(span, None, self._bound).end(rec, end_ns)

    def span_from_envoy(
        self, headers: Mapping[str, str], start_ns: int, end_ns: int, rec: Record
    ) -> None:
        """The span of an attempt known from Envoy's log only, continuing the trace context
        its request headers held (the client's, or the previous attempt's)."""
        span = self._tracer.start_span(
            span_name(rec.operation, rec.request_model),
            context=self._propagator.extract(headers),
            kind=trace.SpanKind.CLIENT,
            start_time=start_ns,
        )
        Span(span, None, self._bound).end(rec, end_ns)

    def record(self, rec: Record) -> None:
        try:
            self._bound(rec)
            self._otel.record(rec)
            self._prometheus.record(rec)
        except Exception:  # accounting must never break a request
            log.exception("telemetry: failed to record")

    def shutdown(self) -> None:
        """Flush what is buffered (called on worker exit)."""
        if self._meter_provider is not None:
            self._meter_provider.shutdown()
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
