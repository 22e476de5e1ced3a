"""Processes the bench starts itself (Envoys, the paced upstream), and Envoy's admin.

Every process is started in its own session, so a Ctrl-C in the terminal reaches the bench
first and the bench stops its children in order (the ``with`` blocks), instead of each child
dying on its own in the middle of a measurement.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from extproc.supervisor import envoy_binary


class BenchError(Exception):
    """A setup or run problem that makes the numbers meaningless: the bench stops."""


def admin_get(admin_url: str, path: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(f"{admin_url}{path}", timeout=timeout) as resp:  # noqa: S310
        body: bytes = resp.read()
        return body


def server_info(admin_url: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(admin_get(admin_url, "/server_info"))
    return info


def counters(admin_url: str, pattern: str) -> dict[str, int]:
    """Envoy counters whose name matches the regex ``pattern`` (read live, no flush delay)."""
    query = urllib.parse.urlencode({"filter": pattern, "type": "Counters"})
    out: dict[str, int] = {}
    for line in admin_get(admin_url, f"/stats?{query}").decode().splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().isdigit():
            out[name] = int(value)
    return out


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


class ManagedProcess:
    """``with ManagedProcess(...) as p:`` a child process, ready, stopped on exit.

    Its output is read by a thread and thrown away but for the last lines (shown if it fails).
    For bare Envoy that output is its access log: the gateway harness reads the gateway's the
    same way, so both systems pay the same for logging.
    """

    def __init__(self, name: str, argv: list[str], ready: Callable[[], bool]) -> None:
        self.name = name
        self._argv = argv
        self._ready = ready
        self._proc: subprocess.Popen[str] | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=30)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.tail.append(line)

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(
            self._argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        threading.Thread(target=self._drain, args=(self._proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + 30
        while not self._ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"{self.name} did not start:\n" + "".join(self.tail))
            time.sleep(0.1)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class EnvoyProcess(ManagedProcess):
    """An Envoy on loopback with its admin on ``admin_port``; ready when admin says LIVE."""

    def __init__(
        self, name: str, bootstrap: dict[str, Any], workdir: Path, admin_port: int, concurrency: int
    ) -> None:
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        # JSON, not YAML: Envoy's YAML parser folded the multi-line scalar PyYAML wrote for the
        # SSE body differently (a newline was lost); JSON strings are unambiguous.
        config = workdir / f"{name}.json"
        config.write_text(json.dumps(bootstrap, indent=1))
        argv = [
            envoy_binary(),
            "-c",
            str(config),
            "--concurrency",
            str(concurrency),
            "--log-level",
            "warning",
            # Several Envoys run at once: no shared-memory segment to collide on.
            "--disable-hot-restart",
        ]
        super().__init__(f"{name} Envoy", argv, self._is_ready)

    def _is_ready(self) -> bool:
        try:
            return admin_get(self.admin_url, "/ready", timeout=1.0).strip() == b"LIVE"
        except OSError:
            return False
