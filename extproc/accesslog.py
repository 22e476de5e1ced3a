"""Records of the attempts whose answers Envoy read itself (``accounting.mode: envoy``).

Such an attempt's router-stage stream ends as soon as the request leaves: the sidecar writes
what the record needs into dynamic metadata (:meth:`extproc.attempt.Attempt.hand_off`),
Envoy's ``json_to_metadata`` and ``sse_to_metadata`` filters add the answer's usage to the same
namespace (:func:`extproc.render_filters.usage_filters`), and Envoy's gRPC access logger brings the
finished request here, in batches, over a stream this service keeps open.

The record is built from those figures the way :func:`extproc.attempt.build_record` builds it
from what an exchange saw, and is accounted the same way (metrics, span).

The router's per-attempt log brings the upstream-stage attempts that got no answer (status 0)
the same way (:func:`unanswered`): a refused connection fails before the upstream stage's first
message leaves Envoy, so the sidecar never sees that attempt, and of those it did see it cannot
tell why they ended, while Envoy's response flags say (connect failure, timeout, reset). Such
an attempt is recorded from here only: the upstream stage leaves it out of its own records
(:meth:`~extproc.upstream.Exchange.abort`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from extproc import tokens
from extproc.cost import cost_usd
from extproc.endpoints import BY_OPERATION
from extproc.telemetry import Record, error_type
from extproc.translate import BAD_UPSTREAM_RESPONSE
from extproc.upstream import UpstreamStage
from extproc.usage import Usage, estimated, from_openai
from extproc.wire import (
    ATTEMPT_FAILURES,
    ATTEMPT_HEADER,
    BACKEND_TAG,
    NAMESPACE,
    USAGE_FIELDS,
    Key,
)

log = logging.getLogger(__name__)

# Where each lies in OpenAI's ``usage`` object: the keys above it, and its own name.
_USAGE_PLACES = {
    key: (tuple(path.split(".")[1:-1]), path.rpartition(".")[2])
    for key, path in USAGE_FIELDS.items()
}

# Response flags for an exchange that ended before its answer did.
_ENDED_EARLY = (
    "local_reset",
    "upstream_remote_reset",
    "upstream_connection_termination",
    "downstream_connection_termination",
    "downstream_remote_reset",
    "stream_idle_timeout",
    "upstream_request_timeout",
    "duration_timeout",
    "upstream_max_stream_duration_reached",
    "upstream_protocol_error",
    "downstream_protocol_error",
)


@dataclass(frozen=True, slots=True)
class Attempt:
    record: Record
    trace: str | None  # span ids (telemetry.Span.ids) when the attempt's span is recording
    start_ns: int
    end_ns: int
    headers: dict[str, str] | None = None  # an unanswered attempt's: its trace context


def _value(value: Any) -> Any:
    """A metadata value as JSON had it. Envoy stores every JSON number as a double, so an
    integral one is taken for the integer it was written as."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() else number
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None


def _usage(fields: Any) -> Usage | None:
    """The usage Envoy's filters copied, read by the very function that reads the sidecar's:
    the metadata is put back into the shape of OpenAI's ``usage`` object first."""
    if not any(key in fields for key in USAGE_FIELDS):
        return None
    usage: dict[str, Any] = {}
    for key, (parents, leaf) in _USAGE_PLACES.items():
        if key in fields:
            node = usage
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = _value(fields[key])
    return from_openai(usage)


def _string(fields: Any, key: str) -> str:
    return str(fields[key].string_value) if key in fields else ""


def _seconds(duration: Any) -> float:
    return float(duration.seconds + duration.nanos / 1e9)


def attempt(entry: accesslog_pb2.HTTPAccessLogEntry, stage: UpstreamStage) -> Attempt | None:
    """The record of one handed-off attempt, from its access-log entry; None for any other."""
    common = entry.common_properties
    namespace = common.metadata.filter_metadata.get(NAMESPACE)
    if namespace is None or Key.HANDED_OFF not in namespace.fields:
        return None
    fields = namespace.fields
    backend = stage.backend(_string(fields, Key.BACKEND))
    if backend is None:
        return None  # written by a sidecar with another config, during a reload
    model = _string(fields, Key.MODEL)
    stream = Key.STREAM in fields and fields[Key.STREAM].bool_value
    status = entry.response.response_code.value
    flags = common.response_flags
    ended_early = any(getattr(flags, name) for name in _ENDED_EARLY)
    usage = _usage(fields)
    ok = 200 <= status < 300
    # A provider reports usage once it is done: then the whole answer arrived, whoever closed
    # the connection after it. Envoy's SSE reader does not report `data: [DONE]`, so a stream
    # the provider closed cleanly but early looks like a complete stream without usage.
    cut = ended_early and usage is None
    if usage is None and ok:
        # Envoy saw the answer's bytes only: the estimate is rougher than the sidecar's.
        usage = estimated(
            tokens.body_tokens(entry.request.request_body_bytes),
            tokens.answer_tokens(entry.response.response_body_bytes, stream),
        )
    failure = BAD_UPSTREAM_RESPONSE if ok and not stream and Key.NOT_JSON in fields else None
    duration = _seconds(
        common.duration if common.HasField("duration") else common.time_to_last_downstream_tx_byte
    )
    # The provider's first byte (its head): the sidecar's own records take the first chunk.
    ttft = None
    if stream and ok and common.HasField("time_to_first_upstream_rx_byte"):
        ttft = _seconds(common.time_to_first_upstream_rx_byte)
    extra = fields[Key.EXTRA].struct_value.fields if Key.EXTRA in fields else {}
    rec = Record(
        operation=_string(fields, Key.OPERATION),
        provider=backend.provider,
        request_model=model,
        response_model=_string(fields, Key.RESPONSE_MODEL) or _string(fields, Key.UPSTREAM_MODEL),
        backend=backend.name,
        status=status,
        duration=duration,
        usage=usage,
        cost_usd=cost_usd(usage, stage.pricing(model, backend.name)),
        ttft=ttft,
        streaming=stream,
        cut=cut,
        error_type=error_type(status, cut, failure),
        attempt=common.upstream_request_attempt_count or 1,
        extra={key: str(value.string_value) for key, value in extra.items()},
    )
    start_ns = common.start_time.ToNanoseconds()
    trace = _string(fields, Key.TRACE) or None
    return Attempt(rec, trace, start_ns, start_ns + int(duration * 1e9))


def unanswered(entry: accesslog_pb2.HTTPAccessLogEntry, stage: UpstreamStage) -> Attempt | None:
    """The record of an upstream-stage attempt that got no answer, from the router's
    per-attempt log entry: why it ended is Envoy's word (its response flags). None for any
    other entry, and for a single-backend model's, which the router stage records itself."""
    common = entry.common_properties
    tags = common.custom_tags
    backend = stage.backend(tags.get(BACKEND_TAG, ""))
    headers = dict(entry.request.request_headers)
    # Only the routes of models with several backends carry the model (render_routes._routes): a
    # single-backend model's attempts are the router stage's to record. Without this check an
    # empty name would fall back to the wildcard route in stage.route.
    model = tags.get(Key.MODEL, "")
    if not model or backend is None:
        return None
    route, choice = stage.route(model, backend.name)
    endpoint = tags.get(Key.OPERATION, "")
    if route is None or choice is None or endpoint not in BY_OPERATION:
        return None
    if route.single_backend() is not None:
        return None
    flags = common.response_flags
    failure = next(
        (
            error
            for error, (_, names) in ATTEMPT_FAILURES.items()
            if any(getattr(flags, name) for name in names)
        ),
        None,
    )
    cut = failure is None  # no upstream failure: the client left, or Envoy did not say
    attempt_count = headers.get(ATTEMPT_HEADER, "")
    duration = _seconds(common.duration) if common.HasField("duration") else 0.0
    rec = Record(
        operation=endpoint,
        provider=backend.provider,
        request_model=model,
        response_model=choice.model or model,
        backend=backend.name,
        status=0,
        duration=duration,
        streaming=False,  # unknown to Envoy's per-attempt log; no byte of the answer came
        cut=cut,
        error_type=error_type(0, cut, failure),
        attempt=int(attempt_count) if attempt_count.isdigit() else 1,
        extra={attr: headers.get(name, "") for name, attr in stage.header_attributes.items()},
    )
    start_ns = common.start_time.ToNanoseconds()
    return Attempt(rec, None, start_ns, start_ns + int(duration * 1e9), headers)


class AccessLogReceiver(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Envoy's access-log service: each entry of a handed-off attempt, or of an attempt that
    got no answer, becomes its record."""

    def __init__(self, stage: UpstreamStage) -> None:
        self._stage = stage

    def take(self, message: als_pb2.StreamAccessLogsMessage) -> None:
        stage = self._stage
        for entry in message.http_logs.log_entry:
            try:
                # Only the unanswered attempts' log tags its entries with the backend.
                tagged = BACKEND_TAG in entry.common_properties.custom_tags
                found = unanswered(entry, stage) if tagged else attempt(entry, stage)
                if found is None:
                    continue
                stage.account(found.record)
                if found.trace is not None:
                    stage.end_span_later(found.trace, found.start_ns, found.end_ns, found.record)
                elif found.headers is not None:
                    stage.span_from_envoy(found.headers, found.start_ns, found.end_ns, found.record)
            except Exception:  # one bad entry must not cost the others their records
                log.exception("access log: could not account an entry")

    async def StreamAccessLogs(
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext,
    ) -> als_pb2.StreamAccessLogsResponse:
        # The stream lasts as long as Envoy's logger: it ends when Envoy stops or the worker
        # does (Envoy then opens one to another worker).
        async for message in request_iterator:
            self.take(message)
        return als_pb2.StreamAccessLogsResponse()
