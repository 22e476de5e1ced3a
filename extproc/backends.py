"""What each configured backend needs at run time: a translator factory, auth, headers.

The one place that maps a backend ``schema`` to its translator and its credential, so adding a
provider means adding one branch here plus its modules under ``translate/`` and ``auth/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from extproc.auth import Auth, NoAuth, bearer, entra
from extproc.config import AzureOpenAIBackend, GatewayConfig, OpenAIBackend
from extproc.translate import RequestContext, Translator, azure
from extproc.translate.openai import PassThrough, join_path


@dataclass(frozen=True, slots=True)
class BackendRuntime:
    name: str
    provider: str  # gen_ai.provider.name
    translator: Callable[[RequestContext], Translator]
    auth: Auth
    static_headers: dict[str, str]


def _openai(name: str, backend: OpenAIBackend) -> BackendRuntime:
    prefix = backend.endpoint()[3]
    query = backend.query

    def translator(ctx: RequestContext) -> Translator:
        return PassThrough(ctx, join_path(prefix, ctx.path, query))

    auth: Auth = bearer(backend.api_key.get_secret_value()) if backend.api_key else NoAuth()
    return BackendRuntime(name, "openai", translator, auth, backend.headers)


def _azure(name: str, backend: AzureOpenAIBackend) -> BackendRuntime:
    def translator(ctx: RequestContext) -> Translator:
        return azure.translator(ctx, backend)

    return BackendRuntime(
        name, "azure.openai", translator, entra.backend_auth(backend), backend.headers
    )


def build_backends(config: GatewayConfig) -> dict[str, BackendRuntime]:
    out: dict[str, BackendRuntime] = {}
    for name, backend in config.backends.items():
        if isinstance(backend, OpenAIBackend):
            out[name] = _openai(name, backend)
        elif isinstance(backend, AzureOpenAIBackend):
            out[name] = _azure(name, backend)
        else:
            raise NotImplementedError(f"backend schema {backend.schema_!r} is not wired yet")
    return out
