"""Azure OpenAI credentials: a static ``api-key`` or an Entra ID (client-credentials) token.

The token is fetched once and shared by every request until shortly before it expires:

- it is *refreshed early*, :func:`refresh_margin` before ``expires_in`` runs out, in the
  background: requests keep using the still-valid token meanwhile, so no request waits;
- only when there is no valid token do requests wait, and then all concurrent requests wait
  for one single fetch (a shared task), whatever its outcome;
- a failed background refresh is retried at most every :data:`RETRY_AFTER` seconds while the
  old token lasts.

Failures are answered with **502** (``type: upstream_error``, ``code: backend_auth_failed``),
including the token endpoint's ``invalid_client``: the client's own credentials are fine, it
is the gateway's backend credential that is broken, and a 5xx, unlike a 401, is what the
route's retry policy (``retry_on: 5xx``) may answer by trying another backend. The client sees
only the OAuth error code; the endpoint's description goes to the log. Neither ever contains
the client secret.

The HTTP call uses the standard library in a worker thread: a token fetch happens about once
an hour, which does not justify an async HTTP client dependency.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

import orjson

from extproc.auth import Auth, StaticHeader
from extproc.config import AzureOpenAIBackend, EntraID
from extproc.errors import UPSTREAM, GatewayError
from extproc.translate import UpstreamRequest

log = logging.getLogger(__name__)

RETRY_AFTER = 10.0  # seconds between background refresh attempts after one failed
DEFAULT_LIFETIME = 300.0  # when a token endpoint omits expires_in (RFC 6749 allows it)


def refresh_margin(lifetime: float) -> float:
    """How long before expiry to refresh: 10% of the lifetime, at most 5 minutes."""
    return min(300.0, lifetime * 0.1)


def _failure(reason: str) -> GatewayError:
    return GatewayError(
        502,
        f"Could not get an Entra ID token for the Azure OpenAI backend: {reason}.",
        UPSTREAM,
        code="backend_auth_failed",
    )


class EntraIDAuth:
    """``Authorization: Bearer <token>`` from the client-credentials flow, cached.

    Create one per backend and keep it, and use it from one event loop: the cache and the
    in-flight fetch live in the instance.
    """

    needs_body = False

    def __init__(
        self,
        config: EntraID,
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.client_secret is None:
            raise ValueError("entra needs a client secret")
        authority = config.authority.rstrip("/")
        if urlsplit(authority).scheme not in ("http", "https"):
            raise ValueError(f"entra authority must be an http(s) URL, got {authority!r}")
        self.token_url = f"{authority}/{config.tenant_id}/oauth2/v2.0/token"
        self._secret = config.client_secret.get_secret_value()
        self._form = urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": config.client_id,
                "client_secret": self._secret,
                "scope": config.scope,
            }
        ).encode()
        self._timeout = timeout
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._refresh_at = 0.0
        self._fetch: asyncio.Task[str] | None = None

    def __repr__(self) -> str:
        return f"EntraIDAuth({self.token_url!r}, <redacted>)"

    async def apply(self, request: UpstreamRequest, host: str) -> None:
        request.headers["authorization"] = f"Bearer {await self.token()}"

    async def token(self) -> str:
        now = self._clock()
        if self._token is not None and now < self._expires_at:
            if now >= self._refresh_at:
                self._start_fetch()
            return self._token
        # shield: a waiter cancelled (client gone) must not cancel the fetch others wait on.
        return await asyncio.shield(self._start_fetch())

    def _start_fetch(self) -> asyncio.Task[str]:
        if self._fetch is None:
            self._fetch = asyncio.get_running_loop().create_task(self._fetch_token())
            self._fetch.add_done_callback(self._fetch_done)
        return self._fetch

    def _fetch_done(self, task: asyncio.Task[str]) -> None:
        self._fetch = None
        # Retrieving the exception also keeps a failed background refresh from being reported
        # as "never retrieved"; _post or _parse logged it already.
        if not task.cancelled() and task.exception() is not None and self._token is not None:
            self._refresh_at = min(self._expires_at, self._clock() + RETRY_AFTER)

    async def _fetch_token(self) -> str:
        started = self._clock()  # the lifetime counts from before the request: conservative
        status, body = await asyncio.to_thread(self._post)
        token, lifetime = self._parse(status, body)
        self._token = token
        self._expires_at = started + lifetime
        self._refresh_at = self._expires_at - refresh_margin(lifetime)
        return token

    def _post(self) -> tuple[int, bytes]:
        request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
            self.token_url,
            data=self._form,
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "accept": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # URLError, timeouts, TLS, connection and protocol errors: none carries the form.
            reason = getattr(exc, "reason", exc)
            log.warning("Entra ID token endpoint %s unreachable: %s", self.token_url, reason)
            raise _failure("the token endpoint is unreachable") from None

    def _parse(self, status: int, body: bytes) -> tuple[str, float]:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            log.warning("Entra ID token endpoint %s answered %d, not JSON", self.token_url, status)
            raise _failure(f"the token endpoint answered {status} without a JSON body")
        token, expires_in = doc.get("access_token"), doc.get("expires_in", DEFAULT_LIFETIME)
        if status == 200 and isinstance(token, str) and token:
            try:
                return token, max(float(expires_in), 0.0)
            except (TypeError, ValueError):
                pass
        error = doc.get("error")
        error = error if isinstance(error, str) and error else "invalid response"
        description = str(doc.get("error_description") or "").replace(self._secret, "<redacted>")
        log.warning(
            "Entra ID token endpoint %s answered %d %s: %s",
            self.token_url,
            status,
            error,
            description,
        )
        code = error.replace(self._secret, "<redacted>")[:64]
        raise _failure(f"the token endpoint answered {status} ({code})")


def backend_auth(backend: AzureOpenAIBackend) -> Auth:
    """The credential of an Azure OpenAI backend. Call once per backend: it holds the cache."""
    if backend.entra is not None:
        return EntraIDAuth(backend.entra)
    if backend.api_key is None:
        raise ValueError("azure_openai backend has neither api_key nor entra")
    return StaticHeader("api-key", backend.api_key.get_secret_value())
