"""Gateway API keys: hashing, authentication (401), allow-lists (403), constant-time compare."""

from __future__ import annotations

import hmac
import logging

import orjson
import pytest
from pydantic import ValidationError

from extproc.clients import (
    ClientKey,
    Clients,
    allowed_models,
    authorize,
    client_errors,
    hash_key,
)
from extproc.errors import GatewayError

KEY_A = "sk-gw-team-a-0123456789abcdef"
KEY_B = "sk-gw-team-b-fedcba9876543210"
TEAM_A = ClientKey(name="team-a", key_sha256=hash_key(KEY_A), models=["gpt-4o-mini", "claude"])
TEAM_B = ClientKey(name="team-b", key_sha256=hash_key(KEY_B))
CLIENTS = Clients([TEAM_A, TEAM_B])


def _refusal(headers: dict[str, str]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        CLIENTS.authenticate(headers)
    return caught.value


def test_hash_key_is_hex_sha256() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_config_accepts_digests_only_and_normalises_case() -> None:
    assert ClientKey(name="x", key_sha256=hash_key("k").upper()).key_sha256 == hash_key("k")
    for bad in ("", "abc", KEY_A, hash_key("k") + "0", "g" * 64):
        with pytest.raises(ValidationError):
            ClientKey(name="x", key_sha256=bad)


def test_duplicate_names_and_keys_are_config_errors() -> None:
    def client(name: str, key: str) -> ClientKey:
        return ClientKey(name=name, key_sha256=hash_key(key))

    assert client_errors([client("a", "1"), client("b", "2")]) == []
    four = [client("a", "1"), client("b", "2"), client("a", "3"), client("c", "2")]
    assert client_errors(four) == [
        "clients[2].name: duplicate client 'a'",
        "clients[3].key_sha256: same key as clients[1]",
    ]


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEY_A}"},
        {"authorization": f"bearer   {KEY_A} "},
        {"api-key": KEY_A},
        {"x-api-key": KEY_A},
    ],
)
def test_each_key_header_identifies_the_client(headers: dict[str, str]) -> None:
    assert CLIENTS.authenticate(headers) is TEAM_A


def test_authorization_wins_over_the_other_headers() -> None:
    assert CLIENTS.authenticate({"authorization": f"Bearer {KEY_B}", "api-key": KEY_A}) is TEAM_B
    refused = _refusal({"authorization": "Bearer nope", "x-api-key": KEY_A})
    assert refused.message == "Incorrect API key provided."


@pytest.mark.parametrize(
    ("headers", "missing"),
    [
        ({}, True),
        ({"authorization": "Bearer "}, True),
        ({"authorization": f"Basic {KEY_A}"}, True),
        ({"api-key": ""}, True),
        ({"authorization": f"Bearer {KEY_A}x"}, False),
        ({"x-api-key": KEY_A.upper()}, False),
    ],
)
def test_missing_or_unknown_key_is_an_openai_401_that_never_echoes_the_key(
    headers: dict[str, str], missing: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    err = _refusal(headers)
    assert err.status == 401
    assert err.headers == {"www-authenticate": 'Bearer realm="ai-gateway"'}
    body = orjson.loads(err.body())["error"]
    assert body["type"] == "authentication_error"
    assert body["code"] == "invalid_api_key"
    assert ("didn't provide an API key" in body["message"]) is missing
    assert KEY_A not in err.body().decode() and KEY_A.upper() not in err.body().decode()
    # Nothing of ours logs (a library closing an earlier test's connection may, at DEBUG).
    assert [r for r in caplog.records if r.name.startswith("extproc")] == []


def test_without_clients_every_request_is_anonymous() -> None:
    anonymous = Clients([])
    assert anonymous.authenticate({}) is None
    assert anonymous.authenticate({"authorization": "Bearer anything"}) is None


def test_allow_list_is_a_403_outside_it() -> None:
    authorize(TEAM_A, "gpt-4o-mini")
    authorize(TEAM_B, "anything")  # no allow-list: every model
    authorize(None, "anything")  # anonymous (no clients configured)
    with pytest.raises(GatewayError) as caught:
        authorize(TEAM_A, "gpt-4o")
    err = caught.value
    assert err.status == 403
    assert orjson.loads(err.body())["error"] == {
        "message": "Client `team-a` is not allowed to use the model `gpt-4o`.",
        "type": "permission_error",
        "param": "model",
        "code": "model_not_allowed",
    }


def test_models_list_keeps_only_allowed_models_in_order() -> None:
    listed = ["claude", "gpt-4o", "gpt-4o-mini"]
    assert allowed_models(TEAM_A, listed) == ["claude", "gpt-4o-mini"]
    assert allowed_models(TEAM_B, listed) == listed
    assert allowed_models(None, listed) == listed
    assert allowed_models(ClientKey(name="n", key_sha256=hash_key("n"), models=[]), listed) == []


def test_the_deciding_compare_is_constant_time_over_digests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert CLIENTS.authenticate({"api-key": KEY_B}) is TEAM_B
    assert calls == [(bytes.fromhex(hash_key(KEY_B)), bytes.fromhex(hash_key(KEY_B)))]
    # The raw key is never what gets compared.
    assert all(KEY_B.encode() not in a + b for a, b in calls)
