"""OpenAI API -> Azure OpenAI: OpenAI's bodies and responses, Azure's paths.

Two URL surfaces exist:

- ``deployments`` (the classic one): ``/openai/deployments/{deployment}/chat/completions
  ?api-version=V``. Azure picks the model from the deployment in the path and ignores the
  body's ``model``, so the body is forwarded untouched and never buffered.
- ``v1``: ``/openai/v1/chat/completions`` without ``api-version``, exactly OpenAI's API; the
  deployment name goes in the body's ``model`` like any OpenAI-compatible backend.

The Responses API (``/openai/v1/responses``) exists on the v1 surface only: a backend on the
classic surface still sends it there, with the deployment name as the body's ``model``.

Responses pass through unchanged: Azure's extra fields (``prompt_filter_results``,
``content_filter_results``) reach the client, and a content-filter rejection keeps its status
(400) and OpenAI-shaped body with ``code: content_filter``, which OpenAI SDKs already surface.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from extproc.config import AzureOpenAIBackend
from extproc.endpoints import Operation
from extproc.translate import RequestContext, Translator, path_segment
from extproc.translate.media import pass_through
from extproc.translate.openai import join_path

# From the endpoint the router classified, not the client's path: Azure has only these.
_OPERATIONS: dict[Operation, str] = {
    "chat": "/chat/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
    "text_completion": "/completions",
    "speech": "/audio/speech",
    "image_generation": "/images/generations",
    "image_edit": "/images/edits",
    "transcription": "/audio/transcriptions",
    "translation": "/audio/translations",
    # The client's own path below /v1/responses/, in the shape the router checked.
    "stored_responses": "",
}


def _path(base: str, ctx: RequestContext, query: dict[str, str]) -> str:
    """``base`` + the operation, the client's query (minus what ``query`` overrides), ``query``."""
    client_query = ctx.path.partition("?")[2]
    kept = [(k, v) for k, v in parse_qsl(client_query, keep_blank_values=True) if k not in query]
    operation = _OPERATIONS[ctx.endpoint] or ctx.path.partition("?")[0].removeprefix("/v1")
    return join_path(base, f"{operation}?{urlencode(kept)}" if kept else operation, query)


def translator(ctx: RequestContext, backend: AzureOpenAIBackend) -> Translator:
    prefix = backend.endpoint()[3]
    cls = pass_through(ctx.endpoint)
    # Azure serves the Responses API on the v1 surface only, whatever the backend's surface:
    # the deployment goes in the body's model there (no api-version either).
    if backend.surface == "v1" or ctx.endpoint in ("responses", "stored_responses"):
        return cls(ctx, _path(f"{prefix}/openai/v1", ctx, dict(backend.query)))
    query = {"api-version": backend.api_version, **backend.query}
    deployment = path_segment(ctx.upstream_model)
    # The deployment in the path selects the model; Azure ignores the body's "model".
    path = _path(f"{prefix}/openai/deployments/{deployment}", ctx, query)
    return cls(ctx, path, rewrite_model=False)
