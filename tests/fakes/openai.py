"""A fake OpenAI-compatible upstream: deterministic chat, tools, structured output, embeddings.

    with FakeOpenAI(prefix="/v1", api_key="sk-test", chunk_delay=0.2) as fake:
        backend url: fake.url + "/v1"
        fake.fail_next(429, count=2)  # the next two requests get an OpenAI-shaped 429
        fake.requests[-1].json()      # what the gateway sent

Answers, all derived from the request so tests can predict them:

- chat: ``"Echo: <text of the last message>"``; cut to ``max_completion_tokens`` /
  ``max_tokens`` words with ``finish_reason: length``;
- tools: given ``tools`` (and ``tool_choice`` not ``none``) and a last message that is not a
  tool result, one call of the chosen (or first) function, arguments built from its JSON schema
  by :func:`example`;
- ``response_format``: ``json_schema`` -> :func:`example` of the schema as the content;
  ``json_object`` -> ``{"echo": <text>}``;
- streaming: one SSE event per word (per 8 characters of tool arguments), ``chunk_delay``
  seconds apart; ``stream_options.include_usage`` adds ``usage: null`` to every chunk and a
  last ``choices: []`` chunk with the usage, like OpenAI;
- embeddings: :func:`vector` of each input (``dimensions`` floats, 8 by default), as JSON
  floats or base64 little-endian float32 (``encoding_format``);
- usage: one token per whitespace-separated word;
- ``GET {prefix}/models``: :attr:`FakeOpenAI.models`, OpenAI's list shape (the key checked);
- ``POST {prefix}/responses``: the Responses API, the same answers (:mod:`tests.fakes.responses`);
- ``POST {prefix}/completions``: the legacy text completions (:mod:`tests.fakes.completions`);
- ``POST {prefix}/audio/speech``, ``POST {prefix}/images/generations``: speech and images
  (:mod:`tests.fakes.audio`, :mod:`tests.fakes.imagegen`).

Servers that report less can be played too: ``ignore_include_usage`` never sends a stream's
usage chunk (llama-cpp-python's server does not), ``omit_usage`` sends no usage at all (a
Responses answer's ``usage`` is null), and
``linger`` keeps a stream's response open that many seconds after ``data: [DONE]`` (so the
client closes first, as the official SDK does with llama-cpp-python).
"""

from __future__ import annotations

import base64
import random
import re
import ssl
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from extproc.errors import error_body
from tests.fakes.server import DEFAULT_CHUNK_DELAY, Compress, FakeServer, Reject, stream_chunks

CREATED = 1735689600
COMPLETION_ID = "chatcmpl-fake"
TOOL_CALL_ID = "call_fake_0"
EMBEDDING_DIMS = 8
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
DEFAULT_MODELS = ("gpt-4o-mini", "text-embedding-3-small")

Json = dict[str, Any]


def openai_error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> Reject:
    return Reject(status, error_body(message, "invalid_request_error", param, code))


def count_tokens(text: str) -> int:
    return len(text.split())


def text_of(content: Any) -> str:
    """The text of a message ``content``: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def example(schema: Any) -> Any:
    """A small instance of a JSON schema: every property present, first enum/union member."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for union in ("anyOf", "oneOf", "allOf"):
        if schema.get(union):
            return example(schema[union][0])
    kind = schema.get("type", "object" if "properties" in schema else None)
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: example(sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example(schema["items"])] if "items" in schema else []
    scalars = {"string": "fake", "integer": 1, "number": 1.5, "boolean": True}
    return scalars.get(str(kind))


def vector(item: str | list[int], dims: int = EMBEDDING_DIMS) -> list[float]:
    """The fake embedding of one input, already rounded to float32 so base64 decodes equal."""
    rng = random.Random(orjson.dumps(item))
    floats = [rng.uniform(-1.0, 1.0) for _ in range(dims)]
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *floats)))


def to_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


@dataclass(frozen=True, slots=True)
class Reply:
    """One assistant turn, rendered by :func:`completion` or :func:`completion_chunks`."""

    model: str
    content: str | None
    tool_calls: list[Json]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    def usage(self) -> Json:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }


def _chosen_tool(tools: list[Any], choice: Any) -> Json | None:
    functions = [t["function"] for t in tools if isinstance(t, dict) and "function" in t]
    if isinstance(choice, dict):
        wanted = choice.get("function", {}).get("name")
        return next((f for f in functions if f.get("name") == wanted), None)
    return functions[0] if functions and choice != "none" else None


def chat_reply(body: Json) -> Reply:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise openai_error(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got"
            " an empty array instead.",
            "messages",
            "empty_array",
        )
    model = str(body["model"])
    prompt_tokens = sum(count_tokens(text_of(m.get("content"))) for m in messages)
    last = messages[-1]
    tool = (
        None
        if last.get("role") == "tool"
        else _chosen_tool(body.get("tools") or [], body.get("tool_choice"))
    )
    if tool is not None:
        arguments = orjson.dumps(example(tool.get("parameters"))).decode()
        call = {
            "id": TOOL_CALL_ID,
            "type": "function",
            "function": {"name": tool["name"], "arguments": arguments},
        }
        return Reply(model, None, [call], "tool_calls", prompt_tokens, count_tokens(arguments))
    text = text_of(last.get("content"))
    response_format = body.get("response_format") or {}
    finish_reason = "stop"
    if response_format.get("type") == "json_schema":
        content = orjson.dumps(example(response_format["json_schema"].get("schema"))).decode()
    elif response_format.get("type") == "json_object":
        content = orjson.dumps({"echo": text}).decode()
    else:
        content = f"Echo: {text}"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and count_tokens(content) > limit:
            content, finish_reason = " ".join(content.split()[:limit]), "length"
    return Reply(model, content, [], finish_reason, prompt_tokens, count_tokens(content))


def completion(reply: Reply) -> Json:
    message: Json = {
        "role": "assistant",
        "content": reply.content,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    return {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": reply.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        ],
        "usage": reply.usage(),
        "service_tier": "default",
        "system_fingerprint": None,
    }


def completion_chunks(reply: Reply, include_usage: bool) -> list[Json]:
    def chunk(delta: Json, finish_reason: str | None = None) -> Json:
        doc: Json = {
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": reply.model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            doc["usage"] = None
        return doc

    chunks = [chunk({"role": "assistant", "content": "" if reply.content else None})]
    if reply.content:
        # Split before each word so the pieces join back to exactly the content.
        pieces = re.split(r"(?<=\s)(?=\S)", reply.content)
        chunks += [chunk({"content": piece}) for piece in pieces]
    for index, call in enumerate(reply.tool_calls):
        head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        chunks.append(chunk({"tool_calls": [{"index": index, **head}]}))
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), 8):
            part = {"index": index, "function": {"arguments": arguments[start : start + 8]}}
            chunks.append(chunk({"tool_calls": [part]}))
    chunks.append(chunk({}, reply.finish_reason))
    if include_usage:
        chunks.append({**chunk({}), "choices": [], "usage": reply.usage()})
    return chunks


# Servers behind proxies send comments to keep an idle stream open (OpenRouter, vLLM behind
# nginx); clients and the gateway must skip them.
KEEP_ALIVE = b": keep-alive\n\n"


def sse_events(chunks: Iterable[Json], crlf: bool = False) -> list[bytes]:
    """The stream's events; ``crlf``: lines end in CR LF, which SSE allows and some servers
    (behind some proxies) send."""
    events = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]
    out = [KEEP_ALIVE, *events[:1], KEEP_ALIVE, *events[1:], b"data: [DONE]\n\n"]
    return [e.replace(b"\n", b"\r\n") for e in out] if crlf else out


def embeddings(body: Json) -> Json:
    raw = body.get("input")
    items: list[str | list[int]]
    # One string or one token array is a single input; a list of those is a batch.
    if isinstance(raw, str) or (
        isinstance(raw, list) and raw and all(isinstance(i, int) for i in raw)
    ):
        items = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(i, str | list) for i in raw):
        items = raw
    else:
        raise openai_error(400, "'input' must be a non-empty string or array.", "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise openai_error(400, "'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    dims = body.get("dimensions", EMBEDDING_DIMS)
    if not isinstance(dims, int) or dims < 1:
        raise openai_error(400, "'dimensions' must be a positive integer.", "dimensions")
    data = []
    for index, item in enumerate(items):
        values = vector(item, dims)
        embedding = to_base64(values) if encoding == "base64" else values
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(count_tokens(i) if isinstance(i, str) else len(i) for i in items)
    return {
        "object": "list",
        "data": data,
        "model": str(body["model"]),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def json_response(
    doc: Json, headers: Mapping[str, str] | None = None, content_type: str = "application/json"
) -> web.Response:
    # The header itself, not aiohttp's content_type (which takes no parameters such as charset).
    return web.Response(
        body=orjson.dumps(doc), headers={**(headers or {}), "content-type": content_type}
    )


class FakeOpenAI(FakeServer):
    """``POST {prefix}/chat/completions`` and ``POST {prefix}/embeddings``.

    The Azure fake extends it through :meth:`authorize`, :meth:`prepare`, :meth:`completion`
    and :meth:`completion_chunks`.
    """

    def __init__(
        self,
        *,
        prefix: str = "/v1",
        api_key: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        chunk_delay: float = DEFAULT_CHUNK_DELAY,
        compress: Compress = "asked",
        chunked: bool = False,
        models: Iterable[str] = DEFAULT_MODELS,
        ignore_include_usage: bool = False,
        omit_usage: bool = False,
        linger: float = 0.0,
        json_content_type: str = "application/json",
        crlf: bool = False,
    ) -> None:
        super().__init__(ssl_context=ssl_context, compress=compress, chunked=chunked)
        self.json_content_type = json_content_type  # of chat answers (not streams)
        self.prefix = prefix.rstrip("/")
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        self.models = list(models)  # what GET /v1/models lists; tests may change it
        self.ignore_include_usage = ignore_include_usage or omit_usage
        self.omit_usage = omit_usage
        self.linger = linger
        self.crlf = crlf
        # Responses made with store on (the default), by id: (the answer, the request).
        self.stored: dict[str, tuple[Json, Json]] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(f"{self.prefix}/chat/completions", self._chat)
        app.router.add_post(f"{self.prefix}/embeddings", self._embeddings)
        from tests.fakes import audio, completions, imagegen, responses  # they build on this

        responses.add_routes(self, app)
        completions.add_routes(self, app)
        audio.add_routes(self, app)
        imagegen.add_routes(self, app)
        app.router.add_get(f"{self.prefix}/models", self._models)

    def fault_body(self, status: int) -> bytes:
        if status == 429:
            return error_body(
                "Rate limit reached (injected).", "requests", None, "rate_limit_exceeded"
            )
        type_ = "server_error" if status >= 500 else "invalid_request_error"
        return error_body(f"Injected fault {status}.", type_)

    def authorize(self, request: web.Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization")
        if given is None:
            raise openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an"
                " Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if given != f"Bearer {self.api_key}":
            raise openai_error(401, "Incorrect API key provided.", code="invalid_api_key")

    def prepare(self, request: web.Request, body: Json) -> Json:
        """Check the request beyond auth; return the body the answer is built from."""
        if not isinstance(body.get("model"), str):
            raise openai_error(400, "You must provide a model parameter.")
        return body

    def completion(self, reply: Reply) -> Json:
        return completion(reply)

    def completion_chunks(self, reply: Reply, include_usage: bool) -> list[Json]:
        return completion_chunks(reply, include_usage)

    async def request_json(self, request: web.Request) -> Json:
        self.authorize(request)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise openai_error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you"
                " aren't using your HTTP library correctly.)",
            )
        return self.prepare(request, body)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.request_json(request)
        reply = chat_reply(body)
        if not body.get("stream"):
            doc = self.completion(reply)
            if self.omit_usage:
                del doc["usage"]
            return json_response(doc, content_type=self.json_content_type)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = sse_events(
            self.completion_chunks(reply, include_usage and not self.ignore_include_usage),
            crlf=self.crlf,
        )
        return await stream_chunks(
            request,
            events,
            content_type=SSE_CONTENT_TYPE,
            delay=self.chunk_delay,
            linger=self.linger,
        )

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.authorize(request)
        data = [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "fake-org"}
            for m in self.models
        ]
        return json_response({"object": "list", "data": data})

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        doc = embeddings(await self.request_json(request))
        if self.omit_usage:
            del doc["usage"]
        return json_response(doc)
