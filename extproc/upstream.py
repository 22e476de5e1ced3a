"""Upstream stage: one attempt to the backend Envoy picked, translated and authenticated.

Runs in the ext_proc filter of each model cluster's upstream filter chain, so Envoy calls it
once per attempt, after it chose the endpoint: a retry that lands on another provider is
translated and signed afresh for that provider. The endpoint's metadata names the backend.

The stage drives a :class:`~extproc.translate.Translator` and an :class:`~extproc.auth.Auth`;
it returns plain :class:`Step` values that the gRPC layer turns into protobuf replies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from extproc.auth import Auth
from extproc.backends import BackendRuntime, build_backends
from extproc.config import WILDCARD_MODEL, GatewayConfig
from extproc.errors import SERVER, GatewayError
from extproc.router import (
    BODY_MODEL_HEADER,
    LENGTH_HEADER,
    MODEL_HEADER,
    PATH_HEADER,
    POST_ENDPOINTS,
)
from extproc.translate import BodyMode, RequestContext, Translator

# Credential headers any backend may set. Envoy hands every attempt the header map the previous
# attempt left behind, so each attempt first removes what any attempt may have added.
_CREDENTIAL_HEADERS = (
    "authorization",
    "api-key",
    "x-api-key",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
)

METADATA_NAMESPACE = "io.envoy.ai_gateway"


@dataclass(slots=True)
class Step:
    """One reply to Envoy: header and body changes, the next body modes, or an error."""

    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None
    # Overrides of the processing mode, only honoured on header replies.
    request_body: BodyMode | None = None
    response_headers: bool | None = None
    response_body: BodyMode | None = None
    error: GatewayError | None = None
    done: bool = False  # nothing more is expected on this stream


class UpstreamStage:
    """Per-worker state: the backends built from the config."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._backends = build_backends(config)
        owned = set(_CREDENTIAL_HEADERS)
        for backend in self._backends.values():
            owned.update(backend.static_headers)
        self._owned_headers = sorted(owned)

    def exchange(self) -> Exchange:
        return Exchange(self._config, self._backends, self._owned_headers)


class Exchange:
    """One attempt, from request headers to the last response chunk."""

    __slots__ = (
        "_auth",
        "_backends",
        "_config",
        "_host",
        "_length",
        "_owned_headers",
        "_translator",
        "_wants_response",
    )

    def __init__(
        self,
        config: GatewayConfig,
        backends: Mapping[str, BackendRuntime],
        owned_headers: list[str],
    ) -> None:
        self._config = config
        self._backends = backends
        self._owned_headers = owned_headers
        self._length = ""
        self._translator: Translator | None = None
        self._auth: Auth | None = None
        self._host = ""
        self._wants_response = False

    async def request_headers(self, headers: Mapping[str, str], backend_name: str) -> Step:
        try:
            return await self._request_headers(headers, backend_name)
        except GatewayError as err:
            return Step(error=err, done=True)

    async def _request_headers(self, headers: Mapping[str, str], backend_name: str) -> Step:
        backend = self._backends.get(backend_name)
        route_model = headers.get(MODEL_HEADER, "")
        model = self._config.model(route_model) or self._config.model(WILDCARD_MODEL)
        entry = model.backend_entry(backend_name) if model else None
        path = headers.get(PATH_HEADER, "")
        endpoint = POST_ENDPOINTS.get(path.partition("?")[0])
        if backend is None or entry is None or endpoint is None:
            # Only reachable if Envoy's config and ours disagree (stale render).
            raise GatewayError(
                500,
                f"Gateway misconfiguration: no backend {backend_name!r} for model"
                f" {route_model!r} on {path!r}; re-render the Envoy config.",
                SERVER,
            )
        ctx = RequestContext(
            endpoint=endpoint,
            route_model=route_model,
            upstream_model=entry.model or route_model,
            body_model=headers.get(BODY_MODEL_HEADER) or None,
            path=path,
        )
        translator = backend.translator(ctx)
        self._translator = translator
        self._auth = backend.auth
        self._host = headers.get(":authority", "")
        self._length = headers.get(LENGTH_HEADER, "")
        self._wants_response = translator.needs_response
        step = Step(
            set_headers=dict(backend.static_headers),
            remove_headers=self._owned_headers,
            response_headers=self._wants_response,
            response_body=None if self._wants_response else "none",
        )
        if translator.needs_request_body or backend.auth.needs_body:
            step.request_body = "buffered"
            return step
        step.request_body = "none"
        await self._finish_request(step, None)
        step.done = not self._wants_response
        return step

    async def request_body(self, body: bytes) -> Step:
        step = Step()
        try:
            await self._finish_request(step, body)
        except GatewayError as err:
            return Step(error=err, done=True)
        step.done = not self._wants_response
        return step

    async def _finish_request(self, step: Step, body: bytes | None) -> None:
        assert self._translator is not None and self._auth is not None
        request = self._translator.request(body)
        await self._auth.apply(request, self._host)
        step.set_headers.update(request.headers)
        step.set_headers[":path"] = request.path
        if request.body is not None:
            step.body = request.body
            step.set_headers["content-length"] = str(len(request.body))
        elif self._length:
            step.set_headers["content-length"] = self._length

    def response_headers(self, headers: Mapping[str, str], end_of_stream: bool) -> Step:
        assert self._translator is not None
        status = int(headers.get(":status", "0") or 0)
        head = self._translator.response_headers(status, headers)
        mode = "none" if end_of_stream else self._translator.response_body_mode(status, headers)
        step = Step(
            set_headers=dict(head.set), remove_headers=list(head.remove), response_body=mode
        )
        if head.status is not None:
            step.set_headers[":status"] = str(head.status)
        step.done = mode == "none"
        return step

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Step:
        assert self._translator is not None
        out = self._translator.response_body(chunk, end_of_stream)
        return Step(body=None if out is chunk else out, done=end_of_stream)
