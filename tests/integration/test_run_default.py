"""`make run` on a fresh machine: no config file, the provider (if any) from the environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import openai
import pytest

from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import RecordedRequest
from tests.integration.probes import listening

URL = "http://127.0.0.1:1975/v1"


@contextmanager
def default_gateway(provider: Mapping[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``ai-gateway run`` without ``-c``; yields the process and its output up to "ready"."""
    if listening(1975) or listening(1064):
        pytest.skip("default ports are in use on this machine")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_", "AWS_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "extproc", "run"],
        env={**env, **provider}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("AI gateway ready") or not line:
                break
        assert lines[-1].startswith("AI gateway ready"), "".join(lines)
        yield proc, "".join(lines)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def test_run_without_config_answers_models() -> None:
    with default_gateway({}) as (proc, _):
        assert proc.stdout is not None
        with urllib.request.urlopen(f"{URL}/models", timeout=10) as reply:
            assert reply.status == 200
            assert json.loads(reply.read()) == {"object": "list", "data": []}
        hint = proc.stdout.readline()
        assert "No provider is configured" in hint
        client = openai.OpenAI(base_url=URL, api_key="unused")
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert "No provider is configured; set OPENAI_API_KEY or pass -c" in str(caught.value)
        assert caught.value.code == "no_provider_configured"


def _reads(fake: FakeOpenAI) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.path == "/v1/models"]


def test_run_lists_the_models_of_the_catch_all_backend() -> None:
    with FakeOpenAI(api_key="sk-upstream", models=["gpt-4o-mini", "fake-large"]) as fake:
        provider = {"OPENAI_BASE_URL": fake.url + "/v1", "OPENAI_API_KEY": "sk-upstream"}
        with default_gateway(provider) as (proc, banner):
            assert proc.stdout is not None
            assert proc.stdout.readline() == "Upstreams:\n"
            assert f"openai: {fake.url}/v1  (any model name)" in proc.stdout.readline()
            client = openai.OpenAI(base_url=URL, api_key="unused")
            # Read by each worker (one per core here) as it starts, beside "ready".
            workers = os.cpu_count() or 1
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(_reads(fake)) < workers:
                time.sleep(0.05)
            time.sleep(0.2)
            for _ in range(2 * workers):
                listed = sorted(m.id for m in client.models.list())
                assert listed == ["fake-large", "gpt-4o-mini"]
            model = client.models.retrieve("fake-large")
            assert (model.id, model.owned_by, model.created) == (
                "fake-large",
                "fake-org",
                1735689600,
            )
            with pytest.raises(openai.NotFoundError):
                client.models.retrieve("not-listed")
            # The upstream read carried the provider's key; nothing of it reached the client.
            reads = _reads(fake)
            assert reads and all(r.headers["authorization"] == "Bearer sk-upstream" for r in reads)
            raw = client.models.with_raw_response.list()
            assert "sk-upstream" not in raw.text + str(raw.headers)
            assert "sk-upstream" not in banner
            reply = client.chat.completions.create(
                model="fake-large", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content == "Echo: hi"
