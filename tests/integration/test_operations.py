"""Operations that do not surprise: one gateway per port, nothing left running after a gateway
is killed hard, and every attempt recorded, even one the sidecar never saw."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import OpenAI

from tests.fakes.faulty import FaultyUpstream
from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway, free_port
from tests.integration.probes import listening, metric, wait_for


def _config(fake: FakeOpenAI, model: str) -> dict[str, Any]:
    return {
        "backends": {"fake": {"schema": "openai", "url": fake.url + "/v1"}},
        "models": [{"name": model, "backends": [{"backend": "fake"}]}],
    }


def test_a_second_gateway_on_a_used_port_fails_fast_and_the_first_keeps_all_traffic(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    with Gateway(_config(fake, "first-only")) as first:
        # The second gateway knows another model: any request it took would be a 404.
        # Written on free ports (not started); then given the first one's gateway port.
        second = Gateway(_config(fake, "second-only"))
        doc = yaml.safe_load(second.config_path.read_text())
        doc["listen"]["port"] = first.port
        path = tmp_path / "second.yaml"
        path.write_text(yaml.safe_dump(doc))
        proc = subprocess.run(
            [sys.executable, "-m", "extproc", "run", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1
        assert f"127.0.0.1:{first.port} is already in use" in proc.stderr
        assert "envoy" in proc.stderr  # the holder, named: the first gateway's Envoy
        assert "AI gateway ready" not in proc.stdout

        client = OpenAI(base_url=first.url + "/v1", api_key="unused", max_retries=0)
        for _ in range(12):
            reply = client.chat.completions.create(
                model="first-only", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content == "Echo: hi"


def test_envoy_refuses_to_share_the_gateway_port(fake: FakeOpenAI) -> None:
    """Past the start-up check (a race): Envoy itself will not bind a port already bound."""
    with Gateway(_config(fake, "m")) as gw:
        envoy = Path(sys.executable).parent / "envoy"
        state = gw.config_path.parent / "state"
        argv = [str(envoy), "-c", str(state / "envoy.yaml"), "--base-id", str(free_port())]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert "Address already in use" in proc.stderr


@pytest.mark.parametrize("taken", ["metrics", "worker"])
def test_serve_on_a_used_port_fails_fast_naming_it(tmp_path: Path, taken: str) -> None:
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sidecar": {
                    "workers": 2,
                    "port": port,
                    "metrics_port": metrics_port,
                    "allow_plaintext": True,
                }
            }
        )
    )
    held_port = metrics_port if taken == "metrics" else port + 1
    with socket.socket() as held:
        held.bind(("127.0.0.1", held_port))
        held.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "extproc", "serve", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert f"127.0.0.1:{held_port} is already in use by pid {os.getpid()}" in proc.stderr


def _start(config: Path, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "extproc", "run", "-c", str(config), "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("AI gateway ready"):
            return lines
    raise AssertionError("gateway did not start:\n" + "".join(lines))


def test_a_hard_killed_gateway_leaves_no_envoy_and_its_state_is_recognised(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    gw = Gateway(_config(fake, "m"))  # only for its config file on free ports
    state = tmp_path / "state"
    proc = _start(gw.config_path, state)
    try:
        _wait_ready(proc)
        assert listening(gw.port)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while listening(gw.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not listening(gw.port), "an Envoy outlived its killed gateway"
        assert not listening(gw.admin_port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    again = _start(gw.config_path, state)
    try:
        lines = _wait_ready(again)
        assert any("did not stop cleanly" in line for line in lines), "".join(lines)
        # While it runs, its state directory is its own.
        taken = subprocess.run(
            [sys.executable, "-m", "extproc", "run", "-c", str(gw.config_path),
             "--state-dir", str(state)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert taken.returncode == 1
        assert f"in use by ai-gateway run (pid {again.pid})" in taken.stderr
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0
    assert not (state / "run.pid").exists()


# --- every attempt recorded -------------------------------------------------------------------


@pytest.fixture(scope="module")
def failing() -> Iterator[Gateway]:
    """A model per way an attempt can fail before any answer, each backed by a healthy one."""
    with (
        FakeOpenAI() as good,
        FaultyUpstream("stall") as stall,
        FaultyUpstream("garbage") as garbage,
    ):
        backends = {
            "good": {"schema": "openai", "url": f"{good.url}/v1"},
            "dead": {"schema": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"},
            "stall": {"schema": "openai", "url": f"{stall.url}/v1"},
            "garbage": {"schema": "openai", "url": f"{garbage.url}/v1"},
        }

        def tiers(first: str, **extra: Any) -> dict[str, Any]:
            return {"backends": [{"backend": first}, {"backend": "good", "priority": 1}], **extra}

        config = {
            "http": {"expose_backend": True},
            "backends": backends,
            "models": [
                {"name": "refused", **tiers("dead")},
                {"name": "stalled", **tiers("stall", retry={"per_try_timeout": "300ms"})},
                {"name": "garbled", **tiers("garbage")},
            ],
        }
        with Gateway(config) as gw:
            yield gw


@pytest.mark.parametrize(
    ("model", "backend", "error"),
    [
        ("refused", "dead", "connect_failure"),  # never reaches the sidecar
        ("stalled", "stall", "timeout"),  # seen by the sidecar, ended by Envoy
        ("garbled", "garbage", "reset"),  # not HTTP: a protocol error
    ],
)
def test_an_attempt_that_got_no_answer_is_recorded_with_its_backend_and_error(
    failing: Gateway, model: str, backend: str, error: str
) -> None:
    client = OpenAI(base_url=failing.url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content == "Echo: hi"
    assert (raw.headers["x-ai-eg-backend"], raw.headers["x-ai-eg-attempts"]) == ("good", "2")

    def recorded(**labels: str) -> float:
        return metric(
            failing,
            "ai_gateway_requests_total",
            gen_ai_request_model=model,
            ai_gateway_backend=backend,
            **labels,
        )

    wait_for(lambda: recorded(error_type=error) == 1, timeout=10, what=f"a {error} record")
    time.sleep(1.0)  # a second record, if any, would come from the other log by now
    assert recorded() == 1  # once: not also by the upstream stage
    assert metric(failing, "ai_gateway_requests_total", gen_ai_request_model=model) == 2

    lines = [e for e in failing.access_log() if e.get("attempt_failed") and e["model"] == model]
    assert len(lines) == 1, lines
    assert (lines[0]["attempt_failed"], lines[0]["backend"], lines[0]["attempt"]) == (
        error,
        backend,
        "1",
    )
    assert lines[0]["flags"] != "-"
