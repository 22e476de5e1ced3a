"""Prompt caching on Bedrock: Anthropic-style ``cache_control`` marks (on content parts, on a
message, on a tool) become Converse ``cachePoint`` blocks right after the block they mark, and a
model entry's ``cache_points`` config adds them after the system prompt and the tools.

Converse takes at most four cache points a request and none before any content (a cache point
caches what precedes it); a mark that would break either is a 400 naming it. Whether the model
caches at all is Bedrock's to say: the set of models changes, and its 400 reaches the client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from extproc.errors import bad_request

MAX_CACHE_POINTS = 4


class CachePoint(TypedDict):
    type: Literal["default"]


class CachePointBlock(TypedDict):
    cachePoint: CachePoint


def cache_point() -> CachePointBlock:
    return {"cachePoint": {"type": "default"}}


def marked(holder: Any, param: str) -> bool:
    """Whether a content part, message or tool carries ``cache_control`` (checked)."""
    if not isinstance(holder, dict):
        return False
    control = holder.get("cache_control")
    if control is None:
        return False
    where = f"{param}.cache_control"
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise bad_request(f'\'{where}\' must be {{"type": "ephemeral"}}.', f"{where}.type")
    extra = sorted(set(control) - {"type", "ttl"})
    if extra:
        raise bad_request(f"Unrecognized argument '{where}.{extra[0]}'.", f"{where}.{extra[0]}")
    # Converse's cache point has the default lifetime only.
    if control.get("ttl", "5m") != "5m":
        raise bad_request(f"'{where}.ttl' can only be '5m' on Bedrock.", f"{where}.ttl")
    return True


def ends_with_point(blocks: Sequence[Mapping[str, object]]) -> bool:
    return bool(blocks) and "cachePoint" in blocks[-1]


def after(blocks: Sequence[Mapping[str, object]], param: str) -> CachePointBlock:
    """The cache point that follows ``blocks``; a 400 when there is nothing to cache."""
    if not blocks or ends_with_point(blocks):
        raise bad_request(
            f"'{param}.cache_control' marks no content (Converse caches what precedes a cache"
            " point).",
            f"{param}.cache_control",
        )
    return cache_point()


def check_count(*lists: Sequence[Mapping[str, object]]) -> None:
    """At most :data:`MAX_CACHE_POINTS` cache points in the whole request."""
    count = sum(1 for blocks in lists for block in blocks if "cachePoint" in block)
    if count > MAX_CACHE_POINTS:
        raise bad_request(
            f"The request asks for {count} cache points (cache_control marks and the model's"
            f" cache_points); Bedrock takes at most {MAX_CACHE_POINTS}.",
            "cache_control",
        )
