"""Hypothesis properties of the Anthropic translator: a chat request becomes a Messages request
the real API accepts (the fake's rules) and that says the same (the conversation's texts, tool
calls and results in order, the tools), and any stream becomes valid SSE with one end."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.translate import RequestContext
from extproc.translate.anthropic.chat import AnthropicChat
from tests.fakes.anthropic import sse
from tests.fakes.anthropic_rules import check_messages_request
from tests.vocabulary import WORDS

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Json = dict[str, Any]

texts = st.from_regex(r"[a-z][a-z ]{0,12}", fullmatch=True)
names = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
arguments = st.dictionaries(names, st.integers(0, 9) | texts, max_size=3)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[Json], list[tuple[Any, ...]]]:
    """(OpenAI messages, the items they say in order: (role, kind, ...values))."""
    out: list[Json] = []
    said: list[tuple[Any, ...]] = []
    for text in draw(st.lists(texts, max_size=2)):
        out.append({"role": draw(st.sampled_from(["system", "developer"])), "content": text})
    segments = draw(st.lists(st.sampled_from(["user", "calls"]), max_size=5))
    for n, segment in enumerate(["user", *segments]):
        if segment == "user":
            text = draw(texts)
            out.append({"role": "user", "content": [{"type": "text", "text": text}]})
            said.append(("user", "text", text))
            continue
        reply = draw(st.none() | texts)
        calls = []
        for k in range(draw(st.integers(1, 3))):
            call_id = f"call_{n}_{k}"
            name, args = draw(names), draw(arguments)
            calls.append(
                {"id": call_id, "type": "function",
                 "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
            )  # fmt: skip
        out.append({"role": "assistant", "content": reply, "tool_calls": calls})
        if reply is not None:
            said.append(("assistant", "text", reply))
        said += [
            ("assistant", "tool_use", c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
            for c in calls
        ]  # fmt: skip
        for call in calls:
            result = draw(texts)
            out.append({"role": "tool", "tool_call_id": call["id"], "content": result})
            said.append(("user", "tool_result", call["id"], result))
    return out, said


tool_lists = st.lists(
    st.builds(
        lambda name, props: {
            "type": "function",
            "function": {"name": name, "parameters": {"type": "object", "properties": props}},
        },
        names,
        st.dictionaries(names, st.just({"type": "string"}), max_size=3),
    ),
    max_size=3,
    unique_by=lambda tool: tool["function"]["name"],
)


def _ctx(stream: bool = False) -> RequestContext:
    return RequestContext("chat", "c", "claude-x", "c", "/v1/chat/completions", stream)


def _items(turns: list[Json]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for turn in turns:
        for block in turn["content"]:
            kind = block["type"]
            if kind == "text":
                out.append((turn["role"], "text", block["text"]))
            elif kind == "tool_use":
                out.append((turn["role"], kind, block["id"], block["name"], block["input"]))
            else:
                text = "".join(part["text"] for part in block["content"])
                out.append((turn["role"], kind, block["tool_use_id"], text))
    return out


@PROPERTY
@given(
    conversation=conversations(), tools=tool_lists, choice=st.sampled_from([None, "auto", "none"])
)
def test_a_chat_request_keeps_its_meaning_as_messages(
    conversation: tuple[list[Json], list[tuple[Any, ...]]], tools: list[Json], choice: str | None
) -> None:
    chat_messages, said = conversation
    used = {c["function"]["name"] for m in chat_messages for c in m.get("tool_calls") or []}
    # The history's tools are defined, as a client that called them defined them.
    tools = tools + [
        {"type": "function", "function": {"name": name}}
        for name in sorted(used - {t["function"]["name"] for t in tools})
    ]
    doc: Json = {"model": "c", "messages": chat_messages, "tools": tools, "tool_choice": choice}
    if not tools:
        del doc["tools"], doc["tool_choice"]
    request = AnthropicChat(_ctx(), "/v1/messages", 1000).request(orjson.dumps(doc))
    body = orjson.loads(request.body or b"")
    check_messages_request(body)  # what the real API would accept
    system = [m["content"] for m in chat_messages if m["role"] in ("system", "developer")]
    assert [block["text"] for block in body.get("system", [])] == system
    assert _items(body["messages"]) == said
    roles = [turn["role"] for turn in body["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))
    assert [tool["name"] for tool in body.get("tools", [])] == [
        t["function"]["name"] for t in tools
    ]


_EVENTS = [
    "message_start", "content_block_start", "content_block_delta", "content_block_stop",
    "message_delta", "message_stop", "ping", "error",
]  # fmt: skip
words = st.sampled_from(WORDS) | st.text(max_size=6)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=4),
    max_leaves=12,
)
events = st.builds(
    lambda kind, rest: sse({**rest, "type": kind}),
    st.sampled_from(_EVENTS),
    st.dictionaries(st.sampled_from(["index", "delta", "content_block", "message", "usage", "error"]), values, max_size=3),
) | st.binary(max_size=24)  # fmt: skip


@PROPERTY
@given(stream=st.lists(events, max_size=10), cuts=st.lists(st.integers(0, 4096), max_size=6))
def test_any_stream_becomes_valid_sse_with_one_end(stream: list[bytes], cuts: list[int]) -> None:
    chat = AnthropicChat(_ctx(stream=True), "/v1/messages", 1000)
    chat.request(
        orjson.dumps({"model": "c", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    )
    head = {"content-type": "text/event-stream"}
    assert chat.response_body_mode(200, head) == "streamed"
    data = b"".join(stream)
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    parts = [data[a:b] for a, b in itertools.pairwise(bounds)]
    # A stream never raises: its head has left, so every failure is an error event.
    out = b"".join(chat.response_body(p, i == len(parts) - 1) for i, p in enumerate(parts))
    for event in out.split(b"\n\n")[:-1]:
        assert event.startswith(b"data: ")
        if event != b"data: [DONE]":
            assert isinstance(orjson.loads(event[6:]), dict)
    assert out.endswith((b"data: [DONE]\n\n", b"}}\n\n"))
    assert chat.complete == out.endswith(b"data: [DONE]\n\n")
