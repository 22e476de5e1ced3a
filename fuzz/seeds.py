"""Write seed inputs into fuzz/corpus/<target>/: real requests, responses, streams and frames.

Each target reads a few selector bytes first (see its ``check``), then a body; a seed is the
selectors of the "raw body" mode followed by a realistic body, so the fuzzer starts from inputs
that get past the JSON parser and the framing. Run once; seeds are part of the kept corpus.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import orjson
from _common import FUZZ

sys.path.insert(0, str(FUZZ.parent))

from tests.anthropic_cases import text_stream
from tests.fakes.anthropic import sse
from tests.fakes.faulty import FIRST_CHUNK, bedrock_frames, completion
from tests.fakes.openai import chat_reply, completion_chunks, embeddings, sse_events
from tests.fakes.responses import events, responses_reply

CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}],
        },
    ],
    "tools": [
        {
            "type": "function",
            "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
        }
    ],
    "tool_choice": "auto",
    "max_tokens": 10,
    "temperature": 0.5,
    "top_p": 1,
    "stop": ["x"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "parallel_tool_calls": False,
}
FORMAT = {
    "model": "m",
    "messages": [{"role": "user", "content": "x"}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}},
}
EMBED = {"model": "e", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 256}
CONVERSE = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                {"text": "hello"},
                {"toolUse": {"toolUseId": "t", "name": "f", "input": {"a": 1}}},
                {"reasoningContent": {"reasoningText": {"text": "hmm"}}},
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": {"inputTokens": 1, "outputTokens": 2, "cacheReadInputTokens": 1},
}
TITAN = {"embedding": [0.1, 0.2], "inputTextTokenCount": 2}
COHERE = {"embeddings": {"float": [[0.1, 0.2]]}}


# Model names the router must route encoded, refuse with a 400, or keep out of a path.
ODD_MODELS = [
    "模型",
    "ünï 模型 🚀",
    ".",
    "..",
    "../converse",
    "x/../y",
    "a\r\nb",
    "nul\x00",
    "m" * 300,
]


def _model(body: bytes, name: str) -> bytes:
    return orjson.dumps({**orjson.loads(body), "model": name})


def _stream() -> bytes:
    reply = chat_reply({"model": "m", "messages": [{"role": "user", "content": "a b c"}]})
    return b"".join(sse_events(completion_chunks(reply, include_usage=True)))


def _responses_stream() -> bytes:
    body = {"model": "m", "input": "a b c", "tools": [{"type": "function", "name": "f"}]}
    tool = b"".join(events(responses_reply(body), body))
    plain = {"model": "m", "input": "a b c"}
    return b"".join(events(responses_reply(plain), plain)) + tool


def _anthropic_stream() -> bytes:
    return b"".join(sse(event) for event in text_stream("Hello there"))


def seeds() -> dict[str, list[bytes]]:
    chat, fmt, embed = orjson.dumps(CHAT), orjson.dumps(FORMAT), orjson.dumps(EMBED)
    frames = b"".join(bedrock_frames())
    stream = _stream()
    return {
        "sse": [b"\x00" + stream, b"\x02\x00\x10\x01\x00" + stream, b"\x00" + FIRST_CHUNK],
        "responses": [b"\x00" + _responses_stream(), b"\x02\x00\x20\x01\x00" + _responses_stream()],
        "anthropic_stream": [
            b"\x80" + _anthropic_stream(),
            b"\x02\x00\x10\x01\x00" + _anthropic_stream(),
            b"\x00" + _anthropic_stream()[:200],
        ],
        "eventstream": [b"\x00\xff" + frames, b"\x00\x00" + frames, b"\x00\x10" + frames[:50]],
        "router": [
            b"\x01\x00\x06\x00\x01" + chat,
            b"\x01\x01\x00\x01\x03" + embed,
            b"\x01\x00\x00\x00\x01" + fmt,
            *(b"\x01\x00\x0d\x00\x01" + _model(chat, name) for name in ODD_MODELS),
            *(b"\x01\x00" + bytes([i]) + b"\x00\x01" + chat for i in range(5, 13)),
        ],
        "request": [
            b"\x05\x01\x01" + chat,
            b"\x05\x00\x01" + fmt,
            b"\x00\x00\x01" + embed,
            b"\x02\x00\x01" + orjson.dumps({"input": "x"}),
        ],
        "response": [
            b"\x00\x01\x00\x00\x00\xff" + frames,
            b"\x00\x03\x00\x00\x00\x03" + frames,
            b"\x00\x00\x00\x00\x00\xff" + orjson.dumps(CONVERSE),
            b"\x00\x00\x03\x01\x00\xff" + b'{"message": "bad"}',
            b"\x01\x01\x00\x00\x00\x00" + orjson.dumps(TITAN) + b"\n--\n" + orjson.dumps(TITAN),
            b"\x01\x00\x00\x00\x00\x00" + orjson.dumps(COHERE),
            b"\x02\x05\x00\x00\x00\x05" + stream,
            b"\x02\x00\x00\x00\x00\xff" + completion("hi"),
            b"\x02\x00\x00\x00\x00\xff" + orjson.dumps(embeddings({"model": "e", "input": "x"})),
        ],
    }


def main() -> None:
    for target, inputs in seeds().items():
        directory = FUZZ / "corpus" / target
        directory.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            name = "seed-" + hashlib.sha1(data).hexdigest()[:16]  # noqa: S324 - a file name
            Path(directory / name).write_bytes(data)
    print("seeds written under", FUZZ / "corpus")


if __name__ == "__main__":
    main()
