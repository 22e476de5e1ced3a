"""Shared by the atheris targets: repo on the path, the crash policy, known bugs.

A target's ``check`` raises for what must never happen (an exception other than the ones the
code under test documents, or a broken invariant). libFuzzer then writes the input to
``fuzz/crashes/<target>/`` and stops. Bugs already reported (each with a strict-xfail test in
``tests/``) are listed in :data:`KNOWN`: an input that hits one is saved once per signature as
``known-*`` in the same directory and the run goes on, so a long run keeps exploring.
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# signature (exception type @ innermost extproc frame) -> the test that pins it down.
KNOWN: dict[str, str] = {}  # none open: every bug the runs and properties found is fixed

_seen: set[str] = set()


def argv() -> list[str]:
    """``sys.argv`` for libFuzzer. A merge re-runs ``argv[0]`` in child processes, which must
    then be executable: ``run.sh merge`` points ``FUZZ_ARGV0`` at a wrapper script."""
    return [os.environ.get("FUZZ_ARGV0", sys.argv[0]), *sys.argv[1:]]


def signature(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/extproc/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"
    return f"{type(exc).__name__}@{where}"


def guard(target: str, check: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``check`` with known bugs recorded instead of raised."""
    crashes = FUZZ / "crashes" / target

    def run(data: bytes) -> None:
        try:
            check(data)
        except Exception as exc:
            sig = signature(exc)
            if sig not in KNOWN:
                raise
            if sig not in _seen and os.environ.get("FUZZ_KEEP_KNOWN", "1") == "1":
                _seen.add(sig)
                crashes.mkdir(parents=True, exist_ok=True)
                name = sig.replace("@", "-").replace(":", "-")
                digest = hashlib.sha1(data).hexdigest()[:12]  # noqa: S324 - a file name
                path = crashes / f"known-{name}-{digest}"
                if not any(crashes.glob(f"known-{name}-*")):
                    path.write_bytes(data)

    return run


# Names and values of the OpenAI and Bedrock APIs: a generated document uses them often, so
# the fuzzer reaches the code behind each field instead of stopping at "unknown field".
VOCABULARY = [
    "model", "messages", "role", "content", "user", "assistant", "system", "developer", "tool",
    "type", "text", "image_url", "url", "refusal", "tool_calls", "function", "name",
    "arguments", "id", "tool_call_id", "tools", "tool_choice", "auto", "none", "required",
    "parameters", "description", "response_format", "json_schema", "json_object", "schema",
    "object", "properties", "stream", "stream_options", "include_usage", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "stop", "n", "logprobs", "top_logprobs",
    "logit_bias", "presence_penalty", "frequency_penalty", "seed", "parallel_tool_calls",
    "user", "metadata", "store", "service_tier", "reasoning_effort", "verbosity", "modalities",
    "input", "encoding_format", "base64", "float", "dimensions", "data:image/png;base64,AAAA",
    "https://example.com/a.png", "{}", '{"a": 1}', "usage", "prompt_tokens",
    "completion_tokens", "total_tokens", "choices", "delta", "finish_reason", "[DONE]",
    "output", "message", "toolUse", "toolUseId", "reasoningContent", "reasoningText",
    "contentBlockIndex", "start", "stopReason", "end_turn", "tool_use", "max_tokens",
    "inputTokens", "outputTokens", "cacheReadInputTokens", "embedding", "embeddings",
    "inputTextTokenCount", "input", "Message", "prompt_tokens_details", "cached_tokens",
    "completion_tokens_details", "reasoning_tokens", "anthropic.claude-v1:0", "",
]  # fmt: skip


def json_value(fdp: Any, depth: int = 0) -> object:
    """A JSON document drawn from ``fdp`` (an atheris FuzzedDataProvider)."""
    consume_int = fdp.ConsumeIntInRange
    kind = consume_int(0, 9 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return consume_int(-(2**63), 2**63 - 1) if fdp.ConsumeBool() else consume_int(-2, 300)
    if kind == 3:
        value = fdp.ConsumeRegularFloat()
        return value if value == value and abs(value) != float("inf") else 0.5
    if kind in (4, 5):
        if fdp.ConsumeBool():
            return VOCABULARY[consume_int(0, len(VOCABULARY) - 1)]
        return fdp.ConsumeUnicodeNoSurrogates(consume_int(0, 24))
    if kind in (6, 7):
        return [json_value(fdp, depth + 1) for _ in range(consume_int(0, 4))]
    out: dict[str, object] = {}
    for _ in range(consume_int(0, 6)):
        key = VOCABULARY[consume_int(0, len(VOCABULARY) - 1)]
        out[key] = json_value(fdp, depth + 1)
    return out


def json_object(fdp: Any) -> bytes:
    """A JSON object document, as bytes; sometimes (1 in 8) raw bytes instead."""
    import orjson

    if fdp.ConsumeIntInRange(0, 7) == 0:
        return bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512)))
    doc = json_value(fdp)
    if not isinstance(doc, dict):
        doc = {"messages": doc}
    return orjson.dumps(doc)
