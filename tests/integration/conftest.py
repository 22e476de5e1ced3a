"""Fixtures shared by the integration tests; a module that needs other settings defines its
own fixture of the same name, which pytest uses instead.

``client`` is the official SDK on the module's ``gateway`` fixture. ``accounting`` runs a
module that asks for it (directly or through ``otlp``) once per accounting mode, with a fresh
OTLP receiver each time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.fakes.bedrock import FakeBedrock
from tests.fakes.openai import FakeOpenAI
from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock() as server:
        yield server


@pytest.fixture(scope="module", params=["sidecar", "envoy"])
def accounting(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def otlp(accounting: str) -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="c", max_retries=0)
