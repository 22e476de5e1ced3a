"""Bedrock model ids: the model family an id names (or its route declares), and the per-model
Bedrock settings of a route's backend entry (``family``, ``guardrail``) and of a backend
(``fetch_image_urls``).

Read by the config loader (control plane: pydantic only) and by the Bedrock translators, so both
resolve a family the same way. An ARN of a provisioned throughput, an application inference
profile or a custom model deployment names no family: its route must declare one, or the config
is refused at load time (never a request-time surprise).
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import Field, IPvAnyNetwork

from extproc.configbase import ConfigModel, Duration

Family = Literal[
    "claude", "titan", "nova", "llama", "mistral", "cohere", "ai21", "deepseek", "openai", "qwen"
]
FAMILIES: tuple[Family, ...] = get_args(Family)

# The provider prefix of a base model id (after any cross-region prefix such as ``us.``, or
# inside a foundation-model or inference-profile ARN) -> its family.
_PREFIXES: tuple[tuple[str, Family], ...] = (
    ("anthropic.", "claude"),
    ("amazon.titan", "titan"),
    ("amazon.nova", "nova"),
    ("meta.llama", "llama"),
    ("mistral.", "mistral"),
    ("cohere.", "cohere"),
    ("ai21.", "ai21"),
    ("deepseek.", "deepseek"),
    ("openai.", "openai"),
    ("qwen.", "qwen"),
)
_NAMED = re.compile(r"(?:^|[./:])(" + "|".join(re.escape(prefix) for prefix, _ in _PREFIXES) + ")")
_FAMILY_OF_PREFIX = dict(_PREFIXES)


def named_family(model_id: str) -> Family | None:
    """The family a Bedrock model id names, or None (an ARN of a provisioned model...)."""
    match = _NAMED.search(model_id)
    return _FAMILY_OF_PREFIX[match[1]] if match else None


def family_of(model_id: str, declared: Family | None = None) -> Family | None:
    """The family of a route's model: the declared one wins over what the id names."""
    return declared or named_family(model_id)


def unknown_family(model_id: str) -> str:
    """Why a model id with no family cannot be served (config error and request error)."""
    return (
        f"Bedrock model {model_id!r} names no known model family; declare it with"
        f" `family:` (one of {', '.join(FAMILIES)})"
    )


class Guardrail(ConfigModel):
    """A Bedrock guardrail applied to every Converse call of a route's backend entry."""

    id: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^([a-z0-9]+|arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+)$",
    )
    version: str = Field(pattern=r"^([1-9][0-9]{0,7}|DRAFT)$")
    trace: Literal["enabled", "disabled", "enabled_full"] = "disabled"
    # Streams only: sync holds each chunk until the guardrail has checked it; async sends
    # chunks at once and checks them in the background (Bedrock's default is sync).
    stream_processing_mode: Literal["sync", "async"] = "sync"


class ImageFetch(ConfigModel):
    """A Bedrock backend's opt-in to download the https image URLs of chat requests
    (:mod:`extproc.imagefetch`): Converse takes images only as bytes."""

    # Host names allowed: exact (``images.example.com``) or a subdomain wildcard (``*.example.com``).
    allow: list[str] = Field(min_length=1)
    # Private, loopback, link-local... addresses are refused even for an allowed host, unless in
    # one of these networks (``10.1.0.0/16``, ``127.0.0.1/32``).
    allow_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    # Bedrock's own limit on one image is 3.75 MB.
    max_bytes: int = Field(default=3_750_000, ge=1, le=3_750_000)
    timeout: Duration = 10.0  # per request, all its images; capped by sidecar.message_timeout
    ca_file: str | None = None  # a private CA for the image hosts (default: the system's)
