"""Processes the bench starts itself (Envoys, the paced upstream), and Envoy's admin.

Every process is started in its own session, so a Ctrl-C in the terminal reaches the bench
first and the bench stops its children in order (the ``with`` blocks), instead of each child
dying on its own in the middle of a measurement.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from extproc.supervisor import envoy_binary


class BenchError(Exception):
    """A setup or run problem that makes the numbers meaningless: the bench stops."""


class SystemDied(BenchError):
    """The system under test stopped answering in the middle of a measurement."""


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

    def __init__(
        self,
        name: str,
        argv: list[str],
        ready: Callable[[], bool],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self._argv = argv
        self._ready = ready
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._start_timeout = start_timeout
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
            errors="replace",
            start_new_session=True,
            env=self._env,
            cwd=self._cwd,
        )
        assert self._proc.stdout is not None
        threading.Thread(target=self._drain, args=(self._proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + self._start_timeout
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

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        # The workers a server started (LiteLLM's uvicorn workers) must not outlive it.
        others = [p for p in descendants(proc.pid) if p != proc.pid]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in others:
            # Still in the session this class started: ours, whatever became of its parent.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getsid(pid) == proc.pid:
                    os.kill(pid, signal.SIGKILL)


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


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (a server and the workers it forked or spawned)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def _listening(path: str, port: int) -> list[str]:
    # /proc/net/tcp{,6}: "sl local_address rem_address st ...", addresses as hex IP:port;
    # state 0A is LISTEN.
    found: list[str] = []
    try:
        lines = Path(path).read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        address, _, hex_port = fields[1].partition(":")
        if fields[3] == "0A" and int(hex_port, 16) == port:
            found.append(address)
    return found


_LOOPBACK4 = "0100007F"  # 127.0.0.1, little-endian hex
_LOOPBACK6 = "00000000000000000000000001000000"  # ::1


def listens_on_loopback_only(port: int) -> bool:
    """True if every listening socket on ``port`` is bound to 127.0.0.1 or ::1."""
    v4 = _listening("/proc/net/tcp", port)
    v6 = _listening("/proc/net/tcp6", port)
    return bool(v4 or v6) and all(a == _LOOPBACK4 for a in v4) and all(a == _LOOPBACK6 for a in v6)
