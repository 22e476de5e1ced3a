"""OpenAI API -> an OpenAI-compatible backend: the body passes through untouched.

The only rewrites are the path (the backend URL's prefix replaces the client's ``/v1``) and,
when the backend knows the model under another name, the body's ``model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import orjson

from extproc.errors import bad_request
from extproc.translate import BodyMode, RequestContext, ResponseHead, UpstreamRequest


def join_path(prefix: str, client_path: str, query: Mapping[str, str] | None = None) -> str:
    """``/openai/v1`` + ``/v1/chat/completions?x=1`` -> ``/openai/v1/chat/completions?x=1``."""
    path, _, client_query = client_path.partition("?")
    rest = path[3:] if path.startswith("/v1/") else path
    out = prefix + rest
    extra = urlencode(query) if query else ""
    joined = "&".join(q for q in (client_query, extra) if q)
    return f"{out}?{joined}" if joined else out


def replace_model(body: bytes, model: str) -> bytes:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("Request body is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise bad_request("Request body must be a JSON object.")
    doc["model"] = model
    return orjson.dumps(doc)


class PassThrough:
    """Chat and embeddings to any backend that speaks the OpenAI API."""

    def __init__(self, ctx: RequestContext, path: str) -> None:
        self._model = ctx.upstream_model
        self._path = path
        self.needs_request_body = ctx.body_model != ctx.upstream_model
        self.needs_response = False

    def request(self, body: bytes | None) -> UpstreamRequest:
        new_body = replace_model(body, self._model) if body is not None else None
        return UpstreamRequest(path=self._path, body=new_body)

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        return "none"

    def response_headers(self, status: int, headers: Mapping[str, str]) -> ResponseHead:
        return ResponseHead()

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        return chunk
