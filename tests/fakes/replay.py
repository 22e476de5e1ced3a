"""Replay of the recorded provider traffic in the conformance corpus (go-vcr cassettes, v2).

    chat = cassettes("chat")                  # the recorded chat completions, errors included
    with Replay(chat) as upstream:            # or Replay() for every cassette
        backend url: upstream.url + "/v1"     # the recorded paths start with /v1
        send cassette.request_body, expect cassette.status and cassette.response_body

A request is matched on method, path and JSON body (compared as parsed JSON, so key order and
whitespace do not matter; the query is not compared but recorded). The answer is the recorded
status, headers and *exact* body bytes: JSON with a content-length, a recorded SSE body
chunked, one event per write, ``event_delay`` seconds apart. An unmatched request gets a 404 naming what was asked.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import yaml
from aiohttp import web

from extproc.endpoints import Operation
from extproc.errors import error_body
from tests.fakes.server import DEFAULT_CHUNK_DELAY, FakeServer, Reject, stream_chunks

CONFORMANCE_DIR = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "openai"

# Framing and transport headers describe the recorded connection, not this one.
_HOP_HEADERS = {"content-length", "content-encoding", "transfer-encoding", "connection", "date"}


# What the recordings hold in place of a multipart form's bytes (the audio uploads).
OMITTED_FORM = b"[multipart form data omitted]"


def _normalised(body: bytes) -> bytes:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    # The gateway asks for a stream's usage when the client did not (and removes it again on the
    # way back); the recordings predate that, so the request matches with or without it.
    if isinstance(doc, dict) and isinstance(doc.get("stream_options"), dict):
        options = {k: v for k, v in doc["stream_options"].items() if k != "include_usage"}
        if options:
            doc["stream_options"] = options
        else:
            del doc["stream_options"]
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True)
class Cassette:
    name: str  # the file name without .yaml
    method: str
    path: str  # the recorded URL's path, e.g. /v1/chat/completions
    query: dict[str, str]
    request_headers: dict[str, str]  # lower-case names
    request_body: bytes
    status: int
    response_headers: dict[str, str]  # lower-case names
    response_body: bytes

    @property
    def endpoint(self) -> Operation | None:
        if self.path.endswith("/chat/completions"):
            return "chat"
        if self.path.endswith("/embeddings"):
            return "embeddings"
        if self.path.endswith("/completions"):
            return "text_completion"
        if self.path.endswith("/images/generations"):
            return "image_generation"
        if self.path.endswith("/audio/transcriptions"):
            return "transcription"
        if self.path.endswith("/audio/translations"):
            return "translation"
        return None

    @property
    def content_type(self) -> str:
        return self.response_headers.get("content-type", "application/json")

    @property
    def streaming(self) -> bool:
        return self.content_type.startswith("text/event-stream")

    def request_json(self) -> Any:
        return orjson.loads(self.request_body)

    def response_json(self) -> Any:
        """The recorded response body as JSON (not for streams)."""
        return orjson.loads(self.response_body)

    def key(self) -> tuple[str, str, bytes]:
        return self.method, self.path, _normalised(self.request_body)

    @property
    def multipart(self) -> bool:
        """An upload whose form the recording left out: matched on its method and path."""
        return self.request_body == OMITTED_FORM

    def events(self) -> list[bytes]:
        """The recorded body cut after each blank line; the pieces join back to the bytes."""
        if not self.streaming:
            return [self.response_body]
        return [e for e in re.split(rb"(?<=\n\n)", self.response_body) if e]


def _headers(recorded: dict[str, list[str]] | None) -> dict[str, str]:
    return {name.lower(): ", ".join(values) for name, values in (recorded or {}).items()}


def load_cassette(path: Path) -> list[Cassette]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = []
    for index, interaction in enumerate(doc["interactions"]):
        request, response = interaction["request"], interaction["response"]
        url = urlsplit(request["url"])
        status = response.get("code") or int(str(response["status"]).split()[0])
        out.append(
            Cassette(
                name=path.stem if index == 0 else f"{path.stem}#{index}",
                method=request["method"],
                path=url.path,
                query=dict(parse_qsl(url.query))
                or {k: v[0] for k, v in (request.get("form") or {}).items() if v},
                request_headers=_headers(request.get("headers")),
                request_body=str(request.get("body") or "").encode(),
                status=int(status),
                response_headers=_headers(response.get("headers")),
                response_body=str(response.get("body") or "").encode(),
            )
        )
    return out


def cassettes(
    endpoint: Operation | None = None, directory: Path = CONFORMANCE_DIR
) -> list[Cassette]:
    """Every recorded interaction, or only those of one endpoint (by URL path), by name."""
    found = [c for path in sorted(directory.glob("*.yaml")) for c in load_cassette(path)]
    return [c for c in found if endpoint is None or c.endpoint == endpoint]


def cassette(name: str, directory: Path = CONFORMANCE_DIR) -> Cassette:
    return load_cassette(directory / f"{name}.yaml")[0]


class Replay(FakeServer):
    def __init__(
        self,
        recorded: Iterable[Cassette] | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        event_delay: float = DEFAULT_CHUNK_DELAY,
    ) -> None:
        super().__init__(ssl_context=ssl_context)
        self.event_delay = event_delay
        self.cassettes: dict[tuple[str, str, bytes], Cassette] = {}
        for c in cassettes() if recorded is None else recorded:
            other = self.cassettes.setdefault(c.key(), c)
            if other is not c and other.response_body != c.response_body:
                raise ValueError(f"cassettes {other.name} and {c.name} answer one request apart")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._answer)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.content_type == "multipart/form-data":
            body = OMITTED_FORM
        key = (request.method, request.path, _normalised(body))
        recorded = self.cassettes.get(key)
        if recorded is None:
            message = f"replay: no cassette records {request.method} {request.path} with this body"
            raise Reject(404, error_body(message, "invalid_request_error", None, "replay_miss"))
        headers = {k: v for k, v in recorded.response_headers.items() if k not in _HOP_HEADERS}
        if not recorded.streaming:
            headers.setdefault("content-type", recorded.content_type)
            return web.Response(
                status=recorded.status, body=recorded.response_body, headers=headers
            )
        return await stream_chunks(
            request,
            recorded.events(),
            content_type=recorded.content_type,
            delay=self.event_delay,
            status=recorded.status,
            headers=headers,
        )
