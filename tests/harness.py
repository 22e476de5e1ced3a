"""A real gateway for integration tests: ``ai-gateway run`` (Envoy + sidecar workers).

The gateway runs exactly as a user starts it, from a YAML config written to a temporary
directory, on free ports. Nothing of ours is mocked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """``with Gateway(config) as gw: gw.url`` — Envoy and the sidecar, started and stopped."""

    def __init__(
        self,
        config: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        workers: int = 2,
        ready_timeout: float = 60.0,
        log_level: str = "warning",
        envoy_log_level: str | None = None,
    ) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="gw-test-"))
        self.port = free_port()
        self.admin_port = free_port()
        cfg = dict(config)
        cfg["listen"] = {"host": "127.0.0.1", "port": self.port}
        cfg["admin"] = {"host": "127.0.0.1", "port": self.admin_port}
        cfg.setdefault("sidecar", {})
        cfg["sidecar"] = {**cfg["sidecar"], "workers": workers}
        self.config_path = self._dir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self._env = {**os.environ, **(env or {})}
        self._ready_timeout = ready_timeout
        self._log_args = ["--log-level", log_level]
        self._run_args = ["--envoy-log-level", envoy_log_level] if envoy_log_level else []
        self._proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._ready = threading.Event()
        self.accounting = str(cfg.get("accounting", {}).get("mode", "sidecar"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.output.append(line)
            if line.startswith("AI gateway ready"):
                self._ready.set()

    def __enter__(self) -> Self:
        argv = [
            sys.executable, "-m", "extproc", *self._log_args, "run",
            "-c", str(self.config_path), "--state-dir", str(self._dir / "state"),
            *self._run_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            argv,
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + self._ready_timeout
        while not self._ready.wait(0.1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("gateway did not start:\n" + "".join(self.output[-50:]))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()

    def access_log(self) -> list[dict[str, Any]]:
        """Envoy's JSON access log lines seen so far."""
        import orjson

        out = []
        for line in list(self.output):
            if line.startswith("{"):
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return out
