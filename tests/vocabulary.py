"""What the hypothesis properties (tests/unit/test_properties.py) and the atheris targets
(fuzz/) share: the words generated documents are made of, and how a crash is named.

Standard library only: the fuzz targets import it with nothing but the repo on ``sys.path``.
"""

from __future__ import annotations

import traceback
from pathlib import Path

# Names and values of the OpenAI, Bedrock and Anthropic APIs: a generated document uses them often, so it
# reaches the code behind each field instead of stopping at "unknown field".
WORDS = [
    "model", "messages", "role", "content", "user", "assistant", "system", "developer", "tool",
    "type", "text", "image_url", "url", "refusal", "tool_calls", "function", "name",
    "arguments", "id", "tool_call_id", "tools", "tool_choice", "auto", "none", "required",
    "parameters", "description", "response_format", "json_schema", "json_object", "schema",
    "object", "properties", "stream", "stream_options", "include_usage", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "stop", "n", "logprobs", "top_logprobs",
    "logit_bias", "presence_penalty", "frequency_penalty", "seed", "parallel_tool_calls",
    "metadata", "store", "service_tier", "reasoning_effort", "verbosity", "modalities",
    "input", "encoding_format", "base64", "float", "dimensions", "data:image/png;base64,AAAA",
    "https://example.com/a.png", "{}", '{"a": 1}', "usage", "prompt_tokens",
    "completion_tokens", "total_tokens", "choices", "delta", "finish_reason", "[DONE]",
    "output", "message", "toolUse", "toolUseId", "reasoningContent", "reasoningText",
    "contentBlockIndex", "start", "stopReason", "end_turn", "tool_use",
    "inputTokens", "outputTokens", "cacheReadInputTokens", "embedding", "embeddings",
    "inputTextTokenCount", "Message", "prompt_tokens_details", "cached_tokens",
    "completion_tokens_details", "reasoning_tokens", "anthropic.claude-v1:0",
    "message_start", "content_block_start", "content_block_delta", "content_block_stop",
    "message_delta", "message_stop", "ping", "error", "content_block", "index", "text_delta",
    "input_json_delta", "partial_json", "thinking_delta", "thinking", "signature_delta",
    "signature", "stop_reason", "input_tokens", "output_tokens", "cache_read_input_tokens",
    "cache_creation_input_tokens", "overloaded_error", "cache_control", "ephemeral", "",
]  # fmt: skip


def bug_signature(exc: BaseException) -> str:
    """``ExceptionType@file.py:function`` of the innermost extproc frame: one name per bug."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/extproc/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"
    return f"{type(exc).__name__}@{where}"
