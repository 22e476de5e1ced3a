"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``, or, to the
clients of an API that expects it (Anthropic's Messages), Anthropic's: ``{"type": "error",
"error": {"type", "message"}}``.

Every failure the gateway itself reports to a client goes through :class:`GatewayError`, so the
status, the JSON shape and the content type are decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import assert_never

import orjson

from extproc.endpoints import ErrorShape

INVALID_REQUEST = "invalid_request_error"
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_error"
AUTHENTICATION = "authentication_error"
PERMISSION = "permission_error"
UPSTREAM = "upstream_error"
SERVER = "server_error"


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


@dataclass
class GatewayError(Exception):
    """A failure answered to the client with ``status`` and an OpenAI-shaped body."""

    status: int
    message: str
    type: str = INVALID_REQUEST
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    shape: ErrorShape = "openai"  # the shape the client's API expects (endpoints.API.errors)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> bytes:
        match self.shape:
            case "openai":
                return error_body(self.message, self.type, self.param, self.code)
            case "anthropic":
                return anthropic_error_body(anthropic_type(self.status), self.message)
            case _:
                assert_never(self.shape)


# Anthropic's error types by status (its documented set; any other 4xx is a bad request and
# any other 5xx an API error).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def anthropic_error_body(type_: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": type_, "message": message}})


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, INVALID_REQUEST, param, code)


def unsupported_parameter(param: str, why: str) -> GatewayError:
    return GatewayError(
        400,
        f"Unsupported parameter '{param}': {why}",
        INVALID_REQUEST,
        param,
        "unsupported_parameter",
    )
