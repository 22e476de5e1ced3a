"""A fake Anthropic Messages API (``POST /v1/messages``) that checks what the real one checks.

    with FakeAnthropic() as fake:
        backend: {schema: anthropic, url: fake.url, api_key: fake.api_key}
        fake.requests[-1].json()     # the Messages body the gateway sent

Every request needs ``x-api-key`` (401 ``authentication_error`` otherwise) and a known
``anthropic-version`` (400); bodies are checked by :mod:`tests.fakes.anthropic_rules`
(``max_tokens`` required, roles alternating from a user turn, tool results answering the
previous turn's tool uses, thinking budgets...).

Answers, derived from the request so tests can predict them (one token per word):

- text: ``"You said: <text of the last user turn>"``, or ``"Tool said: <results>"`` after tool
  results; cut to ``max_tokens`` words (``max_tokens``) or before a stop sequence;
- a tool call (``stop_reason: tool_use``, input :func:`~tests.fakes.openai.example` of its
  schema) when ``tool_choice`` is ``tool`` (that tool) or ``any`` (the first tool), or when the
  last user text holds ``[[tool]]`` / ``[[tool:NAME]]``;
- a ``thinking`` block first (``"Thinking about: <text>"``, with a signature) when thinking is on;
- streams: Anthropic's SSE (``event:`` and ``data:`` lines, ``ping``, cumulative usage in
  ``message_delta``), cut into random pieces of 1..``max_chunk`` bytes, gzipped when asked.

Scripted failures, by marker in the last user text: ``[[overloaded]]`` 529
``overloaded_error``, ``[[rate-limit]]`` 429, ``[[invalid]]`` 400, ``[[stream-error]]`` an
``error`` event after the first delta, ``[[refusal]]`` ``stop_reason: refusal``, ``[[cached]]``
usage with cache reads (:data:`CACHE_READ`) and writes (:data:`CACHE_WRITE`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from random import Random
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.anthropic_rules import (
    API_VERSIONS,
    anthropic_error,
    check_messages_request,
    invalid,
)
from tests.fakes.openai import count_tokens, example
from tests.fakes.server import Compress, FakeServer, split, stream_chunks

Json = dict[str, Any]

API_KEY = "sk-ant-fake-key"
OVERLOADED = "[[overloaded]]"
RATE_LIMIT = "[[rate-limit]]"
INVALID = "[[invalid]]"
STREAM_ERROR = "[[stream-error]]"
REFUSAL = "[[refusal]]"
CACHED = "[[cached]]"
CACHE_READ = 100
CACHE_WRITE = 50
SIGNATURE = "c2lnbmF0dXJl"
_TOOL_MARKER = re.compile(r"\[\[tool(?::([A-Za-z0-9_-]+))?\]\]")


def _texts(content: Any) -> list[str]:
    """The texts of a content (tool results' included)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content if isinstance(content, list) else []:
        if block.get("type") == "text":
            out.append(block["text"])
        elif block.get("type") == "tool_result":
            out += _texts(block.get("content"))
    return out


@dataclass(frozen=True, slots=True)
class MessageReply:
    blocks: list[Json]
    stop_reason: str
    usage: Json


def sse(event: Json) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class FakeAnthropic(FakeServer):
    """``POST {prefix}/v1/messages``."""

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        prefix: str = "",
        seed: int = 0,
        max_chunk: int = 48,
        chunk_delay: float = 0.0005,
        compress: Compress = "asked",
    ) -> None:
        super().__init__(compress=compress)
        self.api_key = api_key
        self.prefix = prefix.rstrip("/")
        self.max_chunk = max_chunk
        self.chunk_delay = chunk_delay
        self._rng = Random(seed)

    def backend(self, **extra: Any) -> dict[str, Any]:
        """The gateway's backend config for this fake."""
        return {
            "schema": "anthropic",
            "url": self.url + self.prefix,
            "api_key": self.api_key,
            **extra,
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(f"{self.prefix}/v1/messages", self._messages)
        app.router.add_post(f"{self.prefix}/v1/messages/count_tokens", self._count_tokens)

    def fault_body(self, status: int) -> bytes:
        kind = "overloaded_error" if status == 529 else "api_error"
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": "Injected."}})

    def _authorize(self, request: web.Request) -> None:
        key = request.headers.get("x-api-key")
        if key is None:
            raise anthropic_error(401, "authentication_error", "x-api-key header is required")
        if key != self.api_key:
            raise anthropic_error(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if version is None:
            raise invalid("anthropic-version: header is required")
        if version not in API_VERSIONS:
            raise invalid(f"anthropic-version: invalid version {version!r}")

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        """The prompt's tokens, as :meth:`reply` counts them; no ``max_tokens`` needed."""
        self._authorize(request)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise invalid("There was an issue with your request body: invalid JSON") from None
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise invalid("model: Field required")
        if not isinstance(messages, list) or not messages:
            raise invalid("messages: Field required")
        texts = [
            *_texts(body.get("system")),
            *(" ".join(_texts(m.get("content"))) for m in messages),
        ]
        answer = {"input_tokens": count_tokens(" ".join(texts))}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise invalid("There was an issue with your request body: invalid JSON") from None
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object.")
        tools = check_messages_request(body)
        last_text = " ".join(_texts(body["messages"][-1]["content"]))
        if OVERLOADED in last_text:
            raise anthropic_error(529, "overloaded_error", "Overloaded")
        if RATE_LIMIT in last_text:
            raise anthropic_error(
                429, "rate_limit_error", "Number of request tokens has exceeded your rate limit."
            )
        if INVALID in last_text:
            raise invalid(f"messages: the prompt holds {INVALID}")
        reply = self.reply(body, tools, last_text)
        if not body.get("stream"):
            message = self._message(body, reply.blocks, reply.stop_reason, reply.usage)
            return web.Response(body=orjson.dumps(message), content_type="application/json")
        data = b"".join(sse(event) for event in self._events(body, reply, last_text))
        return await stream_chunks(
            request,
            split(data, self._rng, self.max_chunk),
            content_type="text/event-stream; charset=utf-8",
            delay=self.chunk_delay,
            headers={"request-id": "req_fake"},
        )

    def reply(self, body: Json, tools: list[Json], last_text: str) -> MessageReply:
        """The assistant turn this fake answers ``body`` (a valid Messages request) with."""
        messages = body["messages"]
        last = messages[-1]["content"]
        results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]
        system = body.get("system")
        prompt = " ".join([*_texts(system), *(" ".join(_texts(m["content"])) for m in messages)])
        blocks: list[Json] = []
        if (body.get("thinking") or {}).get("type") == "enabled":
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": f"Thinking about: {last_text}",
                    "signature": SIGNATURE,
                }
            )
        tool = None if results else self._chosen_tool(tools, body.get("tool_choice"), last_text)
        if tool is not None:
            arguments = example(tool["input_schema"])
            blocks.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": tool["name"],
                    "input": arguments,
                }
            )
            stop_reason, output = "tool_use", orjson.dumps(arguments).decode()
        else:
            if results:
                output = "Tool said: " + " ".join(_texts(results))
            else:
                output = f"You said: {last_text}"
            output, stop_reason = self._limit(output, body)
            if REFUSAL in last_text:
                stop_reason = "refusal"
            blocks.append({"type": "text", "text": output})
        said = " ".join([output, *(b["thinking"] for b in blocks if b["type"] == "thinking")])
        usage = {
            "input_tokens": count_tokens(prompt),
            "output_tokens": count_tokens(said),
            "cache_creation_input_tokens": CACHE_WRITE if CACHED in last_text else 0,
            "cache_read_input_tokens": CACHE_READ if CACHED in last_text else 0,
        }
        return MessageReply(blocks, stop_reason, usage)

    @staticmethod
    def _chosen_tool(tools: list[Json], choice: Json | None, last_text: str) -> Json | None:
        if not tools or (choice or {}).get("type") == "none":
            return None
        marker = _TOOL_MARKER.search(last_text)
        kind = (choice or {}).get("type")
        if kind == "tool":
            wanted = choice["name"] if choice else None
        elif marker and marker[1]:
            wanted = marker[1]
        elif kind == "any" or marker:
            return tools[0]
        else:
            return None
        return next((tool for tool in tools if tool["name"] == wanted), tools[0])

    @staticmethod
    def _limit(text: str, body: Json) -> tuple[str, str]:
        for stop in body.get("stop_sequences") or []:
            if stop in text:
                return text[: text.index(stop)], "stop_sequence"
        words = text.split()
        if len(words) > body["max_tokens"]:
            return " ".join(words[: body["max_tokens"]]), "max_tokens"
        return text, "end_turn"

    @staticmethod
    def _message(body: Json, content: list[Json], stop_reason: str | None, usage: Json) -> Json:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    def _events(self, body: Json, reply: MessageReply, last_text: str) -> list[Json]:
        start_usage = {**reply.usage, "output_tokens": 1}
        events: list[Json] = [
            {"type": "message_start", "message": self._message(body, [], None, start_usage)},
            {"type": "ping"},
        ]
        for index, block in enumerate(reply.blocks):
            kind = block["type"]
            deltas: list[Json]
            if kind == "text":
                start: Json = {"type": "text", "text": ""}
                pieces = [p for p in re.split(r"(?<=\s)(?=\S)", block["text"]) if p]
                deltas = [{"type": "text_delta", "text": p} for p in pieces]
            elif kind == "thinking":
                start = {"type": "thinking", "thinking": ""}
                deltas = [{"type": "thinking_delta", "thinking": block["thinking"]}]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            else:
                start = {**block, "input": {}}
                arguments = orjson.dumps(block["input"]).decode()
                deltas = [
                    {"type": "input_json_delta", "partial_json": arguments[i : i + 8]}
                    for i in range(0, len(arguments), 8)
                ]
            events.append({"type": "content_block_start", "index": index, "content_block": start})
            events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
            events.append({"type": "content_block_stop", "index": index})
            if STREAM_ERROR in last_text:
                error = {"type": "overloaded_error", "message": "Overloaded"}
                return [*events[: 4 + index], {"type": "error", "error": error}]
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": reply.usage["output_tokens"]},
            }
        )
        events.append({"type": "message_stop"})
        return events
