"""What happens to each OpenAI chat request field on Anthropic's Messages API: the table
(checked against the OpenAI SDK's request types by the tests, printed into the README by
:func:`fields_markdown`) and the reasoning budget table. The check and the value readers are
:mod:`extproc.translate.chat_fields`."""

from __future__ import annotations

from extproc.translate.chat_fields import FieldRule, markdown_table
from extproc.translate.chat_fields import accepts_only as _is

# reasoning_effort -> thinking.budget_tokens (Anthropic's minimum is 1024, and the budget must
# stay below max_tokens).
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
MIN_THINKING_BUDGET = 1024

CHAT_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "messages",
        "mapped",
        "system/developer -> `system`; user text, `data:` images (png, jpeg, gif, webp: a"
        " `base64` source) and `https://` image URLs (a `url` source, fetched by Anthropic) ->"
        " content blocks; assistant `tool_calls` -> `tool_use`; tool results -> `tool_result`"
        " first in a user turn; consecutive same-role turns merged; `cache_control` on a part"
        " is passed on. System messages alone are a 400.",
    ),
    FieldRule("model", "mapped", "The route's upstream model name, in the body."),
    FieldRule("stream", "mapped", "`stream: true`; Anthropic's events are sent on as SSE chunks."),
    FieldRule(
        "stream_options",
        "mapped",
        "`include_usage` adds the final usage chunk; `include_obfuscation` has nothing to act"
        " on (no obfuscation padding is added).",
    ),
    FieldRule("max_completion_tokens", "mapped", "`max_tokens`."),
    FieldRule(
        "max_tokens",
        "mapped",
        "`max_tokens` (`max_completion_tokens` wins). Anthropic requires one: without either,"
        " the backend's `model_max_tokens` for the model, else its `max_tokens` (4096).",
    ),
    FieldRule("temperature", "mapped", "`temperature` (Anthropic's range is 0 to 1)."),
    FieldRule("top_p", "mapped", "`top_p`."),
    FieldRule("stop", "mapped", "`stop_sequences` (a string or a list)."),
    FieldRule(
        "tools",
        "mapped",
        "Function tools -> `tools[]` (`name`, `description`, `input_schema`); a `cache_control`"
        " on the tool (or its `function`) is passed on.",
    ),
    FieldRule(
        "tool_choice",
        "mapped",
        "`auto` -> `auto`, `required` -> `any`, a named function -> `tool`, `none` -> `none`.",
    ),
    FieldRule(
        "parallel_tool_calls",
        "mapped",
        "`false` -> `tool_choice.disable_parallel_tool_use: true`.",
    ),
    FieldRule(
        "response_format",
        "mapped",
        "`json_schema` / `json_object` (any object) -> a forced tool carrying the schema; its"
        " input is returned as the message content with `finish_reason: stop`.",
    ),
    FieldRule(
        "reasoning_effort",
        "mapped",
        "`thinking: {type: enabled, budget_tokens}`: minimal 1024, low 2048, medium 8192, high"
        " 16384, kept below `max_tokens` (raised to budget + the default when the client set no"
        " limit; a limit of 1024 or less is a 400); `none` -> no thinking. Thinking comes back as"
        " `reasoning_content`. Anthropic allows no forced tool (`required`, named,"
        " `response_format`) and no `temperature` but 1 with thinking: a 400.",
    ),
    FieldRule("user", "mapped", "`metadata.user_id`."),
    FieldRule("safety_identifier", "mapped", "`metadata.user_id` when `user` is not set."),
    FieldRule("metadata", "ignored", "Tags for OpenAI's stored completions."),
    FieldRule("store", "ignored", "OpenAI's stored completions; the gateway stores nothing."),
    FieldRule("service_tier", "ignored", "Billing and latency tier only."),
    FieldRule(
        "prompt_cache_key",
        "ignored",
        "A caching hint: only cost and latency change (use `cache_control` for Anthropic).",
    ),
    FieldRule("prompt_cache_options", "ignored", "A caching hint: only cost and latency change."),
    FieldRule("prompt_cache_retention", "ignored", "A caching hint: only cost and latency change."),
    FieldRule("n", "rejected", "Anthropic returns one choice; `1` is accepted.", _is(1)),
    FieldRule(
        "logprobs",
        "rejected",
        "Anthropic returns no log probabilities; `false` is accepted.",
        _is(False),
    ),
    FieldRule(
        "top_logprobs",
        "rejected",
        "Anthropic returns no log probabilities; `0` is accepted.",
        _is(0),
    ),
    FieldRule("logit_bias", "rejected", "No equivalent in Messages; `{}` is accepted.", _is({})),
    FieldRule(
        "presence_penalty",
        "rejected",
        "No equivalent in Messages; `0` is accepted.",
        _is(0, 0.0),
    ),
    FieldRule(
        "frequency_penalty",
        "rejected",
        "No equivalent in Messages; `0` is accepted.",
        _is(0, 0.0),
    ),
    FieldRule("seed", "rejected", "Messages has no seed."),
    FieldRule("audio", "rejected", "Text output only."),
    FieldRule("modalities", "rejected", 'Text output only; `["text"]` is accepted.', _is(["text"])),
    FieldRule("prediction", "rejected", "No predicted outputs in Messages."),
    FieldRule("web_search_options", "rejected", "Anthropic's web search is a server tool."),
    FieldRule(
        "verbosity", "rejected", "No equivalent in Messages; `medium` is accepted.", _is("medium")
    ),
    FieldRule("moderation", "rejected", "No moderation on this backend."),
    FieldRule("functions", "rejected", "Deprecated by OpenAI: use `tools`."),
    FieldRule("function_call", "rejected", "Deprecated by OpenAI: use `tool_choice`."),
)

CHAT_RULES = {rule.name: rule for rule in CHAT_FIELDS}


def fields_markdown() -> str:
    """The field table as a Markdown table, for the README."""
    return markdown_table(CHAT_FIELDS)
