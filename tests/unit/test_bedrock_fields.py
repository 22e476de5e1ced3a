"""The field table: every OpenAI request field has a rule, and each rule does what it says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai.types import embedding_create_params
from openai.types.chat import completion_create_params

from extproc.translate.bedrock.fields import CHAT_FIELDS, EMBEDDINGS_FIELDS, fields_markdown
from tests.bedrock_cases import Json, converse, rejected

# --- the field table ----------------------------------------------------------------------------


def test_every_openai_chat_field_has_a_rule() -> None:
    openai_fields = set(completion_create_params.CompletionCreateParamsBase.__annotations__)
    assert openai_fields | {"stream"} <= {rule.name for rule in CHAT_FIELDS}
    assert set(embedding_create_params.EmbeddingCreateParams.__annotations__) <= {
        rule.name for rule in EMBEDDINGS_FIELDS
    }


def test_markdown_table_lists_every_field() -> None:
    table = fields_markdown()
    assert table.startswith("| Field | Handling | Notes |\n|---|---|---|\n")
    for rule in CHAT_FIELDS:
        assert f"| `{rule.name}` | {rule.disposition} |" in table
    assert "`dimensions`" in fields_markdown(EMBEDDINGS_FIELDS)


def test_readme_shows_the_tables_as_they_are() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert fields_markdown() in readme
    assert fields_markdown(EMBEDDINGS_FIELDS) in readme


IGNORED_VALUES: Json = {
    "user": "u-1",
    "safety_identifier": "s-1",
    "metadata": {"k": "v"},
    "store": True,
    "prompt_cache_key": "k",
    "prompt_cache_options": {"ttl": "30m"},
    "prompt_cache_retention": "24h",
}
REJECTED_VALUES: Json = {
    "n": 2,
    "logprobs": True,
    "top_logprobs": 3,
    "logit_bias": {"50256": -100},
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "seed": 42,
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "x"},
    "web_search_options": {},
    "verbosity": "low",
    "moderation": {"model": "omni-moderation-latest"},
    "functions": [{"name": "f"}],
    "function_call": "auto",
}
HARMLESS_VALUES: Json = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": 0,
    "logit_bias": {},
    "presence_penalty": 0,
    "frequency_penalty": 0.0,
    "modalities": ["text"],
    "verbosity": "medium",
}


def test_value_tables_cover_the_rules() -> None:
    assert set(IGNORED_VALUES) == {r.name for r in CHAT_FIELDS if r.disposition == "ignored"}
    assert set(REJECTED_VALUES) == {r.name for r in CHAT_FIELDS if r.disposition == "rejected"}


def test_ignored_fields_pass_and_change_nothing() -> None:
    assert converse(IGNORED_VALUES) == converse({})


@pytest.mark.parametrize(("field", "value"), REJECTED_VALUES.items())
def test_rejected_fields_name_the_parameter(field: str, value: Any) -> None:
    error = rejected({field: value})
    assert error.param == field
    assert error.code == "unsupported_parameter"
    assert field in error.message


def test_default_values_of_rejected_fields_and_nulls_pass() -> None:
    assert converse(HARMLESS_VALUES) == converse({})
    assert converse(dict.fromkeys(REJECTED_VALUES)) == converse({})


def test_unknown_fields_are_refused_by_name() -> None:
    error = rejected({"temperatur": 0.5, "zzz": 1})
    assert error.param == "temperatur"
    assert "temperatur, zzz" in error.message


def test_reasoning_effort_of_a_model_that_does_not_reason_names_the_parameter() -> None:
    # Moved from the rejected table when reasoning_effort became mapped for reasoning models.
    error = rejected({"reasoning_effort": "high"})
    assert error.param == "reasoning_effort"
    assert error.code == "unsupported_parameter"
    assert "reasoning_effort" in error.message
    assert converse({"reasoning_effort": "none"}) == converse({})
    assert converse({"reasoning_effort": None}) == converse({})
