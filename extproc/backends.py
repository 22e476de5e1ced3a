"""What each configured backend needs at run time: a translator factory, auth, headers.

The one place that maps a backend ``schema`` to its translator and its credential, so adding a
provider means adding one branch here plus its modules under ``translate/`` and ``auth/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from extproc.auth import Auth, NoAuth, bearer, entra
from extproc.auth.sigv4 import SigV4
from extproc.config import AWSBedrockBackend, AzureOpenAIBackend, GatewayConfig, OpenAIBackend
from extproc.translate import RequestContext, Translator, azure, bedrock
from extproc.translate.openai import PassThrough, join_path


@dataclass(frozen=True, slots=True)
class BackendRuntime:
    name: str
    provider: str  # gen_ai.provider.name
    translator: Callable[[RequestContext], Translator]
    auth: Auth
    static_headers: dict[str, str]
    authority: str  # the Host the provider expects


def _openai(name: str, backend: OpenAIBackend) -> BackendRuntime:
    prefix = backend.endpoint()[3]
    query = backend.query

    def translator(ctx: RequestContext) -> Translator:
        return PassThrough(ctx, join_path(prefix, ctx.path, query))

    auth: Auth = bearer(backend.api_key.get_secret_value()) if backend.api_key else NoAuth()
    return BackendRuntime(name, "openai", translator, auth, backend.headers, backend.authority())


def _azure(name: str, backend: AzureOpenAIBackend) -> BackendRuntime:
    def translator(ctx: RequestContext) -> Translator:
        return azure.translator(ctx, backend)

    return BackendRuntime(
        name,
        "azure.openai",
        translator,
        entra.backend_auth(backend),
        backend.headers,
        backend.authority(),
    )


def _bedrock(name: str, backend: AWSBedrockBackend) -> BackendRuntime:
    prefix = backend.endpoint()[3]

    def translator(ctx: RequestContext) -> Translator:
        return bedrock.translator(ctx, prefix)

    return BackendRuntime(
        name, "aws.bedrock", translator, SigV4(backend), backend.headers, backend.authority()
    )


def build_backends(config: GatewayConfig) -> dict[str, BackendRuntime]:
    out: dict[str, BackendRuntime] = {}
    for name, backend in config.backends.items():
        if isinstance(backend, OpenAIBackend):
            out[name] = _openai(name, backend)
        elif isinstance(backend, AzureOpenAIBackend):
            out[name] = _azure(name, backend)
        else:
            out[name] = _bedrock(name, backend)
    return out
