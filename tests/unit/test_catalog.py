"""The model list: configured models merged with what the catch-all backends list."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from extproc.backends import build_backends
from extproc.catalog import Catalog, merge, parse_listing
from extproc.config import parse_config
from extproc.fanout import FanOutClient
from tests.fakes.openai import FakeOpenAI


def test_parse_listing_keeps_only_the_fields_of_a_listing() -> None:
    body = orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": "a", "object": "model", "created": 5, "owned_by": "org", "secret": "x"},
                {"id": "b"},
                {"id": ""},
                "junk",
            ],
        }
    )
    assert parse_listing(body) == [
        {"id": "a", "object": "model", "created": 5, "owned_by": "org"},
        {"id": "b", "object": "model", "created": 0, "owned_by": "system"},
    ]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"data": {}}'])
def test_parse_listing_rejects_what_is_not_a_list(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_listing(body)


def test_merge_keeps_configured_entries_and_the_first_backend_naming_an_id() -> None:
    configured = {"a": {"id": "a", "owned_by": "config"}}
    discovered = {
        "first": [{"id": "a", "owned_by": "first"}, {"id": "b", "owned_by": "first"}],
        "second": [{"id": "b", "owned_by": "second"}, {"id": "c", "owned_by": "second"}],
    }
    merged = merge(configured, discovered)
    assert list(merged) == ["a", "b", "c"]
    assert [m["owned_by"] for m in merged.values()] == ["config", "first", "second"]


def test_a_failing_read_keeps_the_last_list_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with FakeOpenAI(api_key="sk-up", models=["x", "y"]) as fake:
        config = parse_config(
            {
                "backends": {
                    "up": {"schema": "openai", "url": fake.url + "/v1", "api_key": "${KEY}"}
                },
                "models": [
                    {"name": "pinned", "backends": [{"backend": "up"}]},
                    {"name": "*", "backends": [{"backend": "up"}]},
                ],
            },
            {"KEY": "sk-up"},
        )
        catalog = Catalog(config)
        assert list(catalog.items) == ["pinned"]

        async def scenario() -> None:
            client = FanOutClient(config)
            backends = build_backends(config)
            try:
                await catalog.refresh(client, backends)
                assert list(catalog.items) == ["pinned", "x", "y"]
                version = catalog.version
                fake.fail_next(500, count=2)
                with caplog.at_level(logging.WARNING, logger="extproc.catalog"):
                    await catalog.refresh(client, backends)
                    await catalog.refresh(client, backends)
                assert list(catalog.items) == ["pinned", "x", "y"]
                assert catalog.version == version
                fake.models = ["z"]
                await catalog.refresh(client, backends)
                assert list(catalog.items) == ["pinned", "z"]
            finally:
                await client.close()

        asyncio.run(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "HTTP 500" in warnings[0].getMessage()
    assert "sk-up" not in caplog.text
