"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure the gateway itself reports to a client goes through :class:`GatewayError`, so the
status, the JSON shape and the content type are decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

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

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)


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
