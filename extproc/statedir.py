"""The pid file of an ``ai-gateway run`` state directory: one gateway per directory, and what a
gateway that was killed hard left behind.

``run.pid`` lists the supervisor's pid and its Envoy's. It is removed on a clean stop, so one
found at start-up belongs to a gateway that is still running, or to one that was killed
(``kill -9``, a crash, a power cut): its Envoy should have died with it (see
``supervisor._die_with``), and is checked for all the same.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("extproc.statedir")

PID_FILE = "run.pid"
TEMP_PREFIX = "ai-gateway-"  # the default state directories, made under the temp directory


class StateInUse(Exception):
    """The state directory belongs to a gateway, or an Envoy, that is still running."""


def _alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs and its command line holds ``marker`` (the pid was not reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (not Linux): the pid alone
        except OSError:
            return False
        return True
    return marker.encode() in cmdline


def _read(state: Path) -> dict[str, int]:
    try:
        text = (state / PID_FILE).read_text()
    except OSError:
        return {}
    pids = {}
    for line in text.splitlines():
        name, _, pid = line.partition(" ")
        if pid.strip().isdigit():
            pids[name] = int(pid)
    return pids


def _running(state: Path) -> tuple[int | None, int | None]:
    """The pids of the directory's supervisor and Envoy that are still running."""
    pids = _read(state)
    run, envoy = pids.get("run"), pids.get("envoy")
    run_alive = run if run is not None and run != os.getpid() and _alive(run, "extproc") else None
    envoy_yaml = str(state / "envoy.yaml")
    envoy_alive = envoy if envoy is not None and _alive(envoy, envoy_yaml) else None
    return run_alive, envoy_alive


def claim(state: Path) -> None:
    """Make ``state`` this gateway's, or raise :class:`StateInUse` naming who holds it."""
    run, envoy = _running(state)
    if run is not None:
        raise StateInUse(f"state directory {state} is in use by ai-gateway run (pid {run})")
    if envoy is not None:
        raise StateInUse(
            f"an Envoy (pid {envoy}) of a gateway that did not stop cleanly still runs from"
            f" {state}; stop it (kill {envoy}) and start again"
        )
    if _read(state):
        log.warning("state directory %s was left by a gateway that did not stop cleanly", state)
    write(state, {})


def write(state: Path, children: dict[str, int]) -> None:
    lines = [f"run {os.getpid()}", *(f"{name} {pid}" for name, pid in children.items())]
    (state / PID_FILE).write_text("\n".join(lines) + "\n")


def release(state: Path) -> None:
    (state / PID_FILE).unlink(missing_ok=True)


def sweep_temp(keep: Path) -> None:
    """Remove default state directories left by gateways that were killed; warn about any
    Envoy of theirs still running (the port check then names it too)."""
    for state in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        if state == keep or not (state / PID_FILE).exists():
            continue
        run, envoy = _running(state)
        if run is not None:
            continue  # another gateway, running
        if envoy is not None:
            log.warning(
                "an Envoy (pid %d) of a gateway that was killed still runs from %s", envoy, state
            )
            continue
        shutil.rmtree(state, ignore_errors=True)
