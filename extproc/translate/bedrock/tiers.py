"""OpenAI's ``service_tier`` on Bedrock: Converse's ``serviceTier`` in the request, and the tier
Bedrock says served the answer back in OpenAI's ``service_tier``.

| OpenAI ``service_tier`` | Converse ``serviceTier.type`` |
|---|---|
| ``auto`` | none sent: Bedrock's default for the account (OpenAI's ``auto`` is its project's) |
| ``default`` | ``default`` (Bedrock's Standard tier) |
| ``flex`` | ``flex`` |
| ``priority`` | ``priority`` |
| ``scale`` | ``reserved`` (capacity reserved in advance, as OpenAI's Scale Tier) |

A model or region without the tier gets Bedrock's ValidationException, a 400.
"""

from __future__ import annotations

from typing import Any, TypedDict

from extproc.errors import bad_request


class ServiceTier(TypedDict):
    type: str


_TO_BEDROCK: dict[str, str | None] = {
    "auto": None,
    "default": "default",
    "flex": "flex",
    "priority": "priority",
    "scale": "reserved",
}
_TO_OPENAI = {bedrock: openai for openai, bedrock in _TO_BEDROCK.items() if bedrock}

NOTE = (
    "`serviceTier.type`: `default`, `flex` and `priority` as named, `scale` -> `reserved`,"
    " `auto` -> none sent (the account's default); the tier Bedrock reports is echoed in"
    " `service_tier` (a stream's chunks carry the requested one). Other values are a 400."
)


def service_tier(doc: dict[str, Any]) -> ServiceTier | None:
    """The Converse ``serviceTier`` for the request's ``service_tier``; a 400 naming it."""
    value = doc.get("service_tier")
    if value is None:
        return None
    if not isinstance(value, str) or value not in _TO_BEDROCK:
        raise bad_request(
            f"'service_tier' must be one of {', '.join(_TO_BEDROCK)} on this Bedrock backend.",
            "service_tier",
        )
    tier = _TO_BEDROCK[value]
    return {"type": tier} if tier is not None else None


def openai_tier(reported: Any) -> str | None:
    """OpenAI's name for the ``serviceTier`` Bedrock reports (None: it reported none)."""
    kind = reported.get("type") if isinstance(reported, dict) else None
    return _TO_OPENAI.get(kind) if isinstance(kind, str) else None
