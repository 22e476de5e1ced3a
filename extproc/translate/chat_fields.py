"""Field tables: what a translator does with each OpenAI request field (mapped, ignored or
rejected with a 400 naming it), the check every request passes first, the table as Markdown for
the README, and the readers of the fields' values. Each translating schema has its own table
(``translate/bedrock/fields.py``, ``translate/anthropic/fields.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from extproc.errors import bad_request, unsupported_parameter

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


def accepts_only(*values: object) -> Callable[[Any], bool]:
    """``accepts`` for the values given, compared with their types (``0`` is not ``False``)."""
    return lambda value: any(value == v and type(value) is type(v) for v in values)


def markdown_table(rules: tuple[FieldRule, ...]) -> str:
    """A field table as a Markdown table, for the README."""
    lines = ["| Field | Handling | Notes |", "|---|---|---|"]
    for rule in rules:
        note = rule.note.replace("|", r"\|")
        lines.append(f"| `{rule.name}` | {rule.disposition} | {note} |")
    return "\n".join(lines) + "\n"


def check_fields(doc: Json, rules: Mapping[str, FieldRule], provider: str) -> None:
    """A 400 for the first unknown field, or a rejected one that asks for more than the
    default; ``provider`` names the backend in the message (``Bedrock``)."""
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
            raise unsupported_parameter(
                name, f"not supported by this {provider} backend. {rule.note}"
            )


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
