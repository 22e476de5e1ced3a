"""Entra ID client-credentials auth against the fake token endpoint."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator

import orjson
import pytest
from pydantic import SecretStr

from extproc.auth.entra import RETRY_AFTER, EntraIDAuth, refresh_margin
from extproc.config import EntraID
from extproc.errors import GatewayError
from extproc.translate import UpstreamRequest
from tests.fakes.azure import BAD_BEARER, FakeAzure
from tests.fakes.server import http_post

TTL = 1000  # seconds; refresh_margin(TTL) == 100
SECRET = "test-client-secret"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    with FakeAzure(token_ttl=TTL, client_secret=SECRET) as fake:
        yield fake


def entra(
    fake: FakeAzure, clock: Callable[[], float] = time.monotonic, secret: str = SECRET
) -> EntraIDAuth:
    config = EntraID(
        tenant_id=fake.tenant_id,
        client_id=fake.client_id,
        client_secret=SecretStr(secret),
        authority=fake.authority,
    )
    return EntraIDAuth(config, clock=clock, timeout=5.0)


async def header(auth: EntraIDAuth) -> str:
    request = UpstreamRequest(path="/openai/v1/chat/completions")
    await auth.apply(request, "res.openai.azure.com")
    return request.headers["authorization"]


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def chat_status(fake: FakeAzure, authorization: str) -> tuple[int, bytes]:
    return http_post(
        fake.url + "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        b'{"messages":[{"role":"user","content":"hi"}]}',
        {"authorization": authorization, "content-type": "application/json"},
    )


def test_refresh_margin() -> None:
    assert refresh_margin(3600) == 300  # 5 minutes for the usual hour-long token
    assert refresh_margin(60) == 6  # 10% for short ones


def test_token_is_fetched_once_and_accepted(azure: FakeAzure) -> None:
    auth = entra(azure)

    async def run() -> list[str]:
        return [await header(auth) for _ in range(3)]

    headers = asyncio.run(run())
    assert azure.token_fetches == 1
    assert len(set(headers)) == 1
    form = azure.requests[0].form()
    assert azure.requests[0].path == "/test-tenant/oauth2/v2.0/token"
    assert form == {
        "grant_type": "client_credentials",
        "client_id": "test-client",
        "client_secret": SECRET,
        "scope": "https://cognitiveservices.azure.com/.default",
    }
    assert chat_status(azure, headers[0])[0] == 200


def test_refreshed_in_background_before_expiry(azure: FakeAzure) -> None:
    clock = Clock()
    auth = entra(azure, clock)

    async def run() -> None:
        first = await header(auth)
        clock.now = TTL - refresh_margin(TTL) - 1
        assert await header(auth) == first
        assert azure.token_fetches == 1

        clock.now = TTL - refresh_margin(TTL) + 1  # in the refresh window, still valid
        assert await header(auth) == first  # nobody waits for the refresh
        await eventually(lambda: azure.token_fetches == 2)

        async def changed() -> bool:
            return await header(auth) != first

        await eventually(changed)
        assert azure.token_fetches == 2

    asyncio.run(run())


def test_expired_token_is_replaced_before_use(azure: FakeAzure) -> None:
    clock = Clock()
    auth = entra(azure, clock)

    async def run() -> tuple[str, str]:
        first = await header(auth)
        clock.now = TTL + 1
        return first, await header(auth)

    first, second = asyncio.run(run())
    assert first != second
    assert azure.token_fetches == 2
    azure.expire_tokens()  # Azure now refuses both, as it does expired tokens
    status, body = chat_status(azure, first)
    assert (status, orjson.loads(body)) == (401, BAD_BEARER)


def test_concurrent_requests_share_one_fetch(azure: FakeAzure) -> None:
    auth = entra(azure)

    async def run() -> list[str]:
        return await asyncio.gather(*(header(auth) for _ in range(50)))

    headers = asyncio.run(run())
    assert azure.token_fetches == 1
    assert len(set(headers)) == 1


def test_concurrent_requests_share_one_failure(azure: FakeAzure) -> None:
    auth = entra(azure, secret="wrong-secret-value")

    async def run() -> list[str | BaseException]:
        return await asyncio.gather(*(header(auth) for _ in range(50)), return_exceptions=True)

    results = asyncio.run(run())
    assert azure.token_fetches == 1
    assert all(isinstance(r, GatewayError) for r in results)


def test_invalid_client_is_a_502_without_the_secret(
    azure: FakeAzure, caplog: pytest.LogCaptureFixture
) -> None:
    auth = entra(azure, secret="wrong-secret-value")
    with caplog.at_level(logging.WARNING), pytest.raises(GatewayError) as caught:
        asyncio.run(header(auth))
    error = caught.value
    assert error.status == 502
    assert error.code == "backend_auth_failed"
    assert "invalid_client" in error.message
    assert "AADSTS7000215" in caplog.text  # the operator gets the endpoint's description
    for text in (error.message, error.body().decode(), caplog.text, repr(auth)):
        assert "wrong-secret-value" not in text


def test_unreachable_endpoint_is_a_502() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = EntraID(
        tenant_id="t",
        client_id="c",
        client_secret=SecretStr("unreachable-secret"),
        authority=f"http://127.0.0.1:{port}",
    )
    with pytest.raises(GatewayError) as caught:
        asyncio.run(header(EntraIDAuth(config, timeout=2.0)))
    assert caught.value.status == 502
    assert "unreachable" in caught.value.message
    assert "unreachable-secret" not in caught.value.message


def test_failed_fetch_is_not_cached(azure: FakeAzure) -> None:
    azure.fail_next(503, path=azure.token_path)
    auth = entra(azure)

    async def run() -> str:
        with pytest.raises(GatewayError) as caught:
            await header(auth)
        assert "503" in caught.value.message
        return await header(auth)

    assert asyncio.run(run()).startswith("Bearer ")
    assert azure.token_fetches == 2


def test_failed_background_refresh_keeps_the_valid_token(azure: FakeAzure) -> None:
    clock = Clock()
    auth = entra(azure, clock)

    async def run() -> None:
        first = await header(auth)
        azure.fail_next(500, path=azure.token_path)
        clock.now = TTL - refresh_margin(TTL) + 1
        assert await header(auth) == first
        await eventually(lambda: azure.token_fetches == 2)
        await asyncio.sleep(0.05)  # let the failed refresh settle
        assert await header(auth) == first  # no new attempt before RETRY_AFTER
        assert azure.token_fetches == 2

        clock.now += RETRY_AFTER + 1
        await header(auth)
        await eventually(lambda: azure.token_fetches == 3)

        async def changed() -> bool:
            return await header(auth) != first

        await eventually(changed)

    asyncio.run(run())
