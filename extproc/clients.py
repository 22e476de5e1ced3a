"""Gateway API keys: who is calling, and which models they may use.

The config holds only SHA-256 digests of the keys (``ai-gateway hash-key`` prints one), so it
can be committed. A presented key is hashed and looked up by digest; the final comparison is
``hmac.compare_digest``, so the answer's timing does not depend on how much of a stored digest
the presented one shares. Keys never appear in errors or logs; nothing here logs at all.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from extproc.errors import AUTHENTICATION, PERMISSION, GatewayError

# Looked up in this order; the first one present is the key, whatever the others hold.
_KEY_HEADERS = ("authorization", "api-key", "x-api-key")


def hash_key(key: str) -> str:
    """The ``key_sha256`` config value for a key: lowercase hex SHA-256 of its UTF-8 bytes."""
    return _digest(key).hex()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ClientKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    key_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    models: list[str] | None = None
    """The models this client may use; None (the default) allows every model."""

    @field_validator("key_sha256")
    @classmethod
    def _lower(cls, digest: str) -> str:
        return digest.lower()

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


def client_errors(clients: Sequence[ClientKey]) -> list[str]:
    """Config errors: two clients with one name, or sharing one key."""
    errors = []
    names: set[str] = set()
    digests: dict[str, int] = {}
    for i, client in enumerate(clients):
        if client.name in names:
            errors.append(f"clients[{i}].name: duplicate client {client.name!r}")
        if client.key_sha256 in digests:
            errors.append(
                f"clients[{i}].key_sha256: same key as clients[{digests[client.key_sha256]}]"
            )
        names.add(client.name)
        digests.setdefault(client.key_sha256, i)
    return errors


class Clients:
    """The configured gateway keys; with none configured every request is anonymous."""

    def __init__(self, clients: Sequence[ClientKey]) -> None:
        self._by_digest: dict[bytes, tuple[bytes, ClientKey]] = {}
        for client in clients:
            digest = bytes.fromhex(client.key_sha256)
            self._by_digest[digest] = (digest, client)

    def authenticate(self, headers: Mapping[str, str]) -> ClientKey | None:
        """The client presenting the request's key; None when no clients are configured.

        ``headers`` have lowercase names. Raises a 401 :class:`GatewayError` for a missing,
        malformed or unknown key.
        """
        if not self._by_digest:
            return None
        key = _presented_key(headers)
        if not key:
            raise _unauthenticated(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`"
                " (or in an `api-key` or `x-api-key` header)."
            )
        digest = _digest(key)
        found = self._by_digest.get(digest)
        # The dict compares only digests whose hashes collide; this compare is the one that
        # decides, and it takes the same time however many leading bytes agree.
        if found is None or not hmac.compare_digest(found[0], digest):
            raise _unauthenticated("Incorrect API key provided.")
        return found[1]


def authorize(client: ClientKey | None, model: str) -> None:
    """Raises a 403 :class:`GatewayError` if ``client`` may not use ``model``."""
    if client is not None and not client.allows(model):
        raise GatewayError(
            403,
            f"Client `{client.name}` is not allowed to use the model `{model}`.",
            PERMISSION,
            param="model",
            code="model_not_allowed",
        )


def allowed_models(client: ClientKey | None, models: Iterable[str]) -> list[str]:
    """``models`` (in order) that ``client`` may use: what ``/v1/models`` lists for it."""
    return [m for m in models if client is None or client.allows(m)]


def _presented_key(headers: Mapping[str, str]) -> str:
    for name in _KEY_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        if name == "authorization":
            scheme, _, value = value.strip().partition(" ")
            if scheme.lower() != "bearer":
                return ""
        return value.strip()
    return ""


def _unauthenticated(message: str) -> GatewayError:
    return GatewayError(
        401,
        message,
        AUTHENTICATION,
        code="invalid_api_key",
        headers={"www-authenticate": 'Bearer realm="ai-gateway"'},
    )
