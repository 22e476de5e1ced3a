"""Upstream stage: one attempt to the backend Envoy picked, translated, authenticated, accounted.

Runs in the ext_proc filter of each model cluster's upstream filter chain, so Envoy calls it
once per attempt, after it chose the endpoint: a retry that lands on another provider is
translated and signed afresh for that provider. The endpoint's metadata names the backend.

The stage drives a :class:`~extproc.translate.Translator` and an :class:`~extproc.auth.Auth`;
it returns plain :class:`Step` values that the gRPC layer turns into protobuf replies. When the
response ends, or its stream is cut short, it hands one :class:`~extproc.telemetry.Record` to
telemetry and writes the same figures into Envoy's dynamic metadata.

A request that takes several provider calls (a :class:`~extproc.translate.FanOut` translator
says so) is sent by the stage itself through :mod:`extproc.fanout`, and the merged answer goes
back to the client as an immediate response, accounted like any other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from extproc import encoding, tokens
from extproc.auth import Auth
from extproc.backends import BackendRuntime, build_backends
from extproc.config import GatewayConfig, ModelBackend, ModelIndex, ModelRoute, Pricing
from extproc.cost import cost_usd, pricing_for
from extproc.endpoints import BY_PATH
from extproc.errors import SERVER, UPSTREAM, GatewayError
from extproc.fanout import FanOutClient
from extproc.limits import Limiter
from extproc.router import Respond, RouteState
from extproc.telemetry import Record, Span, Telemetry, error_type
from extproc.translate import (
    BodyMode,
    FanOut,
    RequestContext,
    Translator,
    Unbuffered,
    UpstreamRequest,
    bad_upstream_response,
)
from extproc.translate.openai import PassThrough
from extproc.usage import Usage, estimated
from extproc.wire import ATTEMPT_HEADER, COST_HEADER, Key

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


@dataclass(slots=True)
class Step:
    """One reply to Envoy: header and body changes, the next body modes, an error or an answer."""

    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None
    # Overrides of the processing mode, only honoured on header replies.
    request_body: BodyMode | None = None
    response_headers: bool | None = None
    response_body: BodyMode | None = None
    error: GatewayError | None = None
    respond: Respond | None = None  # the client's answer, made here (a fan-out's merge)
    metadata: dict[str, Any] | None = None  # Envoy dynamic metadata, in wire.NAMESPACE
    done: bool = False  # nothing more is expected on this stream


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
        owned = set(_CREDENTIAL_HEADERS)
        for backend in self._backends.values():
            owned.update(backend.static_headers)
        self._owned_headers = sorted(owned)

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

    def __init__(
        self, stage: UpstreamStage, may_hand_off: bool = False, router_stage: bool = False
    ) -> None:
        self._stage = stage
        self._may_hand_off = may_hand_off
        self._router_stage = router_stage
        self._handed_off = False  # the answer is Envoy's to read (see _hand_off)
        self._translator: Translator | None = None
        self._auth: Auth | None = None
        self._host = ""
        self._length = 0
        self._coding = ""  # the answer's content coding, when compressed although unasked
        self._decoder: encoding.Decoder | None = None
        self._billed = False  # a 2xx answer the client got an error for: usage is estimated
        self._started = time.monotonic()
        self._first_chunk: float | None = None
        self._status = 0
        self._buffered = False  # the response body comes whole, its head held until then
        self._ctx: RequestContext | None = None
        self._backend: BackendRuntime | None = None
        self._pricing: Pricing | None = None
        self._attempt = 1
        self._span: Span | None = None
        self._recorded = False
        self._extra: dict[str, str] = {}
        self._buckets = ""
        self._body: bytes | None = None  # the client's body, when this stage has it

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
        config = self._stage._config
        backend = self._stage._backends.get(backend_name)
        route_model = state.model if state else ""
        model, entry = self._stage.route(route_model, backend_name)
        path = state.path if state else ""
        api = BY_PATH.get(path)
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
        )
        self._ctx = ctx
        self._backend = backend
        self._pricing = pricing_for(model, entry)
        attempt = headers.get(ATTEMPT_HEADER, "1")
        self._attempt = int(attempt) if attempt.isdigit() else 1
        self._span = self._stage._telemetry.start_span(api.operation, headers)
        self._extra = {
            attr: headers.get(name, "") for name, attr in config.telemetry.header_attributes.items()
        }
        self._buckets = state.ratelimit
        translator = backend.translator(ctx)
        self._translator = translator
        self._auth = backend.auth
        self._host = backend.authority
        self._length = state.request_bytes
        self._handed_off = (
            self._may_hand_off
            # Envoy's readers know where its usage is (not embeddings': see endpoints.py).
            and api.envoy_usage is not None
            and isinstance(translator, PassThrough)
            and translator.forwards_unchanged
            # Rate-limit debits are made at once by the sidecar; the access log comes later.
            and not self._buckets
            # The cost header of a buffered answer is added by the sidecar.
            and (ctx.stream or self._pricing is None)
        )
        wants_response = self._wants_response
        step = Step(
            set_headers={
                **backend.static_headers,
                ":authority": backend.authority,
                # What the sidecar and Envoy's readers can read (see extproc/encoding.py).
                "accept-encoding": encoding.ACCEPT_ENCODING,
            },
            remove_headers=self._stage._owned_headers,
            response_headers=wants_response,
            response_body=None if wants_response else "none",
        )
        if self._span.traceparent:
            step.set_headers["traceparent"] = self._span.traceparent
        if translator.needs_request_body or backend.auth.needs_body:
            step.request_body = "buffered"
            return step
        step.request_body = "none"
        await self._finish_request(step, None)
        return step

    async def request_body(self, body: bytes) -> Step:
        translator = self._translator
        assert translator is not None
        step = Step()
        try:
            if isinstance(translator, FanOut):
                parts = translator.fan_out(body)
                if parts is not None:
                    return await self._fan_out(translator, parts)
            await self._finish_request(step, body)
        except GatewayError as err:
            return self._fail(err)
        return step

    async def _fan_out(self, translator: FanOut, parts: list[UpstreamRequest]) -> Step:
        """Send the parts of a request one call cannot carry; answer with their merge."""
        assert self._backend is not None and self._span is not None
        trace = {"traceparent": self._span.traceparent} if self._span.traceparent else {}
        replies = await self._stage._fanout.send(self._backend, parts, trace)
        self._status, body = translator.merge(replies)
        metadata = self._finish(cut=False)
        answer = Respond(self._status, body, {"content-type": "application/json"})
        self._cost_header(metadata, answer.headers)
        return Step(respond=answer, metadata=metadata, done=True)

    def client_body(self, body: bytes) -> None:
        """The client's body when the attempt needs not read it (the router stage has it),
        kept for an estimate of the prompt should the answer come without usage."""
        self._body = body

    async def _finish_request(self, step: Step, body: bytes | None) -> None:
        assert self._translator is not None and self._auth is not None
        if body is not None:
            self._body = body
        request = self._translator.request(body)
        await self._auth.apply(request, self._host)
        step.set_headers.update(request.headers)
        step.set_headers[":path"] = request.path
        if request.body is not None:
            step.body = request.body
            step.set_headers["content-length"] = str(len(request.body))
        elif self._length:
            step.set_headers["content-length"] = str(self._length)
        if self._handed_off:
            step.metadata = self._hand_off()
        step.done = not self._wants_response

    @property
    def _wants_response(self) -> bool:
        """Whether the answer comes back through this exchange (not handed off, and seen)."""
        assert self._translator is not None
        return self._translator.needs_response and not self._handed_off

    def _hand_off(self) -> dict[str, Any]:
        """What the record of this attempt needs besides Envoy's own figures, as dynamic
        metadata: the sidecar is done once the request leaves. Envoy's filters read the
        answer's usage, and its access log brings both to :mod:`extproc.accesslog`."""
        assert self._ctx is not None and self._backend is not None
        self._recorded = True  # by the access log, not by abort()
        ctx = self._ctx
        meta: dict[str, Any] = {
            Key.HANDED_OFF: True,
            Key.BACKEND: self._backend.name,
            Key.MODEL: ctx.route_model,
            Key.UPSTREAM_MODEL: ctx.upstream_model,
            Key.OPERATION: ctx.endpoint,
            Key.STREAM: ctx.stream,
        }
        if self._extra:
            meta[Key.EXTRA] = dict(self._extra)
        ids = self._span.ids() if self._span is not None else None
        if ids is not None:
            meta[Key.TRACE] = ids
        return meta

    # --- response -----------------------------------------------------------------------------

    def response_headers(self, headers: Mapping[str, str], end_of_stream: bool) -> Step:
        assert self._translator is not None
        status = int(headers.get(":status", "0") or 0)
        self._status = status
        head = self._translator.response_headers(status, headers)
        mode = "none" if end_of_stream else self._translator.response_body_mode(status, headers)
        coding = encoding.codings(headers.get("content-encoding")) if mode != "none" else []
        limit = self._stage._config.http.max_request_bytes
        if mode == "buffered" and _length(headers) > limit and self._unbuffered(status, coding):
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
        if mode == "none":
            step.metadata = self._finish(cut=False)
            step.done = True
        return step

    def _unbuffered(self, status: int, coding: list[str]) -> bool:
        """Whether the answer may be read as it passes (see :class:`Unbuffered`), from now on.
        Not when compressed unasked: each chunk would be replaced by its decoded bytes, more
        than one gRPC message may carry, and the rest Envoy passes on unread stays compressed."""
        translator = self._translator
        if coding or not (200 <= status < 300 and isinstance(translator, Unbuffered)):
            return False
        translator.read_unbuffered()
        return True

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Step:
        assert self._translator is not None
        if self._first_chunk is None:
            self._first_chunk = time.monotonic()
        if self._buffered and not end_of_stream:
            # Envoy sends a buffered body before its end only when it outgrew the buffer limit
            # (see server._mode_override), and then passes the rest on without the sidecar. An
            # answer that needs no rewrite goes on too, accounted from what was seen; no
            # translator can read part of a JSON document.
            self._buffered = False
            if not self._unbuffered(self._status, [self._coding] if self._coding else []):
                return self._too_large(len(chunk))
            out = self._passed_on(chunk, end_of_stream=False)
            return Step(body=out, metadata=self._finish(cut=False), done=True)
        try:
            out = self._passed_on(chunk, end_of_stream)
        except GatewayError as err:
            # A buffered 2xx answer the translator cannot pass on: its head is still held by
            # Envoy, so an immediate response replaces the whole answer.
            return self._fail(err)
        step = Step(body=out, done=end_of_stream)
        if end_of_stream:
            step.metadata = self._finish(cut=False)
            self._cost_header(step.metadata, step.set_headers)
        return step

    def _passed_on(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        """What the client gets of ``chunk`` (None: the chunk as it came)."""
        assert self._translator is not None
        raw = chunk
        if self._coding:
            if self._decoder is None:
                limit = self._stage._config.http.max_request_bytes
                self._decoder = encoding.Decoder(self._coding, limit, whole=self._buffered)
            chunk = self._decode(chunk, end_of_stream)
        out = self._translator.response_body(chunk, end_of_stream)
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

    def _decode(self, chunk: bytes, end_of_stream: bool) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.feed(chunk, end_of_stream)
        except (ValueError, OverflowError) as exc:
            # Buffered, the 502 replaces the answer; streamed, it cuts the stream short.
            raise bad_upstream_response(
                f"The provider's compressed answer is unreadable: {exc}."
            ) from None

    # --- accounting ---------------------------------------------------------------------------

    def _cost_header(self, metadata: dict[str, Any], headers: dict[str, str]) -> None:
        """Add the cost header to a response whose headers have not left yet."""
        # Only a buffered (non-streaming) response still holds its headers at the end.
        if self._pricing is not None and self._ctx is not None and not self._ctx.stream:
            headers[COST_HEADER] = f"{metadata.get(Key.COST_USD, 0.0):.6f}"

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

    def _fail(self, err: GatewayError) -> Step:
        self._status = err.status
        self._finish(cut=False, failure=err.code or err.type)
        return Step(error=err, done=True)

    def _finish(self, cut: bool, failure: str | None = None) -> dict[str, Any]:
        """Record the attempt once; returns the dynamic metadata describing it."""
        if self._recorded or self._ctx is None or self._backend is None:
            return {}
        self._recorded = True
        ctx, translator = self._ctx, self._translator
        usage = translator.usage if translator is not None else None
        # A provider reports usage once it is done, and ends its stream with a last event: a
        # client that leaves after either (the SDK closes the connection right after the last
        # event) cut nothing.
        cut = cut and usage is None and not (translator is not None and translator.complete)
        if usage is None and translator is not None and (self._billed or 200 <= self._status < 300):
            # The provider billed it all the same: counted here, marked as estimated.
            usage = self._estimate(translator)
        if failure is None and translator is not None:
            # A 2xx answer the translator turned into an error (event) for the client.
            failure = translator.failure
        now = time.monotonic()
        rec = Record(
            operation=ctx.endpoint,
            provider=self._backend.provider,
            request_model=ctx.route_model,
            response_model=(translator.response_model if translator else None)
            or ctx.upstream_model,
            backend=self._backend.name,
            status=self._status,
            duration=now - self._started,
            usage=usage,
            cost_usd=cost_usd(usage, self._pricing) if self._pricing else 0.0,
            ttft=(
                self._first_chunk - self._started
                if ctx.stream and self._first_chunk and self._status < 400
                else None
            ),
            streaming=ctx.stream,
            cut=cut,
            error_type=error_type(self._status, cut, failure),
            attempt=self._attempt,
            extra=self._extra,
        )
        meta: dict[str, Any] = {
            Key.BACKEND: rec.backend,
            Key.MODEL: rec.request_model,
            Key.RESPONSE_MODEL: rec.response_model,
            Key.ATTEMPT: rec.attempt,
            Key.COST_USD: rec.cost_usd,
        }
        if usage is not None:
            meta[Key.USAGE_SOURCE] = usage.source
            meta[Key.INPUT_TOKENS] = usage.input_tokens
            meta[Key.OUTPUT_TOKENS] = usage.output_tokens
            meta[Key.TOTAL_TOKENS] = usage.total_tokens
            meta[Key.CACHED_INPUT_TOKENS] = usage.cached_input_tokens
            meta[Key.REASONING_TOKENS] = usage.reasoning_tokens
        # After the metadata: telemetry bounds the record's labels (a model may become "other").
        self._stage.account(rec, self._buckets)
        if self._span is not None:
            self._span.end(rec)
        return meta

    def _estimate(self, translator: Translator) -> Usage:
        """Usage counted by the gateway: the prompt from the client's body (or, when this stage
        never saw it, from its length), the output from what the provider had sent."""
        assert self._ctx is not None
        model = translator.response_model or self._ctx.upstream_model
        if self._body is not None:
            prompt = tokens.prompt_tokens(self._body, model)
        else:
            prompt = tokens.body_tokens(self._length)
        return estimated(prompt, translator.output_tokens(model))


def _length(headers: Mapping[str, str]) -> int:
    """The body length a response head announces; 0 when it announces none (chunked)."""
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else 0
