"""The usage and model of a JSON answer too large to hold, from its first and last bytes.

A large embeddings batch answers with tens of megabytes of vectors: more than the gateway can
buffer (``http.max_request_bytes``) and more than it should, since it changes none of it. Such
an answer is passed on as it arrives and only its ends are kept. OpenAI-shaped answers put
``usage`` (and, for embeddings, ``model``) after the data, chat completions put ``model``
before it, so a head and a tail of :data:`KEEP_BYTES` each hold both.

No JSON library reads a document from its end, so the keys are found by hand: the last
``"usage"`` key whose value parses as an object, and the first ``"model"`` (else the last) whose
value parses as a string. A string value inside the data that happens to hold those bytes
could be taken for the key; vectors (numbers or base64) never do.
"""

from __future__ import annotations

import json
import re
from typing import Any

KEEP_BYTES = 64 * 1024

_KEY = re.compile(r'"(usage|model)"\s*:\s*')
_DECODER = json.JSONDecoder()


class HeadTail:
    """A body fed in chunks, of which the first and last :data:`KEEP_BYTES` are kept."""

    __slots__ = ("_head", "_tail", "length")

    def __init__(self) -> None:
        self._head = bytearray()
        self._tail = bytearray()
        self.length = 0

    def feed(self, chunk: bytes) -> None:
        self.length += len(chunk)
        room = KEEP_BYTES - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            if len(self._tail) > KEEP_BYTES:
                del self._tail[: len(self._tail) - KEEP_BYTES]

    def fields(self) -> tuple[dict[str, Any] | None, str | None]:
        """The answer's ``usage`` object and ``model`` string, where its ends hold them."""
        usage: dict[str, Any] | None = None
        models: list[str] = []
        # The head and tail meet when the body was short; a key across the seam is lost then,
        # which only costs an estimate.
        for part in (bytes(self._head), bytes(self._tail)):
            for key, value in _values(part):
                if key == "usage" and isinstance(value, dict):
                    usage = value
                elif key == "model" and isinstance(value, str):
                    models.append(value)
        return usage, models[0] if models else None


def _values(data: bytes) -> list[tuple[str, Any]]:
    # A cut multi-byte character at either end becomes a replacement character, harmlessly.
    text = data.decode("utf-8", "replace")
    out = []
    for match in _KEY.finditer(text):
        try:
            value, _ = _DECODER.raw_decode(text, match.end())
        except ValueError:
            continue
        out.append((match.group(1), value))
    return out
