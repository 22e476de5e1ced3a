"""Content codings of the bodies the sidecar must read: a client's compressed request, and a
provider's answer compressed although the gateway asked for ``identity``.

Decoding happens here rather than in Envoy's decompressor filter for two measured reasons: that
filter cannot run in a cluster's upstream filter chain (where the upstream stage reads answers),
and on the request side it cuts a body whose inflate ratio passes its ``max_inflate_ratio``
(100 by default) without saying so, which would reach the router as a truncated document.
Here the only bound is the decoded size, and passing it is a clear error. zlib (standard
library) reads ``gzip`` and ``deflate``, the codings HTTP clients send; others are refused.
"""

from __future__ import annotations

import zlib

from extproc.errors import INVALID_REQUEST, UPSTREAM, GatewayError, bad_request

SUPPORTED = ("gzip", "deflate")
IDENTITY = "identity"
# What every attempt asks the provider for: answers the sidecar and Envoy's readers can read.
ACCEPT_ENCODING = IDENTITY

# zlib's wbits: 16 + MAX_WBITS reads the gzip wrapper; MAX_WBITS reads zlib's ("deflate").
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def codings(header: str | None) -> list[str]:
    """The codings a ``content-encoding`` value lists, in the order they were applied."""
    if not header:
        return []
    return [c for c in (part.strip().lower() for part in header.split(",")) if c and c != IDENTITY]


class Decoder:
    """Incremental decoder of one body; refuses to produce more than ``limit`` bytes in all
    (``whole``: a body read at once) or from any one chunk (a stream, which may run long)."""

    __slots__ = ("_coding", "_left", "_limit", "_whole", "_zlib")

    def __init__(self, coding: str, limit: int, whole: bool = True) -> None:
        self._coding = coding
        self._zlib = zlib.decompressobj(_WBITS[coding])
        self._limit = limit
        self._left = limit
        self._whole = whole

    def feed(self, data: bytes, end: bool) -> bytes:
        """The decoded bytes of ``data``. Raises ValueError for a corrupt body, OverflowError
        for one that decodes to more than the limit."""
        if not self._whole:
            self._left = self._limit
        try:
            # max_length bounds the memory of a decompression bomb to the limit itself.
            out = self._zlib.decompress(data, self._left + 1)
            if end:
                out += self._zlib.flush()
        except zlib.error as exc:
            raise ValueError(f"not valid {self._coding} data ({exc})") from None
        self._left -= len(out)
        if self._left < 0 or self._zlib.unconsumed_tail:
            raise OverflowError(f"decodes to more than the {self._limit} bytes allowed")
        if end and not self._zlib.eof:
            raise ValueError(f"{self._coding} data ends before its last block")
        return out


def unsupported_request_coding(header: str) -> GatewayError | None:
    """The 415 for a request body in a coding the gateway cannot read; None when it can."""
    found = codings(header)
    bad = [c for c in found if c not in SUPPORTED]
    if bad:
        return GatewayError(
            415,
            f"Content-Encoding '{bad[0]}' is not supported for request bodies; use one of"
            f" {', '.join(SUPPORTED)}, or send the body uncompressed.",
            INVALID_REQUEST,
            param="content-encoding",
            code="unsupported_content_encoding",
        )
    if len(found) > 1:
        return GatewayError(
            415,
            f"Content-Encoding '{header}' applies several codings; send at most one.",
            INVALID_REQUEST,
            param="content-encoding",
            code="unsupported_content_encoding",
        )
    return None


def decode_request(body: bytes, header: str, limit: int) -> bytes:
    """A client's compressed body, decoded; ``limit`` is ``http.max_request_bytes``, which
    bounds the decoded body as it bounds a plain one. Raises the client's 400 or 413."""
    found = codings(header)
    if not found:
        return body
    try:
        return Decoder(found[0], limit).feed(body, end=True)
    except OverflowError:
        raise too_large(limit, " once decompressed") from None
    except ValueError as exc:
        raise bad_request(
            f"Request body is not what its Content-Encoding says: {exc}.",
            param="content-encoding",
        ) from None


def too_large(limit: int, how: str = "") -> GatewayError:
    """The client's 413 for a body over ``http.max_request_bytes``."""
    return GatewayError(
        413,
        f"Request body is larger than this gateway accepts{how} ({limit} bytes).",
        INVALID_REQUEST,
        code="request_too_large",
    )


def unreadable_answer(coding: str) -> GatewayError:
    """The 502 for a provider answer in a coding the gateway did not ask for and cannot read."""
    return GatewayError(
        502,
        f"The provider compressed its answer with '{coding}', which the gateway did not ask"
        " for and cannot read.",
        UPSTREAM,
        code="bad_upstream_response",
    )
