"""The gRPC layer: Envoy's ext_proc stream in, router / upstream decisions out.

Kept thin on purpose. Each gRPC stream is one HTTP request at one stage; the stage is named
by the ``x-ai-eg-stage`` initial metadata that the rendered Envoy config attaches. No state is
shared between streams, so any worker process can serve any stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import re
import signal
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2, text_format

from extproc.accesslog import AccessLogReceiver
from extproc.catalog import Catalog
from extproc.config import GatewayConfig
from extproc.errors import SERVER, GatewayError
from extproc.limits import Limiter
from extproc.limitstore import open_store
from extproc.prometheus import multiproc_directory
from extproc.router import ReadBody, Respond, Route, Router, RouteState, error_response
from extproc.step import Step
from extproc.telemetry import Telemetry
from extproc.transport import grpc_server_credentials, is_unix, owner_only
from extproc.uploads import Upload, Uploads, uploader
from extproc.upstream import Exchange, UpstreamStage
from extproc.wire import (
    ATTEMPT_HEADER,
    DETAILS,
    ERROR_DETAILS,
    EXT_PROC_FILTER,
    NAMESPACE,
    SOURCE_ADDRESS,
    STAGE_METADATA,
    UPSTREAM_HOST_METADATA,
    UPSTREAM_STAGE,
    Key,
)

log = logging.getLogger("extproc.server")

_Mode = processing_mode_pb2.ProcessingMode
_BODY_MODES = {"none": _Mode.NONE, "streamed": _Mode.STREAMED, "buffered": _Mode.BUFFERED}
# The router reads the body; if one backend serves the model, this stream serves the response
# too, so its header phase is turned on (the filter's default is off, see render_filters.py).
# Envoy replaces the whole mode with an override, so every phase is spelled out.
_READ_BODY = pb.ProcessingResponse(
    request_headers=pb.HeadersResponse(),
    mode_override=_Mode(
        request_header_mode=_Mode.SEND,
        request_body_mode=_Mode.BUFFERED,
        response_header_mode=_Mode.SEND,
        response_body_mode=_Mode.NONE,
    ),
)
_CONTINUE_RESPONSE_HEADERS = pb.ProcessingResponse(response_headers=pb.HeadersResponse())


def _headers(message: Any) -> dict[str, str]:
    return {h.key: (h.raw_value or h.value.encode()).decode("latin-1") for h in message.headers}


_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _mutation(set_headers: Mapping[str, str], remove: Iterable[str]) -> pb.HeaderMutation:
    mutation = pb.HeaderMutation()
    _fill_mutation(mutation, set_headers, remove)
    return mutation


def _fill_mutation(
    mutation: pb.HeaderMutation, set_headers: Mapping[str, str], remove: Iterable[str]
) -> None:
    # Filled in place: a third of the time of building each option and copying it in.
    mutation.remove_headers.extend(remove)
    add = mutation.set_headers.add
    for key, value in set_headers.items():
        option = add(append_action=_OVERWRITE)
        option.header.key = key
        option.header.raw_value = value.encode("latin-1")


def _set_metadata(metadata: Any, values: Mapping[str, Any]) -> None:
    """``values`` into the gateway's namespace of a dynamic metadata Struct."""
    namespace = metadata.fields[NAMESPACE].struct_value
    fields = namespace.fields
    for key, value in values.items():
        # Struct.update does the same, in a generic recursive walk that took ~20 us here.
        if isinstance(value, str):
            fields[key].string_value = value
        elif isinstance(value, bool):
            fields[key].bool_value = value
        elif isinstance(value, int | float):
            fields[key].number_value = value
        elif value is None:
            fields[key].null_value = struct_pb2.NULL_VALUE
        else:
            namespace.update({key: value})


def immediate(
    status: int, body: bytes, headers: Mapping[str, str], details: str
) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=_mutation(headers, ()),
            body=body,
            details=details,
        )
    )


def _error_reply(err: GatewayError) -> pb.ProcessingResponse:
    r = error_response(err)
    return immediate(r.status, r.body, r.headers, ERROR_DETAILS)


def _internal_error() -> pb.ProcessingResponse:
    return _error_reply(GatewayError(500, "The gateway failed to process this request.", SERVER))


# --- router stage -----------------------------------------------------------------------------


async def _router_stream(
    router: Router,
    stage: UpstreamStage,
    upload: Upload,
    requests: AsyncIterator[pb.ProcessingRequest],
) -> AsyncIterator[pb.ProcessingResponse]:
    """Request headers, then for the POST endpoints the body: the router's decision is an
    answer, a route for the upstream stage, or the one backend this stream then serves."""
    req = await anext(requests, None)
    if req is None:
        return
    kind = req.WhichOneof("request")
    if kind != "request_headers":
        yield _unexpected(kind)
        return
    client_headers = _headers(req.request_headers.headers)
    decision = router.on_headers(client_headers)
    body = b""
    if isinstance(decision, ReadBody):
        if req.request_headers.end_of_stream:
            decision = await router.on_body(decision, body)
        else:
            key = decision.client.name if decision.client else None
            try:
                upload.begin(
                    uploader(key, _attribute(req, SOURCE_ADDRESS)),
                    client_headers.get("content-length"),
                )
            except GatewayError as err:
                yield _error_reply(err)
                return
            yield _READ_BODY
            req = await anext(requests, None)
            if req is None:
                return
            kind = req.WhichOneof("request")
            if kind != "request_body":
                yield _unexpected(kind)
                return
            upload.end()
            body = req.request_body.body
            decision = await router.on_body(decision, body)
    if isinstance(decision, Respond):
        yield immediate(decision.status, decision.body, decision.headers, DETAILS)
        return
    assert isinstance(decision, Route)  # the router asks for the body once
    if decision.backend is None:
        yield _route_reply(kind, decision)
        return
    # One backend: this stream serves the request the way the upstream stage would serve an
    # attempt, which saves Envoy and the sidecar a second gRPC stream per request.
    exchange = stage.exchange(router_stage=True)
    try:
        step = await _single_backend_request(exchange, decision, client_headers, body)
        yield _step_reply(kind, step, clear_route_cache=True)
        if step.done or step.error is not None or step.respond is not None:
            return
        async for reply in _drive(exchange, requests):
            yield reply
    finally:
        exchange.abort()


def _unexpected(kind: str | None) -> pb.ProcessingResponse:
    """The reply to a message the router stage does not expect at this point."""
    if kind == "response_headers":
        # Envoy answered by itself before the request was routed (e.g. 413 for a body over
        # the limit): nothing to do with that answer.
        return _CONTINUE_RESPONSE_HEADERS
    log.warning("router stage: unexpected %s message", kind)
    return _internal_error()


def _route_reply(kind: str, route: Route) -> pb.ProcessingResponse:
    """Several backends: Envoy picks one per attempt and the upstream stage serves it, from
    what the router decided, forwarded to it in dynamic metadata. Ending the stream after this
    reply skips the response phases for this request."""
    reply = pb.ProcessingResponse()
    _set_metadata(reply.dynamic_metadata, route.state.metadata())
    common = getattr(reply, kind).response
    common.clear_route_cache = True
    headers = route.headers
    if route.body is not None:
        common.body_mutation.body = route.body
        headers = {**headers, "content-length": str(len(route.body))}
    _fill_mutation(common.header_mutation, headers, route.remove)
    return reply


async def _single_backend_request(
    exchange: Exchange, route: Route, client_headers: Mapping[str, str], body: bytes
) -> Step:
    """The request steps of the upstream stage, merged into the router's one reply."""
    assert route.backend is not None
    # Envoy counts attempts only on upstream requests; a client's own count means nothing here.
    headers = {k: v for k, v in client_headers.items() if k != ATTEMPT_HEADER}
    first = await exchange.request_headers(headers, route.backend, route.state)
    if first.error is not None or first.respond is not None:
        return first
    body = route.body if route.body is not None else body  # decoded, if it came compressed
    if first.request_body == "buffered":
        first = first.then(await exchange.request_body(body))
        if first.error is not None or first.respond is not None:
            return first
    else:
        exchange.client_body(body)
    if first.body is None and route.body is not None:
        first.body = route.body  # the translator forwards the body as it is: decoded
    first.set_headers = {**route.headers, **first.set_headers}
    first.remove_headers = [*route.remove, *first.remove_headers]
    # The access log and Envoy's own error replies name the model.
    first.metadata = {Key.MODEL: route.state.model, **(first.metadata or {})}
    # Request-side modes were decided by the router's own configuration.
    first.request_body = None
    return first


# --- upstream stage ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _backend_from_metadata(text: str) -> str:
    # Envoy sends the host metadata in protobuf text format; one string per endpoint, so the
    # parse is cached.
    metadata = base_pb2.Metadata()
    try:
        text_format.Parse(text, metadata)
    except text_format.ParseError:
        return ""
    ns = metadata.filter_metadata.get(NAMESPACE)
    if ns is None or Key.BACKEND not in ns.fields:
        return ""
    return str(ns.fields[Key.BACKEND].string_value)


def _attribute(req: pb.ProcessingRequest, key: str) -> str:
    attrs = req.attributes.get(EXT_PROC_FILTER)
    value = attrs.fields.get(key) if attrs is not None else None
    return str(value.string_value) if value is not None else ""


def _backend_of(req: pb.ProcessingRequest) -> str:
    text = _attribute(req, UPSTREAM_HOST_METADATA)
    return _backend_from_metadata(text) if text else ""


def _route_state(req: pb.ProcessingRequest) -> RouteState | None:
    """The router's decision for this request, forwarded by Envoy in dynamic metadata."""
    namespace = req.metadata_context.filter_metadata.get(NAMESPACE)
    if namespace is None or Key.PATH not in namespace.fields:
        return None
    fields = namespace.fields
    return RouteState.from_metadata(
        {
            key: getattr(value, value.WhichOneof("kind") or "null_value")
            for key, value in fields.items()
        }
    )


def _mode_override(step: Step) -> Any:
    if step.request_body is None and step.response_headers is None and step.response_body is None:
        return None
    mode = _Mode()
    if step.request_body is not None:
        mode.request_body_mode = _BODY_MODES[step.request_body]
    if step.response_headers is not None:
        mode.response_header_mode = _Mode.SEND if step.response_headers else _Mode.SKIP
    if step.response_body == "buffered":
        # BUFFERED would hold an answer larger than the buffer limit until a timeout fires;
        # BUFFERED_PARTIAL sends what fits, still before the head, so Exchange can refuse it.
        mode.response_body_mode = _Mode.BUFFERED_PARTIAL
    elif step.response_body is not None:
        mode.response_body_mode = _BODY_MODES[step.response_body]
    return mode


def _step_reply(kind: str, step: Step, clear_route_cache: bool = False) -> pb.ProcessingResponse:
    if step.error is not None:
        return _error_reply(step.error)
    answer = step.respond
    reply = (
        immediate(answer.status, answer.body, answer.headers, DETAILS)
        if answer is not None
        else pb.ProcessingResponse()
    )
    if step.metadata:
        _set_metadata(reply.dynamic_metadata, step.metadata)
    if answer is not None:
        return reply
    # Built in place in the reply: copying a finished CommonResponse in cost as much again.
    common = getattr(reply, kind).response
    common.SetInParent()  # an empty reply is still this phase's reply
    if clear_route_cache:
        common.clear_route_cache = True
    if step.set_headers or step.remove_headers:
        _fill_mutation(common.header_mutation, step.set_headers, step.remove_headers)
    if step.body is not None:
        common.body_mutation.body = step.body
    if kind in ("request_headers", "response_headers"):
        mode = _mode_override(step)
        if mode is not None:
            reply.mode_override.CopyFrom(mode)
    return reply


async def _upstream_stream(
    stage: UpstreamStage, requests: AsyncIterator[pb.ProcessingRequest]
) -> AsyncIterator[pb.ProcessingResponse]:
    exchange = stage.exchange()
    try:
        async for reply in _drive(exchange, requests):
            yield reply
    finally:
        # Ending here without a last chunk means the request was cut (the client left, an
        # upstream reset or a timeout): it is still accounted, with what was seen; if nothing
        # came back, from Envoy's per-attempt log, which says why.
        exchange.abort(unanswered_logged=True)


async def _drive(
    exchange: Exchange, requests: AsyncIterator[pb.ProcessingRequest]
) -> AsyncIterator[pb.ProcessingResponse]:
    async for req in requests:
        kind = req.WhichOneof("request")
        if kind == "request_headers":
            step = await exchange.request_headers(
                _headers(req.request_headers.headers), _backend_of(req), _route_state(req)
            )
        elif kind == "request_body":
            step = await exchange.request_body(req.request_body.body)
        elif kind == "response_headers":
            step = exchange.response_headers(
                _headers(req.response_headers.headers), req.response_headers.end_of_stream
            )
        elif kind == "response_body":
            step = exchange.response_body(req.response_body.body, req.response_body.end_of_stream)
        else:
            log.warning("upstream stage: unexpected %s message", kind)
            yield _internal_error()
            return
        yield _step_reply(kind, step)
        if step.done or step.error is not None:
            return


# --- service ----------------------------------------------------------------------------------


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(
        self, config: GatewayConfig, telemetry: Telemetry, limits_snapshot: Path | None = None
    ) -> None:
        self._store = open_store(config.ratelimit_store, limits_snapshot) if config.limits else None
        self._limiter = (
            Limiter(config.limits, self._store, fail_open=config.ratelimit_fail_open)
            if self._store is not None
            else None
        )
        catalog = Catalog(config)
        self._router = Router(config, self._limiter, catalog)
        self._uploads = Uploads(config.http)
        self._upstream = UpstreamStage(config, telemetry, self._limiter)
        self.access_log = AccessLogReceiver(self._upstream)
        # Built by serve(), on the worker's loop: the catch-all backends' model lists are read
        # from now on, beside the streams.
        self._catalog_task = asyncio.get_running_loop().create_task(catalog.run())

    async def close(self) -> None:
        self._catalog_task.cancel()
        await asyncio.gather(self._catalog_task, return_exceptions=True)
        await self._upstream.close()  # pending debits first: they need the store
        if self._store is not None:
            await self._store.aclose()

    async def Process(
        self,
        request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ProcessingResponse]:
        stage = dict(context.invocation_metadata() or ()).get(STAGE_METADATA)
        upload = self._uploads.upload()
        stream = (
            _upstream_stream(self._upstream, request_iterator)
            if stage == UPSTREAM_STAGE
            else _router_stream(self._router, self._upstream, upload, request_iterator)
        )
        try:
            async for reply in stream:
                yield reply
        except Exception:
            if context.done():
                # Envoy ended the stream while a reply was on its way (grpc throws the failed
                # send in here): nobody is left to answer, and nothing of ours broke.
                log.debug("ext_proc %s stream ended by Envoy during a reply", stage)
                return
            # A bug of ours must cost one request a clean 500, never the worker.
            log.exception("ext_proc %s stream failed", stage)
            yield _internal_error()
        finally:
            # However the stream ended (the body arrived, Envoy cut it: the client left,
            # timeouts.upload), its upload no longer counts.
            upload.end()


async def serve(config: GatewayConfig, address: str, max_message_bytes: int) -> None:
    """Serve one worker on ``address`` (``127.0.0.1:1063`` or ``unix:/path.sock``)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    server = grpc.aio.server(options=options)
    state = multiproc_directory()
    telemetry = Telemetry(config, directory=state)
    # The directory lives as long as the supervisor: a worker it restarts after a crash finds
    # the memory store's counters of the worker it replaces (one file per worker address).
    slug = re.sub(r"[^A-Za-z0-9]+", "_", address)
    snapshot = state / f"limits-{slug}.json" if state is not None else None
    processor = ExternalProcessor(config, telemetry, snapshot)
    pb_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(processor.access_log, server)
    tls = config.sidecar.tls
    if is_unix(address):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address[5:])
        with owner_only():
            server.add_insecure_port(address)
    elif tls is not None:
        if server.add_secure_port(address, grpc_server_credentials(tls)) == 0:
            raise OSError(f"cannot listen on {address}")
    elif server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    # What exists now (config, translators, gRPC, telemetry) lives as long as the worker: out
    # of the collector's way, a full collection no longer walks it every few hundred requests.
    gc.collect()
    gc.freeze()
    secured = "owner-only socket" if is_unix(address) else "mutual TLS" if tls else "PLAINTEXT"
    log.info("ext_proc worker %d listening on %s (%s)", os.getpid(), address, secured)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Open streams get the drain time: in `ai-gateway serve` Envoy drains its own connections
    # meanwhile, and their requests still need this worker.
    await server.stop(grace=config.http.drain_time)
    await processor.close()
    telemetry.shutdown()


def run_worker(config: GatewayConfig, address: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional (e.g. on Windows); asyncio's loop works too
        pass
    max_bytes = 3 * config.http.max_request_bytes + 1024 * 1024
    asyncio.run(serve(config, address, max_bytes))
