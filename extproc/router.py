"""Router stage: which endpoint, which model, or which error; decided before Envoy routes.

Runs in the listener-level ext_proc filter. Request headers arrive first: the endpoint is
checked and ``GET /v1/models`` is answered on the spot. For the POST endpoints the buffered body
follows; the model it names (or the ``x-ai-eg-model`` header, which wins) is written into
``x-ai-eg-model`` and Envoy re-matches its routes on that header.

Everything here is pure: headers and bytes in, a :class:`Decision` out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never
from urllib.parse import parse_qsl

import orjson

from extproc import encoding, wire
from extproc.catalog import Catalog
from extproc.clients import ClientKey, Clients, allowed_models, authorize
from extproc.config import GatewayConfig, ModelIndex
from extproc.duplicates import repeated_keys
from extproc.endpoints import API, APIS, ErrorShape, api_for
from extproc.errors import INVALID_REQUEST, NOT_FOUND, GatewayError, bad_request
from extproc.limits import Limiter
from extproc.multipart import form_model
from extproc.parsework import ParseBounds
from extproc.translate import json_object
from extproc.wire import MODEL_HEADER, Key, encode_model

# Client headers that never reach a provider, whatever the route (README, "Security"): the
# gateway's own x-ai-eg-* headers, credentials for the gateway or for another service, and the
# headers that choose which account a provider bills. A backend's `forward_headers` lets
# named ones through (hop-by-hop headers are Envoy's to drop, and it does).
NEVER_FORWARDED = frozenset(
    {
        "authorization",
        "api-key",
        "x-api-key",
        "proxy-authorization",
        "cookie",
        "x-goog-api-key",
        "x-goog-user-project",
        "ocp-apim-subscription-key",
        "openai-organization",
        "openai-project",
    }
)
NEVER_FORWARDED_PREFIXES = (wire.INTERNAL_PREFIX, "x-amz-")
_MODELS = wire.MODELS_PATH
_SUPPORTED = ", ".join(
    [f"POST {path}" for api in APIS for path in api.paths]
    + [f"{'/'.join(api.methods)} {prefix}{{id}}" for api in APIS for prefix in api.prefixes]
    + [f"GET {_MODELS}"]
)
# The longest model name accepted (real ones, Bedrock ARNs included, are far shorter): a name
# travels in headers and labels, which must stay small.
MAX_MODEL_LENGTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The largest body read for its model when the model may be elsewhere (stored_responses).
_OPTIONAL_BODY_BYTES = 1024 * 1024

# Endpoints of the OpenAI API we know of but do not serve, for a precise error message.
_KNOWN_UNSUPPORTED = (
    "/v1/audio",
    "/v1/images",
    "/v1/files",
    "/v1/uploads",
    "/v1/fine_tuning",
    "/v1/fine-tunes",
    "/v1/assistants",
    "/v1/threads",
    "/v1/vector_stores",
    "/v1/batches",
    "/v1/moderations",
    "/v1/realtime",
    "/v1/evals",
    "/v1/containers",
    "/v1/conversations",
    "/v1/chatkit",
    "/v1/videos",
)


@dataclass(slots=True)
class Respond:
    """Answer the client directly (an immediate response)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ReadBody:
    """Continue: the body is needed to pick the model."""

    api: API
    header_model: str | None
    # Without the query, but for an endpoint that defines one (API.query), checked.
    path: str
    client: ClientKey | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_encoding: str = ""  # the body's coding, one the router can decode


@dataclass(frozen=True, slots=True)
class RouteState:
    """What the router decided that every attempt needs. A model with one backend is served
    by the router stage's own stream, which keeps it; for several, Envoy carries it to the
    upstream stage in dynamic metadata (:meth:`metadata`), since headers would reach providers.
    """

    model: str  # the route's model name (what Envoy routed on)
    body_model: str | None  # the body's own "model"; None when absent
    path: str  # the client's path, without the query but one its endpoint defines (API.query)
    request_bytes: int  # the client's body length (decoded, if it came compressed)
    stream: str = ""  # "usage": a stream whose client asked for usage; "plain": one that did not
    ratelimit: str = ""  # the rate-limit buckets to debit, comma-joined

    def metadata(self) -> dict[str, Any]:
        return {
            Key.MODEL: self.model,
            Key.BODY_MODEL: self.body_model or "",
            Key.PATH: self.path,
            Key.REQUEST_BYTES: self.request_bytes,
            Key.STREAM: self.stream,
            Key.RATELIMIT: self.ratelimit,
        }

    @classmethod
    def from_metadata(cls, fields: Mapping[str, Any]) -> RouteState:
        """From :meth:`metadata` as Envoy forwarded it (JSON numbers are floats there)."""
        length = fields.get(Key.REQUEST_BYTES)
        return cls(
            model=str(fields.get(Key.MODEL, "")),
            body_model=str(fields.get(Key.BODY_MODEL) or "") or None,
            path=str(fields.get(Key.PATH, "")),
            request_bytes=int(length) if isinstance(length, int | float) else 0,
            stream=str(fields.get(Key.STREAM, "")),
            ratelimit=str(fields.get(Key.RATELIMIT, "")),
        )


@dataclass(slots=True)
class Route:
    """Route on ``x-ai-eg-model``: set ``headers``, remove ``remove``, clear Envoy's route cache.

    ``backend`` names the model's only backend, which the router stage then serves itself.
    ``body`` replaces the client's body when it came compressed.
    """

    headers: dict[str, str]
    state: RouteState
    remove: list[str] = field(default_factory=list)
    backend: str | None = None
    body: bytes | None = None


Decision = Respond | ReadBody | Route


def error_response(err: GatewayError, shape: ErrorShape | None = None) -> Respond:
    """The client's answer to ``err``, in the shape its API's clients expect (``shape``; None:
    the error's own, OpenAI's unless the stage that raised it knew the API)."""
    if shape is not None and shape != err.shape:
        err = dataclasses.replace(err, shape=shape)
    headers = {"content-type": "application/json", **err.headers}
    return Respond(err.status, err.body(), headers)


class Router:
    """One instance serves every stream of a worker; the limiter holds the only state."""

    def __init__(
        self, config: GatewayConfig, limiter: Limiter | None = None, catalog: Catalog | None = None
    ) -> None:
        self._config = config
        self._routes = ModelIndex(config.models)
        self._clients = Clients(config.clients)
        self._limiter = limiter
        self._catalog = catalog or Catalog(config)
        self._model_list = (-1, b"")  # (catalog version, the list for a keyless client)
        self._forwarded = _forwarded(config)
        http = config.http
        self._parse_bounds = ParseBounds(http.max_json_containers, http.max_json_items)

    def _list(self, client: ClientKey | None) -> bytes:
        items = self._catalog.items
        names = allowed_models(client, items)
        return orjson.dumps({"object": "list", "data": [items[n] for n in names]})

    def on_headers(self, headers: Mapping[str, str]) -> Decision:
        method = headers.get(":method", "")
        path, _, query = headers.get(":path", "").partition("?")
        try:
            return self._dispatch(method, path, query, headers)
        except GatewayError as err:
            api = api_for(path)
            return error_response(err, api.errors if api is not None else None)

    def _dispatch(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> Decision:
        api = api_for(path)
        known = api is not None or path == _MODELS or path.startswith(_MODELS + "/")
        if not known:
            raise _unsupported(method, path)
        client = self._clients.authenticate(headers)
        if api is not None:
            if method not in api.methods:
                raise _method_not_allowed(method, path, ", ".join(api.methods))
            if "upgrade" in headers:
                # Envoy takes such a request for an upgraded stream whose body never ends: the
                # router stage would wait for it until timeouts.upload.
                raise bad_request(
                    f"Protocol upgrades ({headers['upgrade'][:40]!r}) are not served: send the"
                    " request without the Upgrade header.",
                    code="upgrade_not_supported",
                )
            coding = headers.get("content-encoding", "")
            refused = encoding.unsupported_request_coding(coding)
            if refused is not None:
                raise refused
            coded = coding if encoding.codings(coding) else ""
            if api.query and query:
                path = f"{path}?{_checked_query(query, api.query)}"
            return ReadBody(api, headers.get(MODEL_HEADER) or None, path, client, headers, coded)
        if method != "GET":
            raise _method_not_allowed(method, path, "GET")
        return self._models(path[len(_MODELS) + 1 :], client)

    def _models(self, model_id: str, client: ClientKey | None) -> Respond:
        json = {"content-type": "application/json"}
        if not model_id:
            if client is not None:
                return Respond(200, self._list(client), json)
            if self._model_list[0] != self._catalog.version:
                self._model_list = (self._catalog.version, self._list(None))
            return Respond(200, self._model_list[1], json)
        item = self._catalog.items.get(model_id)
        if item is None or (client is not None and not client.allows(model_id)):
            raise _model_not_found(model_id, param=None)
        return Respond(200, orjson.dumps(item), json)

    async def on_body(self, request: ReadBody, body: bytes) -> Decision:
        try:
            limiter = self._limiter
            # When the key alone decides, a client over its limits costs no parse.
            early = limiter is not None and not limiter.needs_model
            buckets = await self._admission(limiter, request, "") if early else ""
            if isinstance(buckets, Respond):
                return buckets
            route = self._route(request, body)
            authorize(request.client, route.state.model)
            if not early:
                buckets = await self._admission(limiter, request, route.state.model)
                if isinstance(buckets, Respond):
                    return buckets
            if buckets:
                route.state = dataclasses.replace(route.state, ratelimit=buckets)
            return route
        except GatewayError as err:
            return error_response(err, request.api.errors)

    @staticmethod
    async def _admission(limiter: Limiter | None, request: ReadBody, model: str) -> Respond | str:
        """The 429 (or 503) for a request over its limits, else its buckets to debit."""
        if limiter is None:
            return ""
        client = request.client.name if request.client else None
        admission = await limiter.admit(client, model, request.headers)
        if admission.error is not None:
            return error_response(admission.error, request.api.errors)
        return ",".join(admission.debit_buckets)

    def _route(self, request: ReadBody, body: bytes) -> Route:
        decoded = None
        limit = self._config.http.max_request_bytes
        if len(body) > limit:
            # Envoy's buffer limit is the larger of its connection buffers
            # (http.stream_buffer_bytes) and the route's: a smaller max_request_bytes is ours
            # to apply.
            raise encoding.too_large(limit)
        if request.content_encoding:
            body = decoded = encoding.decode_request(body, request.content_encoding, limit)
        doc: dict[str, Any]
        default = None  # the model when neither the header nor the body names one
        match request.api.body:
            case "json":
                self._parse_bounds.check(body)
                doc = json_object(body)
                _refuse_repeated_keys(body)
                body_model = doc.get("model")
            case "optional":
                self._parse_bounds.check(body)
                doc = {}
                body_model = _optional_model(body)
                default = self._config.responses.default_model
            case "multipart":
                doc = {}
                body_model = form_model(body, request.headers.get("content-type"))
            case _:
                assert_never(request.api.body)
        if body_model is not None and not isinstance(body_model, str):
            raise bad_request("'model' must be a string.", param="model")
        header_model = _header_text(request.header_model)
        model = header_model or body_model or default
        if not model:
            where = (
                f" (for {request.path}: in the {MODEL_HEADER} header, or set"
                " responses.default_model in the gateway's config)"
                if request.api.body == "optional"
                else ""
            )
            raise bad_request(
                f"You must provide a model parameter{where}.",
                param="model",
                code="missing_required_parameter",
            )
        _check_model(model)
        if body_model and header_model:
            _check_model(body_model)
        route = self._routes.route(model)
        if route is None:
            if not self._config.models:
                raise _no_provider()
            raise _model_not_found(model, param="model")
        stream = doc.get("stream")
        if stream is not None and not isinstance(stream, bool):
            # "true" or 1 would be no stream to the gateway (no usage chunk asked for) and a
            # stream to a lenient provider: the spelling must not decide what is accounted.
            raise bad_request(
                f"Invalid type for 'stream': expected a boolean, got {_json_type(stream)}.",
                param="stream",
                code="invalid_type",
            )
        stream_kind = ""
        if stream:
            options = doc.get("stream_options")
            asked = not request.api.stream_usage_opt_in or (
                isinstance(options, dict) and options.get("include_usage") is True
            )
            stream_kind = "usage" if asked else "plain"
        state = RouteState(model, body_model or None, request.path, len(body), stream_kind)
        remove = self._never_forwarded(request.headers, route.name)
        if decoded is not None:
            remove.append("content-encoding")
        return Route(
            {MODEL_HEADER: encode_model(model)}, state, remove, route.single_backend(), decoded
        )

    def _never_forwarded(self, headers: Iterable[str], route: str) -> list[str]:
        """The client's headers no provider may get on this route."""
        allowed = self._forwarded.get(route, frozenset())
        return [
            name
            for name in headers
            if (name in NEVER_FORWARDED or name.startswith(NEVER_FORWARDED_PREFIXES))
            and name not in allowed
            and name != MODEL_HEADER  # overwritten, then removed by the route itself
        ]


def _forwarded(config: GatewayConfig) -> dict[str, frozenset[str]]:
    """Per model route, the headers every one of its backends asks to get from the client:
    with several backends the router cannot know which attempt will carry the request."""
    out = {}
    for model in config.models:
        sets: Sequence[frozenset[str]] = [
            frozenset(config.backends[b.backend].forward_headers) for b in model.backends
        ]
        out[model.name] = frozenset.intersection(*sets)
    return out


def _checked_query(query: str, allowed: frozenset[str]) -> str:
    """A query an endpoint defines, as the client sent it; a 400 names a parameter it does
    not define (it would otherwise reach the provider unchecked, or be dropped)."""
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise bad_request(
                f"Unknown query parameter {name[:64]!r}; this endpoint takes"
                f" {', '.join(sorted(allowed))}.",
                param=name[:64],
                code="unknown_parameter",
            )
    return query


def _optional_model(body: bytes) -> str | None:
    """The "model" of a body the gateway passes on unread (a count of input tokens), if it is
    a small JSON object that names one; anything else is the provider's to judge."""
    if not body.startswith(b"{") or len(body) > _OPTIONAL_BODY_BYTES:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) else None


def _header_text(value: str | None) -> str | None:
    """A client's header value as text: the bytes (here as latin-1) read as UTF-8."""
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise _invalid_model("is not valid UTF-8") from None


def _check_model(name: str) -> None:
    if len(name) > MAX_MODEL_LENGTH:
        raise _invalid_model(f"is longer than {MAX_MODEL_LENGTH} characters")
    if _CONTROL.search(name):
        raise _invalid_model("contains control characters")


def _invalid_model(why: str) -> GatewayError:
    return bad_request(f"Invalid 'model': the name {why}.", param="model", code="invalid_model")


def _refuse_repeated_keys(body: bytes) -> None:
    try:
        repeated = repeated_keys(body)
    except RecursionError:
        raise bad_request("The request body is nested too deeply.") from None
    if repeated:
        name = repeated[0]
        raise bad_request(
            f"'{name}' is given more than once in the request body; give it once.",
            param=name,
            code="duplicate_parameter",
        )


def _json_type(value: object) -> str:
    names = {str: "a string", int: "a number", float: "a number", dict: "an object"}
    return names.get(type(value), "an array")


def _method_not_allowed(method: str, path: str, allowed: str) -> GatewayError:
    return GatewayError(
        405,
        f"Method {method} is not allowed for {path}; use {allowed}.",
        INVALID_REQUEST,
        code="method_not_allowed",
        headers={"allow": allowed},
    )


def _unsupported(method: str, path: str) -> GatewayError:
    known = any(path == p or path.startswith(p + "/") for p in _KNOWN_UNSUPPORTED)
    detail = (
        "is an OpenAI endpoint this gateway does not serve"
        if known
        else "is not an endpoint of this gateway"
    )
    return GatewayError(
        404,
        f"{method} {path} {detail}. Supported: {_SUPPORTED}.",
        NOT_FOUND,
        code="unsupported_endpoint",
    )


def _no_provider() -> GatewayError:
    # The zero-config start with nothing in the environment: the model is not the problem.
    return GatewayError(
        404,
        "No provider is configured; set OPENAI_API_KEY or pass -c (a config file) and restart"
        " the gateway.",
        INVALID_REQUEST,
        param="model",
        code="no_provider_configured",
    )


def _model_not_found(model: str, param: str | None) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        INVALID_REQUEST,
        param=param,
        code="model_not_found",
    )
