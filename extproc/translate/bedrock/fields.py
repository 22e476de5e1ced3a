"""What happens to each OpenAI request field on Bedrock: the table (checked against the OpenAI
SDK's request types by the tests, and printed into the README by :func:`fields_markdown`), the
check every request passes first, and the readers of the fields' values."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from extproc.errors import bad_request, unsupported_parameter
from extproc.translate.bedrock import tiers

Json = dict[str, Any]
Disposition = Literal["mapped", "ignored", "rejected"]


@dataclass(frozen=True, slots=True)
class FieldRule:
    """How one OpenAI request field is handled.

    ``accepts`` (rejected fields only): the values that ask for nothing beyond the API default
    and therefore pass, e.g. ``n: 1``.
    """

    name: str
    disposition: Disposition
    note: str
    accepts: Callable[[Any], bool] | None = None


def _is(*values: object) -> Callable[[Any], bool]:
    return lambda value: any(value == v and type(value) is type(v) for v in values)


CHAT_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "messages",
        "mapped",
        "system/developer -> `system`; user text and `data:` image URIs (png, jpeg, gif, webp) ->"
        " content blocks; user `file` parts -> `document` blocks (below); assistant `tool_calls` -> `toolUse`; tool results -> `toolResult` in a"
        " user turn; consecutive same-role turns merged. Image URLs: a 400 unless the backend"
        " downloads them (`fetch_image_urls`);"
        " system messages alone, with no user or assistant content, are a 400.",
    ),
    FieldRule("model", "mapped", "The route's Bedrock model id or inference profile, in the path."),
    FieldRule("stream", "mapped", "`converse-stream`; the event stream is sent on as SSE chunks."),
    FieldRule(
        "stream_options",
        "mapped",
        "`include_usage` adds the final usage chunk; `include_obfuscation` has nothing to act"
        " on (no obfuscation padding is added).",
    ),
    FieldRule("max_completion_tokens", "mapped", "`inferenceConfig.maxTokens`."),
    FieldRule(
        "max_tokens", "mapped", "`inferenceConfig.maxTokens` (`max_completion_tokens` wins)."
    ),
    FieldRule(
        "temperature", "mapped", "`inferenceConfig.temperature` (the model's own range applies)."
    ),
    FieldRule("top_p", "mapped", "`inferenceConfig.topP`."),
    FieldRule("stop", "mapped", "`inferenceConfig.stopSequences` (a string or a list)."),
    FieldRule("tools", "mapped", "Function tools -> `toolConfig.tools[].toolSpec`."),
    FieldRule(
        "tool_choice",
        "mapped",
        "`auto` -> `auto`, `required` -> `any`, a named function -> `tool`; `none` -> no"
        " `toolConfig`, and the tool history is sent as text.",
    ),
    FieldRule(
        "response_format",
        "mapped",
        "`json_schema` / `json_object` -> a forced tool carrying the schema; its input is"
        " returned as the message content.",
    ),
    FieldRule(
        "parallel_tool_calls",
        "mapped",
        "`false`: only the first tool call of a turn is returned (Converse has no such switch).",
    ),
    FieldRule("service_tier", "mapped", tiers.NOTE),
    FieldRule(
        "messages[].content[].file",
        "mapped",
        "User `file` parts with `file_data` (a base64 `data:` URI, or base64 and a `filename`"
        " naming the format): pdf, csv, doc, docx, xls, xlsx, html, txt, md -> `document` blocks,"
        " the format checked against the bytes' signature, named after the file name cleaned to"
        " Converse's rules (see *Documents*); `file_id` (an uploaded file): 400.",
    ),
    FieldRule(
        "reasoning_effort",
        "mapped",
        "Claude 3.7 Sonnet and Claude 4+: `additionalModelRequestFields.thinking` with a budget"
        " of 1024 / 4096 / 8192 / 16384 tokens for `minimal` / `low` / `medium` / `high`"
        " (see *Reasoning*); Amazon Nova 2: `reasoningConfig.maxReasoningEffort` (`low`,"
        " `medium`, `high`); OpenAI gpt-oss: `reasoning_effort` (`low`, `medium`, `high`)."
        " `none` sends nothing; any other model (and DeepSeek R1, which always reasons) is a"
        " 400.",
    ),
    FieldRule(
        "thinking",
        "mapped",
        "Anthropic's extension, Claude only: `{type: enabled, budget_tokens}` (at least 1024),"
        " `adaptive` or `disabled`, sent as `additionalModelRequestFields.thinking`.",
    ),
    FieldRule(
        "messages[].thinking_blocks",
        "mapped",
        "On assistant messages, as answers carry them: `thinking` (with its `signature`) ->"
        " `reasoningContent.reasoningText`, `redacted_thinking` (`data`) ->"
        " `reasoningContent.redactedContent`, first in the turn, unchanged.",
    ),
    FieldRule(
        "messages[].cache_control",
        "mapped",
        '`{"type": "ephemeral"}` on a content part or on a whole message (system messages'
        " included) -> a `cachePoint` block right after it; at most 4 cache points a request"
        " (see *Prompt caching*).",
    ),
    FieldRule(
        "tools[].cache_control",
        "mapped",
        '`{"type": "ephemeral"}` on a tool -> a `cachePoint` after it in `toolConfig.tools`.',
    ),
    FieldRule("user", "ignored", "End-user id for OpenAI's abuse monitoring."),
    FieldRule("safety_identifier", "ignored", "End-user id for OpenAI's abuse monitoring."),
    FieldRule("metadata", "ignored", "Tags for OpenAI's stored completions."),
    FieldRule("store", "ignored", "OpenAI's stored completions; the gateway stores nothing."),
    FieldRule("prompt_cache_key", "ignored", "A caching hint: only cost and latency change."),
    FieldRule("prompt_cache_options", "ignored", "A caching hint: only cost and latency change."),
    FieldRule("prompt_cache_retention", "ignored", "A caching hint: only cost and latency change."),
    FieldRule("n", "rejected", "Bedrock returns one choice; `1` is accepted.", _is(1)),
    FieldRule(
        "logprobs",
        "rejected",
        "Bedrock returns no log probabilities; `false` is accepted.",
        _is(False),
    ),
    FieldRule(
        "top_logprobs",
        "rejected",
        "Bedrock returns no log probabilities; `0` is accepted.",
        _is(0),
    ),
    FieldRule("logit_bias", "rejected", "No equivalent in Converse; `{}` is accepted.", _is({})),
    FieldRule(
        "presence_penalty",
        "rejected",
        "No equivalent in Converse; `0` is accepted.",
        _is(0, 0.0),
    ),
    FieldRule(
        "frequency_penalty",
        "rejected",
        "No equivalent in Converse; `0` is accepted.",
        _is(0, 0.0),
    ),
    FieldRule("seed", "rejected", "Converse has no seed."),
    FieldRule("audio", "rejected", "Text output only."),
    FieldRule("modalities", "rejected", 'Text output only; `["text"]` is accepted.', _is(["text"])),
    FieldRule("prediction", "rejected", "No predicted outputs in Converse."),
    FieldRule("web_search_options", "rejected", "No web search in Converse."),
    FieldRule(
        "verbosity", "rejected", "No equivalent in Converse; `medium` is accepted.", _is("medium")
    ),
    FieldRule("moderation", "rejected", "No moderation on this backend."),
    FieldRule("functions", "rejected", "Deprecated by OpenAI: use `tools`."),
    FieldRule("function_call", "rejected", "Deprecated by OpenAI: use `tool_choice`."),
)

# Inputs of one Titan embeddings request (each a call, CONCURRENCY at a time, within
# sidecar.message_timeout); more is a 400.
MAX_TITAN_INPUTS = 128


EMBEDDINGS_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "input",
        "mapped",
        "Titan: one call per string (`inputText`), a batch is sent as concurrent calls (8 at a"
        f" time) and merged in order, at most {MAX_TITAN_INPUTS} strings (more: 400"
        " `too_many_inputs`); Cohere: up to 96 strings (`texts`, `input_type: search_document`)."
        " Token arrays are rejected.",
    ),
    FieldRule("model", "mapped", "The route's Bedrock model id, in the path."),
    FieldRule(
        "encoding_format",
        "mapped",
        "`float`, or `base64` (little-endian float32, encoded by the gateway).",
    ),
    FieldRule(
        "dimensions",
        "mapped",
        "Titan v2: `dimensions` (256, 512, 1024); Cohere v4: `output_dimension` (256, 512, 1024,"
        " 1536); other models accept only their native size.",
    ),
    FieldRule("user", "ignored", "End-user id for OpenAI's abuse monitoring."),
)

CHAT_RULES = {rule.name: rule for rule in CHAT_FIELDS}
EMBEDDINGS_RULES = {rule.name: rule for rule in EMBEDDINGS_FIELDS}


def fields_markdown(rules: tuple[FieldRule, ...] = CHAT_FIELDS) -> str:
    """The field table as a Markdown table, for the README."""
    lines = ["| Field | Handling | Notes |", "|---|---|---|"]
    for rule in rules:
        note = rule.note.replace("|", r"\|")
        lines.append(f"| `{rule.name}` | {rule.disposition} | {note} |")
    return "\n".join(lines) + "\n"


def check_fields(doc: Json, rules: Mapping[str, FieldRule]) -> None:
    unknown = sorted(name for name in doc if name not in rules)
    if unknown:
        raise bad_request(
            f"Unrecognized request argument(s): {', '.join(unknown)}.",
            unknown[0],
            "unknown_parameter",
        )
    for name, value in doc.items():
        rule = rules[name]
        if rule.disposition != "rejected" or value is None:
            continue
        if rule.accepts is None or not rule.accepts(value):
            raise unsupported_parameter(name, f"not supported by this Bedrock backend. {rule.note}")


# --- the values of fields ---------------------------------------------------------------------


def number(doc: Json, key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{key}' must be a number.", key)
    return value


def positive_int(doc: Json, key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"'{key}' must be a positive integer.", key)
    return value


def string(value: Any, param: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or not (value or empty):
        raise bad_request(f"'{param}' must be a non-empty string.", param)
    return value
