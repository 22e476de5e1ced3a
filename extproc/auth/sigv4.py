"""AWS Signature Version 4 for Bedrock, computed by botocore over the exact outgoing request.

What is signed, and why:

- the method, the path exactly as it leaves Envoy (already percent-encoded: a model id's ``:``
  is ``%3A``), the query, and a SHA-256 of the body. botocore percent-encodes the path once
  more for the canonical request (``%3A`` -> ``%253A``), which is what AWS does for every
  service but S3, and what botocore's own ``bedrock-runtime`` client relies on.
- ``host``: set explicitly to the ``:authority`` Envoy sends, port included. Left to botocore it
  would be derived from a URL and lose a port it considers default.
- ``x-amz-date`` and, with temporary credentials, ``x-amz-security-token``. Nothing else: any
  other signed header that Envoy or the client could add or rewrite on the way would break the
  signature, and the body hash already pins the content.

The signing name is ``bedrock`` (not ``bedrock-runtime``). No ``x-amz-content-sha256`` header is
sent: botocore adds it only for S3.
"""

from __future__ import annotations

import asyncio
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError
from botocore.session import Session

from extproc.config import AWSBedrockBackend
from extproc.errors import SERVER, GatewayError
from extproc.translate import UpstreamRequest

SIGNING_NAME = "bedrock"
_SIGNATURE_HEADERS = ("authorization", "x-amz-date", "x-amz-security-token")


class SigV4:
    """The :class:`~extproc.auth.Auth` of an ``aws_bedrock`` backend."""

    needs_body = True

    def __init__(self, backend: AWSBedrockBackend) -> None:
        self._region = backend.region
        self._profile = backend.profile
        self._credentials: Any = None
        if backend.access_key_id is not None and backend.secret_access_key is not None:
            token = backend.session_token.get_secret_value() if backend.session_token else None
            self._credentials = Credentials(
                backend.access_key_id.get_secret_value(),
                backend.secret_access_key.get_secret_value(),
                token,
            )
        self._resolving = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SigV4(region={self._region!r}, <credentials redacted>)"

    async def apply(self, request: UpstreamRequest, host: str) -> None:
        credentials = await self._frozen_credentials()
        signed = AWSRequest(
            method=request.method,
            url=f"https://{host}{request.path}",
            data=request.body or b"",
            headers={"host": host},
        )
        SigV4Auth(credentials, SIGNING_NAME, self._region).add_auth(signed)
        for name in _SIGNATURE_HEADERS:
            value = signed.headers.get(name)
            if value is not None:
                request.headers[name] = value

    async def _frozen_credentials(self) -> Any:
        """A consistent (key, secret, token) snapshot, refreshed when it is about to expire.

        Resolving the chain and refreshing may do network I/O (instance metadata, STS,
        container endpoint), so both run in a thread; a snapshot that is still fresh is taken
        inline. Taking a new snapshot for every signature picks up rotated credentials without
        a restart.
        """
        try:
            credentials = self._credentials
            if credentials is None:
                async with self._resolving:
                    if self._credentials is None:
                        self._credentials = await asyncio.to_thread(self._resolve_chain)
                    credentials = self._credentials
            refresh_needed = getattr(credentials, "refresh_needed", None)
            if refresh_needed is not None and refresh_needed():
                return await asyncio.to_thread(credentials.get_frozen_credentials)
            return credentials.get_frozen_credentials()
        except BotoCoreError as exc:
            # The class name only: botocore messages may quote profile names or file paths.
            raise GatewayError(
                503, f"AWS credentials are unavailable ({type(exc).__name__}).", SERVER
            ) from None

    def _resolve_chain(self) -> Any:
        """The standard chain: environment, profile, web identity, container, instance."""
        credentials = Session(profile=self._profile).get_credentials()
        if credentials is None:
            raise GatewayError(
                503,
                "No AWS credentials found for the Bedrock backend (environment, shared"
                " profile, web identity, container or instance role).",
                SERVER,
            )
        return credentials
