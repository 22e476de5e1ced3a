"""Upstreams that misbehave at the socket level, which an HTTP framework will not do on purpose.

with FaultyUpstream("stall") as up: ...   # accepts, reads, never answers
with FaultyUpstream("cut") as up: ...     # one SSE chunk, then a clean end without [DONE]
with FaultyUpstream("reset") as up: ...   # one SSE chunk, then the connection is dropped

More ways for a provider to misbehave, each answering every request it gets the same way:

- ``stall_body``: a 200 SSE head and one chunk, then silence (the connection stays open);
- ``truncated_json``: a 200 ``application/json`` whose body, correctly framed, is the first
  half of a chat completion (not valid JSON);
- ``short_body``: a 200 ``application/json`` that announces more bytes than it sends, then
  closes the connection;
- ``huge_json``: a valid chat completion whose content is ``size`` bytes of text;
- ``huge_converse``: a valid Bedrock Converse answer whose text is ``size`` bytes, chunked;
- ``huge_sse``: a valid chat stream of about ``size`` bytes (``[DONE]`` included);
- ``endless_event``: a chat stream whose second event never ends: ``size`` bytes without a
  blank line, then the end of the body;
- ``bad_crc``: a Bedrock ConverseStream (``application/vnd.amazon.eventstream``) whose second
  frame has one payload byte flipped, so its message CRC does not match;
- ``eventstream_cut``: a Bedrock ConverseStream that ends cleanly before ``messageStop``;
- ``garbage``: bytes that are not HTTP at all.

``requests`` counts the requests read; ``connections`` the connections accepted.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Literal, Self

import orjson

from extproc.eventstream import encode_message

Behaviour = Literal[
    "stall",
    "cut",
    "reset",
    "stall_body",
    "truncated_json",
    "short_body",
    "huge_json",
    "huge_converse",
    "huge_sse",
    "endless_event",
    "bad_crc",
    "eventstream_cut",
    "garbage",
]

FIRST_CHUNK = (
    b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}\n\n'
)
_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
_EVENTSTREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
# What the providers below put in a complete answer; the usage is what a test can check.
USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def completion(content: str) -> bytes:
    """A well-formed OpenAI chat completion with ``content``."""
    return orjson.dumps(
        {
            "id": "chatcmpl-faulty",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json_head(length: int) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % length
    )


def _event(kind: str, payload: dict[str, object]) -> bytes:
    headers = {":message-type": "event", ":event-type": kind, ":content-type": "application/json"}
    return encode_message(headers, orjson.dumps(payload))


def bedrock_frames() -> list[bytes]:
    """The frames of a short, complete ConverseStream answer ("Hello")."""
    return [
        _event("messageStart", {"role": "assistant"}),
        _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        _event("contentBlockStop", {"contentBlockIndex": 0}),
        _event("messageStop", {"stopReason": "end_turn"}),
        _event(
            "metadata",
            {"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}, "metrics": {}},
        ),
    ]


def _corrupt(frame: bytes) -> bytes:
    """The frame with its last payload byte flipped: the prelude is intact, the CRC is not."""
    at = len(frame) - 5
    return frame[:at] + bytes([frame[at] ^ 0x01]) + frame[at + 1 :]


def _read_request(conn: socket.socket) -> bool:
    """Read one request (headers, then a content-length or chunked body); False on EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = conn.recv(65536)
        if not part:
            return False
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    headers = {k.strip().lower(): v.strip() for k, v in fields.items()}
    if b"content-length" in headers:
        remaining = int(headers[b"content-length"]) - len(body)
        while remaining > 0:
            part = conn.recv(min(remaining, 65536))
            if not part:
                return False
            remaining -= len(part)
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            part = conn.recv(65536)
            if not part:
                return False
            body += part
    return True


class FaultyUpstream:
    def __init__(self, behaviour: Behaviour, size: int = 10 * 1024 * 1024) -> None:
        self.behaviour = behaviour
        self.size = size
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self.connections = 0
        self.requests = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if not _read_request(conn):
                conn.close()
                return
            self.requests += 1
            if self._answer(conn):
                return  # held open on purpose
            conn.close()
        except OSError:
            conn.close()

    def _answer(self, conn: socket.socket) -> bool:
        """Misbehave on ``conn``; True when the connection must stay open."""
        behaviour = self.behaviour
        if behaviour == "stall":
            self._held.append(conn)
            return True
        if behaviour in ("cut", "reset", "stall_body"):
            conn.sendall(_HEAD + _chunk(FIRST_CHUNK))
            if behaviour == "stall_body":
                self._held.append(conn)
                return True
            if behaviour == "cut":
                conn.sendall(b"0\r\n\r\n")
            else:
                time.sleep(0.3)  # let the first chunk reach the client before the reset
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
        elif behaviour == "truncated_json":
            body = completion("Hello there")
            body = body[: len(body) // 2]
            conn.sendall(_json_head(len(body)) + body)
        elif behaviour == "short_body":
            body = completion("Hello there")
            conn.sendall(_json_head(len(body) + 1000) + body)
        elif behaviour == "huge_json":
            body = completion("x" * self.size)
            conn.sendall(_json_head(len(body)) + body)
        elif behaviour == "huge_converse":
            body = orjson.dumps(
                {
                    "output": {
                        "message": {"role": "assistant", "content": [{"text": "x" * self.size}]}
                    },
                    "stopReason": "end_turn",
                    "usage": {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8},
                }
            )
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            conn.sendall(head + b"transfer-encoding: chunked\r\n\r\n" + _chunk(body) + b"0\r\n\r\n")
        elif behaviour == "huge_sse":
            self._huge_sse(conn)
        elif behaviour == "endless_event":
            piece = b"x" * 65536
            conn.sendall(_HEAD + _chunk(FIRST_CHUNK) + _chunk(b'data: {"choices":[{"delta":"'))
            for _ in range(max(1, self.size // len(piece))):
                conn.sendall(_chunk(piece))
            conn.sendall(b"0\r\n\r\n")
        elif behaviour in ("bad_crc", "eventstream_cut"):
            frames = bedrock_frames()
            if behaviour == "bad_crc":
                frames[1] = _corrupt(frames[1])
            else:
                frames = frames[:3]
            conn.sendall(_EVENTSTREAM_HEAD + b"".join(_chunk(f) for f in frames) + b"0\r\n\r\n")
        else:  # garbage
            conn.sendall(b"\x00\xffTHIS IS NOT HTTP\r\n\r\n" * 10)
        return False

    def _huge_sse(self, conn: socket.socket) -> None:
        piece = "x" * 4096
        event = FIRST_CHUNK.replace(b'"Hel"', orjson.dumps(piece))
        conn.sendall(_HEAD)
        for _ in range(max(1, self.size // len(event))):
            conn.sendall(_chunk(event))
        final = (
            b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[],"usage":' + orjson.dumps(USAGE) + b"}\n\n"
        )
        conn.sendall(_chunk(final) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    def __enter__(self) -> Self:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._sock.close()
        for conn in self._held:
            conn.close()
