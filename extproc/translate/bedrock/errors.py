"""Bedrock's errors as OpenAI's: the error type for AWS's error name or the status, the
statuses a client or Envoy's retry policy would misread, and the error body."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from extproc.errors import (
    AUTHENTICATION,
    INVALID_REQUEST,
    NOT_FOUND,
    PERMISSION,
    RATE_LIMIT,
    SERVER,
    UPSTREAM,
    error_body,
)

ERROR_TYPES = {
    "ValidationException": INVALID_REQUEST,
    "AccessDeniedException": PERMISSION,
    "UnrecognizedClientException": AUTHENTICATION,
    "InvalidSignatureException": AUTHENTICATION,
    "IncompleteSignatureException": AUTHENTICATION,
    "MissingAuthenticationTokenException": AUTHENTICATION,
    "ExpiredTokenException": AUTHENTICATION,
    "ResourceNotFoundException": NOT_FOUND,
    "ThrottlingException": RATE_LIMIT,
    "ServiceQuotaExceededException": RATE_LIMIT,
    "ModelNotReadyException": RATE_LIMIT,
    "ModelErrorException": UPSTREAM,
    "ModelStreamErrorException": UPSTREAM,
    "ModelTimeoutException": UPSTREAM,
    "InternalServerException": SERVER,
    "ServiceUnavailableException": SERVER,
}
# Bedrock answers quota exhaustion with 400, a failed model with 424 and a model timeout with
# 408: a client would not back off, and Envoy's retry policy (5xx, 429) would not fail over.
_ERROR_STATUS = {
    "ServiceQuotaExceededException": 429,
    "ModelErrorException": 502,
    "ModelTimeoutException": 504,
}
_STATUS_TYPES = {
    400: INVALID_REQUEST,
    401: AUTHENTICATION,
    403: PERMISSION,
    404: NOT_FOUND,
    429: RATE_LIMIT,
}


def client_status(kind: str, status: int) -> int:
    """The status the client gets for Bedrock's ``status`` with the AWS error ``kind``."""
    return _ERROR_STATUS.get(kind, status)


def error_type(kind: str, status: int) -> str:
    return (
        ERROR_TYPES.get(kind)
        or _STATUS_TYPES.get(status)
        or (SERVER if status >= 500 else UPSTREAM)
    )


def error_message(payload: bytes, fallback: str) -> str:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        text = payload.decode(errors="replace").strip()
        return text[:1000] or fallback
    if isinstance(doc, dict):
        for key in ("message", "Message"):
            if isinstance(doc.get(key), str) and doc[key]:
                return str(doc[key])
    return fallback


def error_kind(head: Mapping[str, str]) -> str:
    """The AWS error type of an error response's head (lower-case names)."""
    # e.g. "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    return head.get("x-amzn-errortype", "").partition(":")[0]


def openai_error_body(kind: str, status: int, body: bytes) -> bytes:
    """The OpenAI error body for a Bedrock error response."""
    message = error_message(body, f"Bedrock returned HTTP {status}.")
    return error_body(message, error_type(kind, status), None, kind or None)
