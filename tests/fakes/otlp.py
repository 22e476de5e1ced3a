"""A real OTLP/gRPC receiver for tests: keeps every metric and span export it is sent.

    with OTLPReceiver() as otlp:
        env OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint
        otlp.sum("ai_gateway.requests", **{"gen_ai.request.model": "m"})

Metrics are exported cumulatively by each worker process (one OTel resource per process), so a
figure is the sum, over processes, of each process's latest data point.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mgrpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tgrpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.harness import free_port


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass(frozen=True, slots=True)
class Point:
    process: str  # the exporting process's resource, as a key
    metric: str
    attributes: tuple[tuple[str, Any], ...]
    value: float  # counter value, or histogram sum
    count: int  # histogram count (1 for counters)


class OTLPReceiver(mgrpc.MetricsServiceServicer, tgrpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Point] = {}
        self.spans: list[dict[str, Any]] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(4))
        mgrpc.add_MetricsServiceServicer_to_server(self, self._server)
        tgrpc.add_TraceServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, interval_ms: int = 300) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms),
            "OTEL_BSP_SCHEDULE_DELAY": str(interval_ms),
        }

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, mpb.ExportMetricsServiceRequest):
            self._metrics(request)
            return mpb.ExportMetricsServiceResponse()
        self._spans(request)
        return tpb.ExportTraceServiceResponse()

    def _metrics(self, request: mpb.ExportMetricsServiceRequest) -> None:
        with self._lock:
            for rm in request.resource_metrics:
                process = repr(sorted(attrs(rm.resource.attributes).items()))
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        for point in self._points(process, metric):
                            self._latest[(process, point.metric, point.attributes)] = point

    @staticmethod
    def _points(process: str, metric: Any) -> Iterator[Point]:
        kind = metric.WhichOneof("data")
        for dp in getattr(metric, kind).data_points:
            key = tuple(sorted(attrs(dp.attributes).items()))
            if kind == "histogram":
                yield Point(process, metric.name, key, dp.sum, dp.count)
            elif kind == "sum":
                value = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
                yield Point(process, metric.name, key, value, 1)

    def _spans(self, request: tpb.ExportTraceServiceRequest) -> None:
        with self._lock:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "span_id": span.span_id.hex(),
                                "attributes": attrs(span.attributes),
                            }
                        )

    def points(self, metric: str, **match: Any) -> list[Point]:
        with self._lock:
            found = [p for p in self._latest.values() if p.metric == metric]
        return [p for p in found if all(dict(p.attributes).get(k) == v for k, v in match.items())]

    def sum(self, metric: str, **match: Any) -> float:
        """Counter total, or histogram sum, over processes and attribute sets that match."""
        return sum(p.value for p in self.points(metric, **match))

    def count(self, metric: str, **match: Any) -> int:
        """Histogram count over processes and attribute sets that match."""
        return sum(p.count for p in self.points(metric, **match))

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop(grace=None)
