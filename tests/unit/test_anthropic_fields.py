"""The Anthropic field table: every OpenAI request field has a rule, each rule does what it
says (mapped rows: tests/unit/test_anthropic_request.py), and the README shows the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import completion_create_params

from extproc.translate.anthropic.fields import CHAT_FIELDS, fields_markdown
from tests.anthropic_cases import Json, messages, rejected

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_openai_chat_field_has_a_rule() -> None:
    openai_fields = set(completion_create_params.CompletionCreateParamsBase.__annotations__)
    assert openai_fields | {"stream"} <= {rule.name for rule in CHAT_FIELDS}


def test_the_readme_shows_the_table() -> None:
    table = fields_markdown()
    for rule in CHAT_FIELDS:
        assert f"| `{rule.name}` | {rule.disposition} |" in table
    assert table in README.read_text()


IGNORED_VALUES: Json = {
    "metadata": {"k": "v"},
    "store": True,
    "service_tier": "flex",
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
    assert messages(IGNORED_VALUES) == messages({})


@pytest.mark.parametrize(("field", "value"), REJECTED_VALUES.items())
def test_rejected_fields_name_the_parameter(field: str, value: Any) -> None:
    error = rejected({field: value})
    assert error.param == field
    assert error.code == "unsupported_parameter"
    assert field in error.message and "Anthropic" in error.message


def test_default_values_of_rejected_fields_and_nulls_pass() -> None:
    assert messages(HARMLESS_VALUES) == messages({})
    assert messages(dict.fromkeys(REJECTED_VALUES)) == messages({})


def test_unknown_fields_are_refused_by_name() -> None:
    error = rejected({"temperatur": 0.5, "zzz": 1})
    assert error.param == "temperatur"
    assert "temperatur, zzz" in error.message
