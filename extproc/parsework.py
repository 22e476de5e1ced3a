"""Bounds on the work of parsing a client's JSON body, checked before any object is built.

A body's size alone does not bound what parsing it costs: 28.6 MB of ``{},`` is ten million
dicts, +864 MiB in a sidecar worker for over a second, while other requests wait on that
worker. So before the router (or anything after it) parses a body, its values are counted in
the bytes: containers (``{`` and ``[``) and items (``,``), outside strings. Counting is
``bytes.count`` (C, ~16 ms for 30 MB); strings are only taken out, by one regular expression,
when the raw counts pass a bound, so a long prompt or a base64 image costs nothing more. No
JSON library offers such bounds (orjson bounds depth only, at 1024), hence this module.

Bodies no longer than the smaller bound skip the check: they cannot hold more of either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from extproc.errors import INVALID_REQUEST, GatewayError

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


@dataclass(frozen=True, slots=True)
class ParseBounds:
    max_containers: int  # objects and arrays in one body (http.max_json_containers)
    max_items: int  # array elements and object members (http.max_json_items)

    def check(self, body: bytes) -> None:
        """Raise the client's 400 when ``body`` holds more values than the bounds allow."""
        if len(body) <= min(self.max_containers, self.max_items):
            return
        containers, items = _counts(body)
        if containers > self.max_containers or items > self.max_items:
            # The raw counts include brackets and commas inside strings: take those out.
            containers, items = _counts(_STRING.sub(b'""', body))
        if containers > self.max_containers:
            raise _too_complex(
                f"{containers} objects and arrays", self.max_containers, "containers"
            )
        if items > self.max_items:
            raise _too_complex(f"{items} values", self.max_items, "items")


def _counts(body: bytes) -> tuple[int, int]:
    return body.count(b"{") + body.count(b"["), body.count(b",") + 1


def _too_complex(what: str, bound: int, key: str) -> GatewayError:
    return GatewayError(
        400,
        f"Request body holds about {what}; this gateway reads at most {bound}"
        f" (http.max_json_{key}).",
        INVALID_REQUEST,
        code="request_too_complex",
    )
