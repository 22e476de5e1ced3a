"""A route's Bedrock guardrail (``guardrail:`` of its backend entry) as Converse's
``guardrailConfig``.

Converse takes ``guardrailIdentifier``, ``guardrailVersion`` and ``trace``; ConverseStream also
``streamProcessingMode`` (``sync``: each chunk is held until the guardrail checked it; ``async``:
chunks go at once, checked in the background). When the guardrail intervenes Bedrock answers
200 with ``stopReason: guardrail_intervened`` and the guardrail's configured message as the
assistant's text: the client gets that text with ``finish_reason: content_filter``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NotRequired, TypedDict

from extproc.bedrockmodels import Guardrail


class GuardrailConfig(TypedDict):
    guardrailIdentifier: str
    guardrailVersion: str
    trace: str
    streamProcessingMode: NotRequired[str]  # ConverseStream only: Converse refuses it


def guardrail_config(guardrail: Guardrail, stream: bool) -> GuardrailConfig:
    config: GuardrailConfig = {
        "guardrailIdentifier": guardrail.id,
        "guardrailVersion": guardrail.version,
        "trace": guardrail.trace,
    }
    if stream:
        config["streamProcessingMode"] = guardrail.stream_processing_mode
    return config


# Policies whose units Bedrock reports but does not bill.
_FREE = frozenset({"wordPolicyUnits"})


def text_units(trace: Any) -> int:
    """The billed text units of an answer's guardrail trace (``trace.guardrail``): every
    assessment's ``invocationMetrics.usage`` policy units, input and outputs, summed; the ones
    AWS does not bill (word filters, ``...FreeUnits``) left out."""
    guardrail = trace.get("guardrail") if isinstance(trace, dict) else None
    if not isinstance(guardrail, dict):
        return 0
    total = 0
    for assessment in _assessments(guardrail):
        metrics = assessment.get("invocationMetrics")
        usage = metrics.get("usage") if isinstance(metrics, dict) else None
        if isinstance(usage, dict):
            total += sum(
                units
                for name, units in usage.items()
                if name.endswith("Units") and name not in _FREE and not name.endswith("FreeUnits")
                and isinstance(units, int) and not isinstance(units, bool) and units > 0
            )  # fmt: skip
    return total


def _assessments(guardrail: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``inputAssessment`` maps a guardrail id to one assessment, ``outputAssessments`` to a
    list of them."""
    inputs = guardrail.get("inputAssessment")
    outputs = guardrail.get("outputAssessments")
    for value in inputs.values() if isinstance(inputs, dict) else ():
        if isinstance(value, dict):
            yield value
    for values in outputs.values() if isinstance(outputs, dict) else ():
        for value in values if isinstance(values, list) else ():
            if isinstance(value, dict):
                yield value
