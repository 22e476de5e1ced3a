"""The model list ``GET /v1/models`` answers: the configured models, plus, for a catch-all
route (model ``"*"``), the models its OpenAI-compatible backends list themselves.

Each worker process reads the backends' own ``GET {url}/models`` when it starts and again every
``refresh_models`` (the catch-all route's setting), through the fan-out client: with the
backend's credential, TLS settings and static headers, straight to the backend (not through
Envoy, whose routes serve client requests only). The credential is on that call only: a listed
model carries its id, ``created`` and ``owned_by``, nothing else the backend sent. A failed
read keeps the last good list and is logged once, until a read succeeds again.

Per worker, not once in the supervisor: every worker answers ``/v1/models`` itself, so the
list is where it is served, ``ai-gateway serve`` (no supervisor of Envoy) works the same, and
the cost is one small GET per worker per interval. Between two workers' refreshes their lists
may differ for a moment.

Azure OpenAI and Bedrock backends are not read (their model lists are other APIs, and name
deployments or model ids that are not what a client sends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from extproc.backends import BackendRuntime, build_backends
from extproc.config import WILDCARD_MODEL, GatewayConfig, ModelRoute
from extproc.errors import GatewayError
from extproc.fanout import FanOutClient
from extproc.translate import UpstreamRequest
from extproc.translate.openai import join_path

log = logging.getLogger("extproc.catalog")

Item = dict[str, Any]


def configured_items(config: GatewayConfig) -> dict[str, Item]:
    return {
        m.name: {"id": m.name, "object": "model", "created": m.created, "owned_by": m.owned_by}
        for m in config.models
        if m.name != WILDCARD_MODEL
    }


def parse_listing(body: bytes) -> list[Item]:
    """The models of an OpenAI ``GET /v1/models`` answer, only the fields a listing has.

    Raises ValueError for an answer that is not such a list.
    """
    doc = orjson.loads(body)
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise ValueError("not a model list (no 'data' array)")
    items = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            continue
        created = entry.get("created")
        owned_by = entry.get("owned_by")
        items.append(
            {
                "id": entry["id"],
                "object": "model",
                "created": created if isinstance(created, int) else 0,
                "owned_by": owned_by if isinstance(owned_by, str) else "system",
            }
        )
    return items


def merge(configured: Mapping[str, Item], discovered: Mapping[str, list[Item]]) -> dict[str, Item]:
    """Configured models first, then each backend's in fallback order; a configured model
    keeps its own entry, and the first backend listing an id names it."""
    out = dict(configured)
    for items in discovered.values():
        for item in items:
            out.setdefault(item["id"], item)
    return out


class Catalog:
    """The models of one worker; :meth:`run` keeps the catch-all backends' part fresh."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._configured = configured_items(config)
        wildcard = config.model(WILDCARD_MODEL)
        self._route: ModelRoute | None = wildcard
        entries = sorted(wildcard.backends, key=lambda e: e.priority) if wildcard else []
        self._sources = [e.backend for e in entries if config.backends[e.backend].lists_models]
        self._discovered: dict[str, list[Item]] = {}
        self._failing: set[str] = set()  # backends whose last read failed (logged once)
        self.items: dict[str, Item] = dict(self._configured)
        self.version = 0  # bumped whenever ``items`` changes

    async def run(self) -> None:
        """Read the backends' lists now and every ``refresh_models`` until cancelled."""
        if not self._sources or self._route is None:
            return
        backends = build_backends(self._config)
        client = FanOutClient(self._config)
        interval = self._route.refresh_models
        try:
            while True:
                await self.refresh(client, backends)
                if not interval:
                    return
                await asyncio.sleep(interval)
        finally:
            await client.close()

    async def refresh(self, client: FanOutClient, backends: Mapping[str, BackendRuntime]) -> None:
        for name in self._sources:
            settings = self._config.backends[name]
            # As a client request to /v1/models would be sent: the url's prefix, its query.
            path = join_path(settings.endpoint()[3], "/v1/models", settings.query)
            try:
                replies = await client.send(
                    backends[name], [UpstreamRequest(path, method="GET")], {}
                )
                reply = replies[0]
                if reply.status != 200:
                    raise ValueError(f"HTTP {reply.status}")
                listed = parse_listing(reply.body)
            except (GatewayError, ValueError) as exc:
                # The reason only: the backend's own body may echo what it was sent.
                reason = exc.message if isinstance(exc, GatewayError) else str(exc)
                if name not in self._failing:
                    log.warning(
                        "could not read the models of backend %r (%s); keeping the last list",
                        name,
                        reason,
                    )
                self._failing.add(name)
                continue
            if name in self._failing:
                log.info("read the models of backend %r again", name)
                self._failing.discard(name)
            self._discovered[name] = listed
        items = merge(self._configured, {n: self._discovered.get(n, []) for n in self._sources})
        if items != self.items:
            self.items = items
            self.version += 1
