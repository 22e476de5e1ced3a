"""What the fake Bedrock checks of a Converse request's documents, guardrail and service tier,
as Converse does (its ValidationException messages), and how its guardrail intervenes.

A ``guardrailConfig`` must name a guardrail the fake knows (:data:`GUARDRAILS`: id -> versions);
a request whose last user text holds :data:`BLOCKED` is then blocked: the guardrail's message,
``stopReason: guardrail_intervened``, and a trace when the config asks for one.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from tests.fakes.bedrock_rules import Invalid

Json = dict[str, Any]

GUARDRAILS = {"gr1abc": {"1", "2", "DRAFT"}}
BLOCKED = "[[blocked]]"
BLOCKED_MESSAGE = "Sorry, the model cannot answer this question."
_FORMATS = {"pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"}
_NAME = re.compile(r"[A-Za-z0-9\-()\[\]]+(\s[A-Za-z0-9\-()\[\]]+)*")
_GUARDRAIL_ID = re.compile(
    r"[a-z0-9]+|arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+"
)
_GUARDRAIL_VERSION = re.compile(r"[1-9][0-9]{0,7}|DRAFT")
_TRACES = {"enabled", "disabled", "enabled_full"}
_TIERS = {"priority", "default", "flex", "reserved"}


def check_document(value: Any, where: str, names: set[str]) -> None:
    if not isinstance(value, dict) or set(value) - {"format", "name", "source", "context"}:
        raise Invalid(f"Malformed input request: {where}.document has an extraneous key.")
    if value.get("format") not in _FORMATS:
        raise Invalid(f"{where}.document.format: unsupported document format.")
    name = value.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or not _NAME.fullmatch(name):
        raise Invalid(
            "The document file name can only contain alphanumeric characters, whitespace"
            " characters, hyphens, parentheses, and square brackets. The name can't contain"
            " more than one consecutive whitespace character."
        )
    if name in names:
        raise Invalid("Document names must be unique within a request.")
    names.add(name)
    source = value.get("source")
    try:
        data = base64.b64decode(source["bytes"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise Invalid(f"{where}.document.source.bytes: invalid base64 bytes.") from None
    if value["format"] == "pdf" and not data.startswith(b"%PDF-"):
        raise Invalid("The provided document is not a valid PDF.")


def check_guardrail(config: Any, stream: bool) -> None:
    keys = {"guardrailIdentifier", "guardrailVersion", "trace"}
    if stream:
        keys.add("streamProcessingMode")
    if not isinstance(config, dict) or set(config) - keys:
        raise Invalid("Malformed input request: guardrailConfig has an extraneous key.")
    ident, version = config.get("guardrailIdentifier"), config.get("guardrailVersion")
    if not isinstance(ident, str) or not _GUARDRAIL_ID.fullmatch(ident):
        raise Invalid("guardrailConfig.guardrailIdentifier: invalid guardrail identifier.")
    if not isinstance(version, str) or not _GUARDRAIL_VERSION.fullmatch(version):
        raise Invalid("guardrailConfig.guardrailVersion: invalid guardrail version.")
    if config.get("trace", "disabled") not in _TRACES:
        raise Invalid("guardrailConfig.trace: must be enabled, disabled or enabled_full.")
    if config.get("streamProcessingMode", "sync") not in ("sync", "async"):
        raise Invalid("guardrailConfig.streamProcessingMode: must be sync or async.")
    if version not in GUARDRAILS.get(ident.rsplit("/", 1)[-1], set()):
        raise Invalid("The guardrail identifier or version provided in the request does not exist.")


def check_service_tier(tier: Any) -> None:
    if not isinstance(tier, dict) or set(tier) != {"type"} or tier["type"] not in _TIERS:
        raise Invalid("serviceTier.type: must be one of priority, default, flex, reserved.")


def guardrail_trace(config: Json, prompt: str, answer: str | None) -> Json | None:
    """The ``trace`` of a guardrail-checked answer, if the config asks for one: the prompt
    assessed (and blocked when ``answer`` is None), else the answer too. As Bedrock counts, a
    text unit is up to 1,000 characters, per policy; word filters are reported, not billed."""

    def assessment(text: str, blocked: bool) -> Json:
        units = max(1, -(-len(text) // 1000))
        usage = {"topicPolicyUnits": units, "contentPolicyUnits": units, "wordPolicyUnits": units}
        out: Json = {"invocationMetrics": {"guardrailProcessingLatency": 1, "usage": usage}}
        if blocked:
            out["topicPolicy"] = {"topics": [{"name": "blocked", "action": "BLOCKED"}]}
        return out

    if config.get("trace", "disabled") == "disabled":
        return None
    guardrail_id = config["guardrailIdentifier"]
    trace: Json = {"inputAssessment": {guardrail_id: assessment(prompt, answer is None)}}
    if answer is not None:
        trace["outputAssessments"] = {guardrail_id: [assessment(answer, False)]}
    return {"guardrail": trace}
