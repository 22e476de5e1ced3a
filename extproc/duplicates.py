"""Top-level keys a request body gives more than once.

JSON leaves a repeated key to the parser: orjson (and Python, Go, JavaScript) keep the last
one, other parsers the first or refuse the document. The gateway routes, authorizes and
limits on the keys it reads (``model``, ``stream``), and the body usually reaches the provider
as the client sent it: if both sides read a repeated key differently, a client could be
admitted for one model and served (and billed) by another. So a body that repeats one of them
is refused.

orjson cannot report repeats, so a cheap scan of the bytes comes first: only a body that
holds a key's name twice (as it may be spelled in JSON, ``\\u`` escapes included) is parsed
again by :mod:`json`, whose hook sees every key of the top-level object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

DECIDING_KEYS = ("model", "stream")


def _spellings(name: str) -> re.Pattern[bytes]:
    """The key as a JSON string in any spelling: each letter as itself or as a \\u escape."""
    parts = []
    for char in name:
        code = f"{ord(char):04x}"
        hex_ = "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in code)
        parts.append(f"(?:{re.escape(char)}|\\\\u{hex_})")
    return re.compile(('"' + "".join(parts) + '"').encode())


_PATTERNS = {name: _spellings(name) for name in DECIDING_KEYS}


def _may_repeat(body: bytes, name: str, escaped: bool) -> bool:
    if body.count(f'"{name}"'.encode()) > 1:
        return True
    return escaped and len(_PATTERNS[name].findall(body)) > 1


def _top_level_keys(body: bytes) -> list[str]:
    keys: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> None:
        # Called for every object, innermost first: the last call is the top-level one.
        keys[:] = [key for key, _ in pairs]

    json.loads(body, object_pairs_hook=hook)
    return keys


def repeated_keys(body: bytes, names: Iterable[str] = DECIDING_KEYS) -> list[str]:
    """Which of ``names`` the top-level object of ``body`` (valid JSON) has more than once.

    Raises RecursionError for a body nested too deeply for :mod:`json` to check.
    """
    # One byte first (memchr): most bodies have no backslash, or no \u escape after one.
    escaped = body.find(b"\\") != -1 and b"\\u" in body
    suspects = [name for name in names if _may_repeat(body, name, escaped)]
    if not suspects:
        return []
    keys = _top_level_keys(body)
    return [name for name in suspects if keys.count(name) > 1]
