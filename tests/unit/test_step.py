"""Step.then, the router stage's one reply to a request's headers and body: no field is lost."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from extproc.errors import bad_request
from extproc.router import Respond
from extproc.step import Step

# For every field of Step: a value for the first step, and another for the later one. A field
# added to Step without a line here fails the first test; one Step.then leaves out, the others.
VALUES: dict[str, tuple[Any, Any]] = {
    "set_headers": ({":authority": "a.example"}, {":path": "/v1/x"}),
    "remove_headers": (["authorization"], ["api-key"]),
    "body": (b"first", b"later"),
    "request_body": ("buffered", "none"),
    "response_headers": (True, False),
    "response_body": ("streamed", "buffered"),
    "error": (bad_request("first"), bad_request("later")),
    "respond": (Respond(200, b"first"), Respond(200, b"later")),
    "metadata": ({"model": "m"}, {"handed_off": True}),
    "done": (True, True),
}
FIELDS = [f.name for f in dataclasses.fields(Step)]
# The merged reply's value of each field, when both steps set it.
BOTH = {
    "set_headers": {":authority": "a.example", ":path": "/v1/x"},
    "remove_headers": ["authorization", "api-key"],
    "metadata": {"model": "m", "handed_off": True},
}


def test_every_field_of_step_is_covered() -> None:
    assert sorted(VALUES) == sorted(FIELDS)


@pytest.mark.parametrize("name", FIELDS)
def test_a_field_of_the_later_step_reaches_the_reply(name: str) -> None:
    later = Step(**{name: VALUES[name][1]})
    assert getattr(Step().then(later), name) == VALUES[name][1]


@pytest.mark.parametrize("name", FIELDS)
def test_a_field_of_the_first_step_stays_unless_the_later_one_sets_it(name: str) -> None:
    first = Step(**{name: VALUES[name][0]})
    assert getattr(first.then(Step()), name) == VALUES[name][0]


@pytest.mark.parametrize("name", FIELDS)
def test_a_field_both_steps_set(name: str) -> None:
    first, later = Step(**{name: VALUES[name][0]}), Step(**{name: VALUES[name][1]})
    assert getattr(first.then(later), name) == BOTH.get(name, VALUES[name][1])


@pytest.mark.parametrize("name", ["error", "respond"])
def test_an_error_or_an_answer_in_the_later_step_is_the_reply(name: str) -> None:
    first = Step(set_headers={":path": "/v1/x"}, request_body="buffered")
    later = Step(**{name: VALUES[name][1]}, done=True)
    assert first.then(later) is later


def test_the_first_steps_removed_headers_are_not_changed_in_place() -> None:
    owned = ["authorization"]  # the stage's own list, shared by every attempt
    Step(remove_headers=owned).then(Step(remove_headers=["api-key"]))
    assert owned == ["authorization"]
