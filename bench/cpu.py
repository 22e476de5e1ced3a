"""CPU time from /proc: of the whole machine, and of given processes.

On a 2-core machine the load generator, the upstream and the system under test compete for
the same cores, so requests/s alone hides where the time goes. CPU per request, split by
process, shows what the sidecar costs independently of how the scheduler shared the cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

_TICK = float(os.sysconf("SC_CLK_TCK"))


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle, summed over all cores, since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user/nice)
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / _TICK


def process_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads), None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; the fields after it are fixed.
    rest = text.rpartition(")")[2].split()
    return (int(rest[11]) + int(rest[12])) / _TICK


def group_seconds(groups: Mapping[str, Iterable[int]]) -> dict[str, float]:
    return {
        name: sum(s for s in (process_seconds(p) for p in pids) if s is not None)
        for name, pids in groups.items()
    }


def processes_with_arg_under(directory: Path) -> dict[int, list[str]]:
    """Every process with a command-line argument inside ``directory``, with its argv."""
    prefix = str(directory) + os.sep
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a.startswith(prefix) for a in argv):
            found[int(entry.name)] = argv
    return found
