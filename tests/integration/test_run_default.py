"""`make run` on a fresh machine: no config file, no provider in the environment."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def _busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_run_without_config_answers_models() -> None:
    if _busy(1975) or _busy(1064):
        pytest.skip("default ports are in use on this machine")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_", "AWS_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "extproc", "run"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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
        with urllib.request.urlopen("http://127.0.0.1:1975/v1/models", timeout=10) as reply:
            assert reply.status == 200
            assert json.loads(reply.read()) == {"object": "list", "data": []}
        hint = proc.stdout.readline()
        assert "No provider is configured" in hint
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
