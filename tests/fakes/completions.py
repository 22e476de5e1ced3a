"""The legacy text completions (``POST {prefix}/completions``) for the fake OpenAI and Azure.

Checked as OpenAI checks them: ``model`` and ``prompt`` required (a string, a list of strings, a
token array or a list of them), ``max_tokens`` 16 when not given (OpenAI's default, so an
answer the client did not bound is cut with ``finish_reason: length``), ``n`` answers per prompt
refused above 1 here. The answer is ``"Echo: <prompt>"``; streams are ``text_completion``
chunks, one per word, a last chunk with the finish reason, and with
``stream_options.include_usage`` a ``choices: []`` chunk with the usage before ``[DONE]``.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from aiohttp import web

from tests.fakes.openai import (
    CREATED,
    SSE_CONTENT_TYPE,
    FakeOpenAI,
    Json,
    count_tokens,
    json_response,
    openai_error,
    sse_events,
)
from tests.fakes.server import stream_chunks

COMPLETION_ID = "cmpl-fake"
DEFAULT_MAX_TOKENS = 16


def _prompt(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list) and raw and all(isinstance(p, str) for p in raw):
        return " ".join(raw)
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        return " ".join(f"t{t}" for t in raw)
    raise openai_error(
        400, "'prompt' must be a string, an array of strings or of tokens.", "prompt"
    )


def answer(body: Json) -> tuple[str, str, int, int]:
    """The text, finish reason, prompt and completion tokens of the answer to ``body``."""
    if "prompt" not in body:
        raise openai_error(400, "Missing required parameter: 'prompt'.", "prompt")
    if body.get("n", 1) != 1:
        raise openai_error(400, "Only n=1 is served by this fake.", "n")
    prompt = _prompt(body["prompt"])
    limit = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(limit, int) or limit < 1:
        raise openai_error(400, "'max_tokens' must be a positive integer.", "max_tokens")
    text, finish = f"Echo: {prompt}", "stop"
    if count_tokens(text) > limit:
        text, finish = " ".join(text.split()[:limit]), "length"
    return text, finish, count_tokens(prompt), count_tokens(text)


def _usage(prompt_tokens: int, completion_tokens: int) -> Json:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(body: Json) -> Json:
    text, finish, prompt_tokens, completion_tokens = answer(body)
    return {
        "id": COMPLETION_ID,
        "object": "text_completion",
        "created": CREATED,
        "model": str(body["model"]),
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def chunks(body: Json, include_usage: bool) -> list[Json]:
    text, finish, prompt_tokens, completion_tokens = answer(body)

    def chunk(piece: str, finish_reason: str | None = None) -> Json:
        choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        doc: Json = {
            "id": COMPLETION_ID,
            "object": "text_completion",
            "created": CREATED,
            "model": str(body["model"]),
            "choices": [choice],
        }
        if include_usage:
            doc["usage"] = None
        return doc

    out = [chunk(piece) for piece in re.split(r"(?<=\s)(?=\S)", text)]
    out.append(chunk("", finish))
    if include_usage:
        out.append({**chunk(""), "choices": [], "usage": _usage(prompt_tokens, completion_tokens)})
    return out


def add_routes(fake: FakeOpenAI, app: web.Application, path: str | None = None) -> None:
    """``POST {prefix}/completions``, or ``path`` (Azure's deployment paths)."""
    app.router.add_post(path or f"{fake.prefix}/completions", partial(_complete, fake))


async def _complete(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    body = await fake.request_json(request)
    if not body.get("stream"):
        doc = completion(body)
        if fake.omit_usage:
            del doc["usage"]
        return json_response(doc)
    asked = bool((body.get("stream_options") or {}).get("include_usage"))
    return await stream_chunks(
        request,
        sse_events(chunks(body, asked and not fake.ignore_include_usage), crlf=fake.crlf),
        content_type=SSE_CONTENT_TYPE,
        delay=fake.chunk_delay,
        linger=fake.linger,
    )
