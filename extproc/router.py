"""Router stage: which endpoint, which model, or which error; decided before Envoy routes.

Runs in the listener-level ext_proc filter. Request headers arrive first: the endpoint is
checked and ``GET /v1/models`` is answered on the spot. For the POST endpoints the buffered body
follows; the model it names (or the ``x-ai-eg-model`` header, which wins) is written into
``x-ai-eg-model`` and Envoy re-matches its routes on that header.

Everything here is pure: headers and bytes in, a :class:`Decision` out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from extproc.clients import ClientKey, Clients, allowed_models, authorize
from extproc.config import WILDCARD_MODEL, GatewayConfig
from extproc.duplicates import repeated_keys
from extproc.errors import INVALID_REQUEST, NOT_FOUND, GatewayError, bad_request
from extproc.limits import Limiter
from extproc.translate import Endpoint, json_object

MODEL_HEADER = "x-ai-eg-model"
# The body's own model as the router read it: lets the upstream stage decide at header time
# whether the body has to be rewritten, without buffering it when it does not.
BODY_MODEL_HEADER = "x-ai-eg-body-model"
# The client's path. Upstream filters share one header map across retries, so an attempt that
# rewrote :path for its provider would otherwise hide the original from the next attempt.
PATH_HEADER = "x-ai-eg-path"
# The client's body length, for the same reason: an attempt that rewrote the body set its own.
LENGTH_HEADER = "x-ai-eg-content-length"
# "usage" for a stream whose client asked for its usage chunk, "plain" for one that did not.
STREAM_HEADER = "x-ai-eg-stream"
# The rate-limit buckets to debit with the response's usage. Always set by the router, so a
# client cannot name other tenants' buckets.
RATELIMIT_HEADER = "x-ai-eg-ratelimit"

POST_ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/v1/embeddings": "embeddings",
}
_MODELS = "/v1/models"

# Endpoints of the OpenAI API we know of but do not serve, for a precise error message.
_KNOWN_UNSUPPORTED = (
    "/v1/completions",
    "/v1/responses",
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

    endpoint: Endpoint
    header_model: str | None
    path: str
    client: ClientKey | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Route:
    """Route on ``x-ai-eg-model``: set these headers and clear Envoy's route cache.

    ``backend`` names the model's only backend, which the router stage then serves itself.
    """

    headers: dict[str, str]
    backend: str | None = None


Decision = Respond | ReadBody | Route


def error_response(err: GatewayError) -> Respond:
    headers = {"content-type": "application/json", **err.headers}
    return Respond(err.status, err.body(), headers)


class Router:
    """One instance serves every stream of a worker; the limiter holds the only state."""

    def __init__(self, config: GatewayConfig, limiter: Limiter | None = None) -> None:
        self._config = config
        self._clients = Clients(config.clients)
        self._limiter = limiter
        self._listed = [m.name for m in config.models if m.name != WILDCARD_MODEL]
        self._model_items = {
            m.name: {"id": m.name, "object": "model", "created": m.created, "owned_by": m.owned_by}
            for m in config.models
            if m.name != WILDCARD_MODEL
        }
        self._model_list = self._list(None)

    def _list(self, client: ClientKey | None) -> bytes:
        names = allowed_models(client, self._listed)
        return orjson.dumps({"object": "list", "data": [self._model_items[n] for n in names]})

    def on_headers(self, headers: Mapping[str, str]) -> Decision:
        method = headers.get(":method", "")
        path = headers.get(":path", "").partition("?")[0]
        try:
            return self._dispatch(method, path, headers)
        except GatewayError as err:
            return error_response(err)

    def _dispatch(self, method: str, path: str, headers: Mapping[str, str]) -> Decision:
        endpoint = POST_ENDPOINTS.get(path)
        known = endpoint is not None or path == _MODELS or path.startswith(_MODELS + "/")
        if not known:
            raise _unsupported(method, path)
        client = self._clients.authenticate(headers)
        if endpoint is not None:
            if method != "POST":
                raise _method_not_allowed(method, path, "POST")
            if "upgrade" in headers:
                # Envoy takes such a request for an upgraded stream whose body never ends: the
                # router stage would wait for it until timeouts.upload.
                raise bad_request(
                    f"Protocol upgrades ({headers['upgrade'][:40]!r}) are not served: send the"
                    " request without the Upgrade header.",
                    code="upgrade_not_supported",
                )
            return ReadBody(
                endpoint,
                headers.get(MODEL_HEADER) or None,
                headers.get(":path", ""),
                client,
                headers,
            )
        if method != "GET":
            raise _method_not_allowed(method, path, "GET")
        return self._models(path[len(_MODELS) + 1 :], client)

    def _models(self, model_id: str, client: ClientKey | None) -> Respond:
        json = {"content-type": "application/json"}
        if not model_id:
            body = self._model_list if client is None else self._list(client)
            return Respond(200, body, json)
        item = self._model_items.get(model_id)
        if item is None or (client is not None and not client.allows(model_id)):
            raise _model_not_found(model_id, param=None)
        return Respond(200, orjson.dumps(item), json)

    async def on_body(self, request: ReadBody, body: bytes) -> Decision:
        try:
            route = self._route(request, body)
            return await self._admit(request, route)
        except GatewayError as err:
            return error_response(err)

    async def _admit(self, request: ReadBody, route: Route) -> Decision:
        model = route.headers[MODEL_HEADER]
        authorize(request.client, model)
        route.headers[RATELIMIT_HEADER] = ""
        if self._limiter is None:
            return route
        client = request.client.name if request.client else None
        admission = await self._limiter.admit(client, model, request.headers)
        if admission.error is not None:
            return error_response(admission.error)
        route.headers[RATELIMIT_HEADER] = ",".join(admission.debit_buckets)
        return route

    def _route(self, request: ReadBody, body: bytes) -> Route:
        doc = json_object(body)
        _refuse_repeated_keys(body)
        body_model = doc.get("model")
        if body_model is not None and not isinstance(body_model, str):
            raise bad_request("'model' must be a string.", param="model")
        model = request.header_model or body_model
        if not model:
            raise bad_request(
                "You must provide a model parameter.",
                param="model",
                code="missing_required_parameter",
            )
        route = self._config.model(model) or self._config.model(WILDCARD_MODEL)
        if route is None:
            raise _model_not_found(model, param="model")
        headers = {
            MODEL_HEADER: model,
            BODY_MODEL_HEADER: body_model or "",
            PATH_HEADER: request.path,
            LENGTH_HEADER: str(len(body)),
            STREAM_HEADER: "",
        }
        stream = doc.get("stream")
        if stream is not None and not isinstance(stream, bool):
            # "true" or 1 would be no stream to the gateway (no usage chunk asked for) and a
            # stream to a lenient provider: the spelling must not decide what is accounted.
            raise bad_request(
                f"Invalid type for 'stream': expected a boolean, got {_json_type(stream)}.",
                param="stream",
                code="invalid_type",
            )
        if stream:
            options = doc.get("stream_options")
            asked = isinstance(options, dict) and options.get("include_usage") is True
            headers[STREAM_HEADER] = "usage" if asked else "plain"
        return Route(headers, route.single_backend())


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
        f"{method} {path} {detail}. Supported: POST /v1/chat/completions, POST /v1/embeddings,"
        " GET /v1/models.",
        NOT_FOUND,
        code="unsupported_endpoint",
    )


def _model_not_found(model: str, param: str | None) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        INVALID_REQUEST,
        param=param,
        code="model_not_found",
    )
