"""Upstream stage: one attempt to the backend Envoy picked, translated, authenticated, accounted.

Runs in the ext_proc filter of each model cluster's upstream filter chain, so Envoy calls it
once per attempt, after it chose the endpoint: a retry that lands on another provider is
translated and signed afresh for that provider. The endpoint's metadata names the backend.

The stage drives a :class:`~extproc.translate.Translator` and an :class:`~extproc.auth.Auth`;
it returns plain :class:`~extproc.step.Step` values that the gRPC layer turns into protobuf replies. When the
response ends, or its stream is cut short, it hands one :class:`~extproc.telemetry.Record` to
telemetry and writes the same figures into Envoy's dynamic metadata (see :mod:`extproc.attempt`).

A request that takes several provider calls (a :class:`~extproc.translate.FanOut` translator
says so) is sent by the stage itself through :mod:`extproc.fanout`, and the merged answer goes
back to the client as an immediate response, accounted like any other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from extproc import encoding
from extproc.attempt import Attempt, Serving, build_record, record_metadata
from extproc.backends import BackendRuntime, build_backends
from extproc.config import GatewayConfig, ModelBackend, ModelIndex, ModelRoute, Pricing
from extproc.cost import pricing_for
from extproc.endpoints import api_for
from extproc.errors import SERVER, UPSTREAM, GatewayError
from extproc.fanout import FanOutClient
from extproc.imagefetch import ImageFetcher
from extproc.limits import Limiter
from extproc.router import Respond, RouteState
from extproc.step import Step
from extproc.telemetry import Record, Span, Telemetry
from extproc.translate import (
    FanOut,
    RequestContext,
    Translator,
    Unbuffered,
    UpstreamReply,
    UpstreamRequest,
    bad_upstream_response,
)
from extproc.translate.openai import PassThrough
from extproc.wire import ATTEMPT_HEADER

# Credential headers any backend may set. Envoy hands every attempt the header map the previous
# attempt left behind, so each attempt first removes what any attempt may have added.
_CREDENTIAL_HEADERS = (
    "authorization",
    "api-key",
    "x-api-key",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "traceparent",
    "tracestate",
)

RESPONSE_TOO_LARGE = "response_too_large"  # a buffered answer over http.max_request_bytes


class UpstreamStage:
    """Per-worker state: the backends built from the config, and telemetry."""

    def __init__(
        self, config: GatewayConfig, telemetry: Telemetry, limiter: Limiter | None = None
    ) -> None:
        self._config = config
        self._routes = ModelIndex(config.models)
        self._backends = build_backends(config)
        self._telemetry = telemetry
        self._limiter = limiter
        self._debits: set[asyncio.Task[None]] = set()
        self._fanout = FanOutClient(config)
        self.images = ImageFetcher(config)  # image URLs downloaded for the backends that opt in
        owned = set(_CREDENTIAL_HEADERS)
        for backend in self._backends.values():
            owned.update(backend.static_headers)
        # Read by each Exchange. The headers any attempt may have set, removed from each (a
        # shared list: copy it to change it); the largest body Envoy buffers, hence the largest
        # an answer may decode to.
        self.owned_headers = sorted(owned)
        self.buffer_limit = config.http.max_request_bytes

    def exchange(self, router_stage: bool = False) -> Exchange:
        """``router_stage``: the attempt is served by the router stage (a model with one
        backend), a downstream filter of Envoy's, not by the upstream stage. Only it may leave
        the answer to Envoy (``accounting.mode: envoy``): Envoy's access log sees its dynamic
        metadata."""
        return Exchange(self, router_stage and self._config.accounting.by_envoy, router_stage)

    def backend(self, name: str) -> BackendRuntime | None:
        return self._backends.get(name)

    def route(
        self, route_model: str, backend: str
    ) -> tuple[ModelRoute | None, ModelBackend | None]:
        """The model route Envoy chose (or the wildcard one) and its entry for ``backend``."""
        model = self._routes.route(route_model)
        return model, model.backend_entry(backend) if model else None

    def pricing(self, route_model: str, backend: str) -> Pricing | None:
        return pricing_for(*self.route(route_model, backend))

    def account(self, rec: Record, buckets: str = "") -> None:
        self._telemetry.record(rec)
        self.debit(buckets, rec.usage.total_tokens if rec.usage else 0, rec.cost_usd)

    def end_span_later(self, ids: str, start_ns: int, end_ns: int, rec: Record) -> None:
        self._telemetry.end_span_later(ids, start_ns, end_ns, rec)

    def span_from_envoy(
        self, headers: Mapping[str, str], start_ns: int, end_ns: int, rec: Record
    ) -> None:
        self._telemetry.span_from_envoy(headers, start_ns, end_ns, rec)

    @property
    def header_attributes(self) -> Mapping[str, str]:
        return self._config.telemetry.header_attributes

    def start_span(self, operation: str, headers: Mapping[str, str]) -> Span:
        return self._telemetry.start_span(operation, headers)

    async def fan_out(
        self, backend: BackendRuntime, parts: Sequence[UpstreamRequest], headers: Mapping[str, str]
    ) -> list[UpstreamReply]:
        """Send ``parts`` of one request to ``backend`` (see :mod:`extproc.fanout`)."""
        return await self._fanout.send(backend, parts, headers)

    def debit(self, buckets: str, tokens: int, cost: float) -> None:
        """Charge the request's rate-limit buckets with its usage, without holding the reply."""
        if self._limiter is None or not buckets or not (tokens or cost):
            return
        task = asyncio.ensure_future(self._limiter.debit(buckets.split(","), tokens, cost))
        self._debits.add(task)  # a task without a reference may be collected before it runs
        task.add_done_callback(self._debits.discard)

    async def close(self) -> None:
        if self._debits:
            await asyncio.gather(*self._debits, return_exceptions=True)
        await self._fanout.close()


class Exchange:
    """One attempt, from request headers to the last response chunk."""

    __slots__ = (
        "_billed",
        "_body",
        "_buffered",
        "_coding",
        "_decoder",
        "_first_chunk",
        "_may_hand_off",
        "_recorded",
        "_router_stage",
        "_serving",
        "_stage",
        "_started",
        "_status",
    )

    def __init__(
        self, stage: UpstreamStage, may_hand_off: bool = False, router_stage: bool = False
    ) -> None:
        self._stage = stage
        self._may_hand_off = may_hand_off
        self._router_stage = router_stage
        self._serving: Serving | None = None  # set once by the request headers
        self._started = time.monotonic()
        self._status = 0
        self._first_chunk: float | None = None
        self._buffered = False  # the response body comes whole, its head held until then
        self._coding = ""  # the answer's content coding, when compressed although unasked
        self._decoder: encoding.Decoder | None = None
        self._billed = False  # a 2xx answer the client got an error for: usage is estimated
        self._recorded = False
        self._body: bytes | None = None  # the client's body, when this stage has it

    def _served(self) -> Serving:
        serving = self._serving
        if serving is None:
            # Envoy sends the request headers first on every stream; a bug of ours otherwise.
            raise RuntimeError("an ext_proc message before the attempt's request headers")
        return serving

    # --- request ------------------------------------------------------------------------------

    async def request_headers(
        self, headers: Mapping[str, str], backend_name: str, state: RouteState | None
    ) -> Step:
        """``headers``: the client's; ``state``: what the router decided for the request
        (None if Envoy forwarded none: a config rendered for another sidecar)."""
        try:
            return await self._request_headers(headers, backend_name, state)
        except GatewayError as err:
            return self._fail(err)

    async def _request_headers(
        self, headers: Mapping[str, str], backend_name: str, state: RouteState | None
    ) -> Step:
        stage = self._stage
        backend = stage.backend(backend_name)
        route_model = state.model if state else ""
        model, entry = stage.route(route_model, backend_name)
        path = state.path if state else ""
        api = api_for(path.partition("?")[0])
        if state is None or backend is None or entry is None or api is None:
            # Only reachable if Envoy's config and ours disagree (stale render).
            raise GatewayError(
                500,
                f"Gateway misconfiguration: no backend {backend_name!r} for model"
                f" {route_model!r} on {path!r}; re-render the Envoy config.",
                SERVER,
            )
        ctx = RequestContext(
            endpoint=api.operation,
            route_model=route_model,
            upstream_model=entry.model or route_model,
            body_model=state.body_model,
            path=path,
            stream=bool(state.stream),
            include_usage=state.stream == "usage",
            settings=entry,
        )
        number = headers.get(ATTEMPT_HEADER, "1")
        attempt = Attempt(
            ctx=ctx,
            backend=backend,
            pricing=pricing_for(model, entry),
            span=stage.start_span(api.operation, headers),
            number=int(number) if number.isdigit() else 1,
            extra={attr: headers.get(name, "") for name, attr in stage.header_attributes.items()},
            buckets=state.ratelimit,
            request_bytes=state.request_bytes,
        )
        try:
            translator = backend.translator(ctx)
        except GatewayError as err:
            # The backend refused the request outright (an endpoint it does not serve, a
            # model name it cannot put in its path): still an attempt, recorded as such.
            return self._fail(err, attempt)
        serving = Serving(
            attempt,
            translator,
            handed_off=self._may_hand_off
            # Envoy's readers know where its usage is (not embeddings': see endpoints.py).
            and api.envoy_usage is not None
            and isinstance(translator, PassThrough)
            and translator.forwards_unchanged
            # Rate-limit debits are made at once by the sidecar; the access log comes later.
            and not attempt.buckets
            # The cost header of a buffered answer is added by the sidecar.
            and (ctx.stream or attempt.pricing is None),
        )
        self._serving = serving
        wants_response = serving.wants_response
        step = Step(
            set_headers={
                **backend.static_headers,
                ":authority": backend.authority,
                # What the sidecar and Envoy's readers can read (see extproc/encoding.py).
                "accept-encoding": encoding.ACCEPT_ENCODING,
            },
            remove_headers=stage.owned_headers,
            response_headers=wants_response,
            response_body=None if wants_response else "none",
        )
        if attempt.span.traceparent:
            step.set_headers["traceparent"] = attempt.span.traceparent
        if translator.needs_request_body or backend.auth.needs_body:
            step.request_body = "buffered"
            return step
        step.request_body = "none"
        await self._finish_request(serving, step, None)
        return step

    async def request_body(self, body: bytes) -> Step:
        serving = self._served()
        translator = serving.translator
        step = Step()
        try:
            body = await self._stage.images.inline(serving.attempt, body)
            if isinstance(translator, FanOut):
                parts = translator.fan_out(body)
                if parts is not None:
                    return await self._fan_out(serving.attempt, translator, parts)
            await self._finish_request(serving, step, body)
        except GatewayError as err:
            return self._fail(err)
        return step

    async def _fan_out(
        self, attempt: Attempt, translator: FanOut, parts: list[UpstreamRequest]
    ) -> Step:
        """Send the parts of a request one call cannot carry; answer with their merge."""
        traceparent = attempt.span.traceparent
        trace = {"traceparent": traceparent} if traceparent else {}
        replies = await self._stage.fan_out(attempt.backend, parts, trace)
        self._status, body = translator.merge(replies)
        metadata = self._finish(cut=False)
        answer = Respond(self._status, body, {"content-type": "application/json"})
        attempt.cost_header(metadata, answer.headers)
        return Step(respond=answer, metadata=metadata, done=True)

    def client_body(self, body: bytes) -> None:
        """The client's body when the attempt needs not read it (the router stage has it),
        kept for an estimate of the prompt should the answer come without usage."""
        self._body = body

    async def _finish_request(self, serving: Serving, step: Step, body: bytes | None) -> None:
        attempt = serving.attempt
        if body is not None:
            self._body = body
        request = serving.translator.request(body)
        backend = attempt.backend
        await backend.auth.apply(request, backend.authority)
        step.set_headers.update(request.headers)
        step.set_headers[":path"] = request.path
        if request.body is not None:
            step.body = request.body
            step.set_headers["content-length"] = str(len(request.body))
        elif attempt.request_bytes:
            step.set_headers["content-length"] = str(attempt.request_bytes)
        if serving.handed_off:
            self._recorded = True  # by the access log, not by abort()
            step.metadata = attempt.hand_off()
        step.done = not serving.wants_response

    # --- response -----------------------------------------------------------------------------

    def response_headers(self, headers: Mapping[str, str], end_of_stream: bool) -> Step:
        translator = self._served().translator
        status = int(headers.get(":status", "0") or 0)
        self._status = status
        head = translator.response_headers(status, headers)
        mode = "none" if end_of_stream else translator.response_body_mode(status, headers)
        coding = encoding.codings(headers.get("content-encoding")) if mode != "none" else []
        limit = self._stage.buffer_limit
        if (
            mode == "buffered"
            and _length(headers) > limit
            and self._unbuffered(status, bool(coding))
        ):
            # Announced too large to buffer, and needs no rewrite: passed on, and read as it
            # passes where Envoy allows it. In an upstream filter chain, Envoy 1.40 crashes
            # (SIGSEGV, measured) when an ext_proc that streamed a large body lowers its
            # watermark after the provider's response ended: there Envoy passes it on alone.
            mode = "streamed" if self._router_stage else "none"
        self._buffered = mode == "buffered"
        step = Step(
            set_headers=dict(head.set), remove_headers=list(head.remove), response_body=mode
        )
        if head.status is not None:
            step.set_headers[":status"] = str(head.status)
            self._status = head.status
        if coding:
            # The gateway asked for identity; a provider that compressed anyway is read too.
            if len(coding) > 1 or coding[0] not in encoding.SUPPORTED:
                return self._fail(encoding.unreadable_answer(", ".join(coding)))
            self._coding = coding[0]
            step.remove_headers += ["content-encoding", "content-length"]
        if mode == "none":  # accounted at its headers (speech), which still carry its cost
            step.metadata = self._finish(cut=False)
            self._served().attempt.cost_header(step.metadata, step.set_headers)
            step.done = True
        return step

    def _unbuffered(self, status: int, compressed: bool) -> bool:
        """Whether the answer may be read as it passes (see :class:`Unbuffered`), from now on.
        Not when compressed unasked: each chunk would be replaced by its decoded bytes, more
        than one gRPC message may carry, and the rest Envoy passes on unread stays compressed."""
        translator = self._served().translator
        if compressed or not (200 <= status < 300 and isinstance(translator, Unbuffered)):
            return False
        translator.read_unbuffered()
        return True

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Step:
        serving = self._served()
        if self._first_chunk is None:
            self._first_chunk = time.monotonic()
        if self._buffered and not end_of_stream:
            # Envoy sends a buffered body before its end only when it outgrew the buffer limit
            # (see server._mode_override), and then passes the rest on without the sidecar. An
            # answer that needs no rewrite goes on too, accounted from what was seen; no
            # translator can read part of a JSON document.
            self._buffered = False
            if not self._unbuffered(self._status, bool(self._coding)):
                return self._too_large(len(chunk))
            out = self._passed_on(serving.translator, chunk, end_of_stream=False)
            return Step(body=out, metadata=self._finish(cut=False), done=True)
        try:
            out = self._passed_on(serving.translator, chunk, end_of_stream)
        except GatewayError as err:
            # A buffered 2xx answer the translator cannot pass on: its head is still held by
            # Envoy, so an immediate response replaces the whole answer.
            return self._fail(err)
        step = Step(body=out, done=end_of_stream)
        if end_of_stream:
            step.metadata = self._finish(cut=False)
            serving.attempt.cost_header(step.metadata, step.set_headers)
        return step

    def _passed_on(self, translator: Translator, chunk: bytes, end_of_stream: bool) -> bytes | None:
        """What the client gets of ``chunk`` (None: the chunk as it came)."""
        raw = chunk
        if self._coding:
            decoder = self._decoder
            if decoder is None:
                limit = self._stage.buffer_limit
                decoder = self._decoder = encoding.Decoder(
                    self._coding, limit, whole=self._buffered
                )
            chunk = _decode(decoder, chunk, end_of_stream)
        out = translator.response_body(chunk, end_of_stream)
        return None if out is raw else out

    def _too_large(self, seen: int) -> Step:
        """The 502 in place of an answer too large to buffer that must be rewritten; the
        provider billed it all the same, so its usage is estimated (see :meth:`_finish`)."""
        self._billed = 200 <= self._status < 300
        return self._fail(
            GatewayError(
                502,
                f"The provider's answer is larger than the gateway's buffer limit ({seen}"
                " bytes) and must be translated whole; ask for less (fewer inputs, a shorter"
                " answer) or raise http.max_request_bytes.",
                UPSTREAM,
                code=RESPONSE_TOO_LARGE,
            )
        )

    # --- accounting ---------------------------------------------------------------------------

    def abort(self, unanswered_logged: bool = False) -> None:
        """The stream ended early: record what was seen.

        Envoy closes the ext_proc stream the same way whether the client left, the provider
        reset the connection or a timeout fired, so the cause is unknown here.
        ``unanswered_logged`` (the upstream stage): an attempt that got no answer at all is
        left to Envoy's per-attempt log, which says why (see :func:`extproc.accesslog.unanswered`);
        its span, never ended here, is made from that log too.
        """
        if unanswered_logged and self._status == 0:
            self._recorded = True
            return
        self._finish(cut=True)

    def _fail(self, err: GatewayError, refused: Attempt | None = None) -> Step:
        """``refused``: the attempt, when the backend refused it before it was served."""
        self._status = err.status
        failure = err.code or err.type
        attempt = refused or (self._serving.attempt if self._serving is not None else None)
        err = attempt.in_its_shape(err) if attempt is not None else err
        if refused is not None:
            self._record(refused, None, cut=False, failure=failure)
        else:
            self._finish(cut=False, failure=failure)
        return Step(error=err, done=True)

    def _finish(self, cut: bool, failure: str | None = None) -> dict[str, Any]:
        """Record the attempt once; returns the dynamic metadata describing it."""
        serving = self._serving
        if self._recorded or serving is None:
            return {}
        return self._record(serving.attempt, serving.translator, cut, failure)

    def _record(
        self, attempt: Attempt, translator: Translator | None, cut: bool, failure: str | None
    ) -> dict[str, Any]:
        self._recorded = True
        first_chunk = self._first_chunk
        rec = build_record(
            attempt,
            translator,
            status=self._status,
            duration=time.monotonic() - self._started,
            ttft=first_chunk - self._started if first_chunk is not None else None,
            cut=cut,
            failure=failure,
            billed=self._billed,
            body=self._body,
        )
        meta = record_metadata(rec)
        # After the metadata: telemetry bounds the record's labels (a model may become "other").
        self._stage.account(rec, attempt.buckets)
        attempt.span.end(rec)
        return meta


def _decode(decoder: encoding.Decoder, chunk: bytes, end_of_stream: bool) -> bytes:
    try:
        return decoder.feed(chunk, end_of_stream)
    except (ValueError, OverflowError) as exc:
        # Buffered, the 502 replaces the answer; streamed, it cuts the stream short.
        raise bad_upstream_response(
            f"The provider's compressed answer is unreadable: {exc}."
        ) from None


def _length(headers: Mapping[str, str]) -> int:
    """The body length a response head announces; 0 when it announces none (chunked)."""
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else 0
