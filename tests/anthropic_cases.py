"""What the Anthropic translator tests share: a translator for a context, the Messages body of
an OpenAI chat body, the 400 of one, and Anthropic's answers as the fake sends them."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from extproc.errors import GatewayError
from extproc.translate import RequestContext
from extproc.translate.anthropic.chat import AnthropicChat
from tests.fakes.anthropic import sse

Json = dict[str, Any]

SONNET = "claude-sonnet-4-5"
DEFAULT_MAX_TOKENS = 4096
HEAD = {"content-type": "application/json", "request-id": "req_1"}
STREAM_HEAD = {"content-type": "text/event-stream; charset=utf-8"}


def chat(stream: bool = False, include_usage: bool = False) -> AnthropicChat:
    ctx = RequestContext(
        "chat", "my-claude", SONNET, "my-claude", "/v1/chat/completions", stream, include_usage
    )
    return AnthropicChat(ctx, "/v1/messages", DEFAULT_MAX_TOKENS)


def messages(doc: Json, t: AnthropicChat | None = None) -> Json:
    """The Messages body for an OpenAI chat body (``model`` and ``messages`` defaulted)."""
    body = {"model": "my-claude", "messages": [{"role": "user", "content": "hi"}], **doc}
    upstream = (t or chat()).request(orjson.dumps(body))
    assert upstream.body is not None
    result: Json = orjson.loads(upstream.body)
    return result


def rejected(doc: Json) -> GatewayError:
    body = {"model": "my-claude", "messages": [{"role": "user", "content": "hi"}], **doc}
    with pytest.raises(GatewayError) as raised:
        chat().request(orjson.dumps(body))
    assert raised.value.status == 400
    return raised.value


def message(content: list[Json], stop_reason: str = "end_turn", **usage: int) -> Json:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": SONNET,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }


def text_stream(text: str = "Hello there", stop_reason: str = "end_turn") -> list[Json]:
    """Anthropic's events of one text answer (a delta per word)."""
    start = message([], stop_reason="", cache_read_input_tokens=4)
    start["stop_reason"] = None
    start["usage"]["output_tokens"] = 1
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}
            for w in re.split(r"(?<= )", text)
        ),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]  # fmt: skip


def wire(events: list[Json]) -> bytes:
    return b"".join(sse(event) for event in events)
