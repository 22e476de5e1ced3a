"""What happens to each Responses API request field on Bedrock: the table (checked against the
OpenAI SDK's request types by the tests, printed into the README by
:func:`~extproc.translate.bedrock.fields.fields_markdown`). Bedrock keeps no state, so what
needs a stored response or a server-side tool is refused, naming the field."""

from __future__ import annotations

from typing import Any

from extproc.translate.bedrock.fields import CHAT_RULES
from extproc.translate.chat_fields import FieldRule
from extproc.translate.chat_fields import accepts_only as _is

_STATELESS = "Bedrock keeps no responses (nothing is stored by the gateway either)"
# What the SDKs send for "nothing extra": the encrypted reasoning the answer carries anyway.
_INCLUDES = frozenset({"reasoning.encrypted_content"})


def _includes(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v in _INCLUDES for v in value)


RESPONSES_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "input",
        "mapped",
        "A string (one user turn) or items: `message` (roles `user`, `assistant`, `system`,"
        " `developer`; parts `input_text`, `input_image` as a `data:` URI, and `output_text` /"
        " `refusal` of earlier answers) -> turns, system and developer text -> `system`;"
        " `function_call` -> `toolUse`, `function_call_output` (text) -> `toolResult` in a"
        " user turn; `reasoning` (as answers carry it) -> `reasoningContent`; consecutive"
        " same-role turns merged. Image URLs are not fetched and `file_id` images, files and `item_reference`"
        " are a 400.",
    ),
    FieldRule("instructions", "mapped", "`system`, before the system and developer items."),
    FieldRule(
        "stream",
        "mapped",
        "`converse-stream`; its events are sent as the Responses API's typed events.",
    ),
    FieldRule(
        "stream_options",
        "ignored",
        "`include_obfuscation` has nothing to act on (no obfuscation padding is added).",
    ),
    FieldRule("max_output_tokens", "mapped", "`inferenceConfig.maxTokens`."),
    *(CHAT_RULES[name] for name in ("model", "temperature", "top_p")),
    FieldRule(
        "tools",
        "mapped",
        "`function` tools -> `toolConfig.tools[].toolSpec` (`strict` is not enforced by"
        " Converse). Built-in tools (`web_search`, `file_search`, `code_interpreter`,"
        " `computer_use`, `image_generation`, `mcp`, ...) run on OpenAI's side only: a 400"
        " naming `tools[i].type`.",
    ),
    FieldRule(
        "tool_choice",
        "mapped",
        "`auto` -> `auto`, `required` -> `any`, `{type: function, name}` -> `tool`; `none` -> no"
        " `toolConfig`, and the tool history is sent as text.",
    ),
    FieldRule(
        "text",
        "mapped",
        "`format` `json_schema` / `json_object` -> a forced tool carrying the schema, as chat's"
        " `response_format`; its input is returned as the `output_text`. `verbosity`: only"
        " `medium` is accepted.",
    ),
    FieldRule(
        "reasoning",
        "mapped",
        "`effort` -> the model's reasoning control, as chat's `reasoning_effort` (see"
        " *Reasoning*); the reasoning comes back as `reasoning` items with `reasoning_text`"
        " content. `summary` is accepted: Bedrock gives the reasoning itself, not a summary.",
    ),
    CHAT_RULES["parallel_tool_calls"],
    FieldRule(
        "include",
        "rejected",
        "`reasoning.encrypted_content` is accepted (reasoning items carry Claude's signature"
        " in `encrypted_content` anyway); nothing else can be added.",
        _includes,
    ),
    FieldRule(
        "store",
        "ignored",
        f"{_STATELESS}: the answer cannot be retrieved later, whatever its value.",
    ),
    FieldRule("metadata", "ignored", "Tags for OpenAI's stored responses; echoed in the answer."),
    *(
        CHAT_RULES[name]
        for name in (
            "user",
            "safety_identifier",
            "service_tier",
            "prompt_cache_key",
            "prompt_cache_options",
            "prompt_cache_retention",
        )
    ),
    FieldRule(
        "truncation",
        "rejected",
        "Converse never drops input to fit the context; `disabled` is accepted.",
        _is("disabled"),
    ),
    FieldRule(
        "previous_response_id", "rejected", f"{_STATELESS}: send the whole conversation in `input`."
    ),
    FieldRule("conversation", "rejected", f"{_STATELESS}: send the whole conversation in `input`."),
    FieldRule(
        "background",
        "rejected",
        f"{_STATELESS}, so no background runs; `false` is accepted.",
        _is(False),
    ),
    FieldRule("background_options", "rejected", "No background runs on this backend."),
    FieldRule("prompt", "rejected", "Stored prompt templates live on OpenAI's side."),
    FieldRule("context_management", "rejected", "No server-side compaction in Converse."),
    FieldRule("max_tool_calls", "rejected", "No equivalent in Converse."),
    FieldRule(
        "top_logprobs",
        "rejected",
        "Bedrock returns no log probabilities; `0` is accepted.",
        _is(0),
    ),
    FieldRule("moderation", "rejected", "No moderation on this backend."),
    FieldRule("image", "rejected", "Text output only."),
    FieldRule("access_programs", "rejected", "OpenAI's own programs; not on this backend."),
)

RESPONSES_RULES = {rule.name: rule for rule in RESPONSES_FIELDS}
