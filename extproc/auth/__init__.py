"""Backend credentials, kept apart from translation.

An :class:`Auth` runs on the final :class:`~extproc.translate.UpstreamRequest` of each attempt,
after the translator produced it, so a signature (SigV4) covers exactly the bytes that leave
Envoy. Credentials only ever travel in upstream request headers: never in a log, a metric, a
response or the rendered Envoy config.
"""

from __future__ import annotations

from typing import Protocol

from extproc.translate import UpstreamRequest


class Auth(Protocol):
    @property
    def needs_body(self) -> bool:
        """Whether the credential depends on the body (signatures)."""

    async def apply(self, request: UpstreamRequest, host: str) -> None:
        """Add the credential headers to ``request``; ``host`` is the upstream :authority.

        Raises :class:`extproc.errors.GatewayError` when no credential can be had (e.g. a
        token endpoint is down); the message never contains a secret.
        """


class NoAuth:
    needs_body = False

    async def apply(self, request: UpstreamRequest, host: str) -> None:
        return None


class StaticHeader:
    """A fixed credential header: ``Authorization: Bearer KEY`` or Azure's ``api-key: KEY``."""

    needs_body = False

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._value = value

    def __repr__(self) -> str:
        return f"StaticHeader({self._name!r}, <redacted>)"

    async def apply(self, request: UpstreamRequest, host: str) -> None:
        request.headers[self._name] = self._value


def bearer(token: str) -> StaticHeader:
    return StaticHeader("authorization", f"Bearer {token}")
