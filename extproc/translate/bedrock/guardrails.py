"""A route's Bedrock guardrail (``guardrail:`` of its backend entry) as Converse's
``guardrailConfig``.

Converse takes ``guardrailIdentifier``, ``guardrailVersion`` and ``trace``; ConverseStream also
``streamProcessingMode`` (``sync``: each chunk is held until the guardrail checked it; ``async``:
chunks go at once, checked in the background). When the guardrail intervenes Bedrock answers
200 with ``stopReason: guardrail_intervened`` and the guardrail's configured message as the
assistant's text: the client gets that text with ``finish_reason: content_filter``.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

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
