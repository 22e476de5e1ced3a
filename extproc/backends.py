"""What each configured backend needs at run time: its translators, auth, headers.

The one place that maps a backend ``schema`` to its translator factory per endpoint
(:mod:`extproc.endpoints`) and to its credential, dispatched exhaustively on the schemas'
config models (:mod:`extproc.backendconfig`): a new schema that is not registered here fails
the type check. An endpoint a schema has no translator for is answered 404, naming the
endpoint and the backend (:meth:`BackendRuntime.translator`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import assert_never

from extproc.auth import Auth, NoAuth, StaticHeader, bearer, entra
from extproc.auth.sigv4 import SigV4
from extproc.config import (
    AnthropicBackend,
    AWSBedrockBackend,
    AzureOpenAIBackend,
    Backend,
    GatewayConfig,
    OpenAIBackend,
)
from extproc.endpoints import Operation
from extproc.errors import NOT_FOUND, GatewayError
from extproc.translate import RequestContext, Translator, azure, media
from extproc.translate.anthropic.chat import AnthropicChat
from extproc.translate.anthropic.messages import MessagesPassThrough
from extproc.translate.bedrock.chat import BedrockChat
from extproc.translate.bedrock.embeddings import BedrockEmbeddings
from extproc.translate.bedrock.responses import BedrockResponses
from extproc.translate.openai import join_path
from extproc.wire import MESSAGES_PATH

TranslatorFactory = Callable[[RequestContext], Translator]
UNSUPPORTED_ENDPOINT = "unsupported_endpoint"
# What OpenAI-compatible and Azure backends serve.
_OPENAI_APIS: tuple[Operation, ...] = (
    "chat",
    "embeddings",
    "responses",
    "stored_responses",
    "text_completion",
    "speech",
    "image_generation",
    "image_edit",
    "transcription",
    "translation",
)


@dataclass(frozen=True, slots=True)
class Schema:
    """A backend's schema, registered: a translator factory per endpoint it serves, its auth,
    and headers every request to it carries (an API version)."""

    translators: Mapping[Operation, TranslatorFactory]
    auth: Auth
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendRuntime:
    name: str
    provider: str  # gen_ai.provider.name
    translators: Mapping[Operation, TranslatorFactory]  # the endpoints it serves
    auth: Auth
    static_headers: dict[str, str]
    authority: str  # the Host the provider expects

    def translator(self, ctx: RequestContext) -> Translator:
        """The translator of one attempt; a 404 for an endpoint this backend does not serve."""
        factory = self.translators.get(ctx.endpoint)
        if factory is None:
            raise GatewayError(
                404,
                f"POST {ctx.path} ({ctx.endpoint}) is not served by backend {self.name!r}"
                f" ({self.provider}), which model {ctx.route_model!r} routes to.",
                NOT_FOUND,
                code=UNSUPPORTED_ENDPOINT,
            )
        return factory(ctx)


def _openai(backend: OpenAIBackend) -> Schema:
    prefix = backend.endpoint()[3]
    query = backend.query

    def translator(ctx: RequestContext) -> Translator:
        return media.pass_through(ctx.endpoint)(ctx, join_path(prefix, ctx.path, query))

    auth: Auth = bearer(backend.api_key.get_secret_value()) if backend.api_key else NoAuth()
    served: dict[Operation, TranslatorFactory] = dict.fromkeys(_OPENAI_APIS, translator)
    return Schema(served, auth)


def _azure(backend: AzureOpenAIBackend) -> Schema:
    def translator(ctx: RequestContext) -> Translator:
        return azure.translator(ctx, backend)

    served: dict[Operation, TranslatorFactory] = dict.fromkeys(_OPENAI_APIS, translator)
    return Schema(served, entra.backend_auth(backend))


def _bedrock(backend: AWSBedrockBackend) -> Schema:
    # The backend URL's path (a proxy in front of Bedrock) goes before /model/... in the
    # translator: the signature must cover the final path.
    prefix = backend.endpoint()[3]

    def chat(ctx: RequestContext) -> Translator:
        return BedrockChat(ctx, prefix)

    def embeddings(ctx: RequestContext) -> Translator:
        return BedrockEmbeddings(ctx, prefix)

    def responses(ctx: RequestContext) -> Translator:
        return BedrockResponses(ctx, prefix)

    return Schema({"chat": chat, "embeddings": embeddings, "responses": responses}, SigV4(backend))


def _anthropic(backend: AnthropicBackend) -> Schema:
    # The backend URL's path (a proxy in front of Anthropic) goes before /v1/messages.
    base = backend.endpoint()[3] + "/v1"
    query = backend.query

    def chat(ctx: RequestContext) -> Translator:
        path = join_path(base, MESSAGES_PATH, query)
        return AnthropicChat(ctx, path, backend.default_max_tokens(ctx.upstream_model))

    def messages(ctx: RequestContext) -> Translator:
        return MessagesPassThrough(ctx, join_path(base, ctx.path, query))

    key = backend.api_key.get_secret_value() if backend.api_key else ""
    auth = StaticHeader("x-api-key", key)
    return Schema(
        {"chat": chat, "messages": messages, "count_tokens": messages},
        auth,
        backend.version_headers(),
    )


def schema(backend: Backend) -> Schema:
    match backend:
        case OpenAIBackend():
            return _openai(backend)
        case AzureOpenAIBackend():
            return _azure(backend)
        case AWSBedrockBackend():
            return _bedrock(backend)
        case AnthropicBackend():
            return _anthropic(backend)
        case _:
            assert_never(backend)


def runtime(name: str, backend: Backend) -> BackendRuntime:
    registered = schema(backend)
    return BackendRuntime(
        name,
        backend.provider,
        registered.translators,
        registered.auth,
        {**registered.headers, **backend.headers},
        backend.authority(),
    )


def build_backends(config: GatewayConfig) -> dict[str, BackendRuntime]:
    return {name: runtime(name, backend) for name, backend in config.backends.items()}
