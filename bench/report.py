"""What was measured, on what, as markdown: printed and written to bench/results/latest.md."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.wrk import WrkResult

BARE = "bare envoy"
GATEWAY = "gateway"
CPU_COLUMNS = ("machine", "envoy", "sidecar", "upstream", "wrk", "rest")


@dataclass(frozen=True, slots=True)
class Measurement:
    scenario: str
    system: str
    throughput: WrkResult  # at N connections
    latency: WrkResult  # at 1 connection
    non_2xx: int  # responses Envoy counted as not 2xx, both measured phases
    cpu_us_per_request: dict[str, float]  # at N connections, by process group
    extproc_msgs_per_request: float | None  # Envoy -> sidecar messages, None for bare Envoy


@dataclass(slots=True)
class RunInfo:
    date: str
    commit: str
    machine: str
    versions: dict[str, str]
    settings: list[str]
    connections: int
    notes: list[str] = field(default_factory=list)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_summary() -> str:
    usable = len(os.sched_getaffinity(0))
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        memory = ""
    return (
        f"nproc {usable} ({os.cpu_count()} online), {cpu_model()}{memory},"
        f" Linux {platform.release()}"
    )


def git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _errors(m: Measurement) -> str:
    sockets = m.throughput.socket_errors + m.latency.socket_errors
    # wrk's own count of >= 400 answers, in case Envoy's counters missed one (they should not).
    http = max(m.non_2xx, m.throughput.http_errors + m.latency.http_errors)
    return f"{http} / {sockets}"


def _find(rows: Sequence[Measurement], scenario: str, system: str) -> Measurement | None:
    return next((m for m in rows if m.scenario == scenario and m.system == system), None)


def main_table(rows: Sequence[Measurement], connections: int) -> list[str]:
    out = [
        f"| scenario | system | req/s @{connections} | p50 ms @1 | p99 ms @1"
        " | non-2xx / socket errors |",
        "|---|---|--:|--:|--:|--:|",
    ]
    scenarios = list(dict.fromkeys(m.scenario for m in rows))
    for scenario in scenarios:
        for m in rows:
            if m.scenario == scenario:
                out.append(
                    f"| {scenario} | {m.system} | {m.throughput.rps:,.0f}"
                    f" | {_ms(m.latency.p50_us)} | {_ms(m.latency.p99_us)} | {_errors(m)} |"
                )
        bare, gw = _find(rows, scenario, BARE), _find(rows, scenario, GATEWAY)
        if bare is not None and gw is not None and bare.throughput.rps > 0:
            ratio = gw.throughput.rps / bare.throughput.rps
            p50 = gw.latency.p50_us - bare.latency.p50_us
            p99 = gw.latency.p99_us - bare.latency.p99_us
            out.append(
                f"| {scenario} | **gateway / bare** | **{ratio:.2f}x**"
                f" | **{p50 / 1000:+.2f}** | **{p99 / 1000:+.2f}** | |"
            )
    return out


def cpu_table(rows: Sequence[Measurement], connections: int) -> list[str]:
    seen = {g for m in rows for g in m.cpu_us_per_request}
    groups = [g for g in CPU_COLUMNS if g in seen] + sorted(seen - set(CPU_COLUMNS))
    out = [
        "| scenario | system | " + " | ".join(groups) + " | ext_proc msgs/req |",
        "|---|---|" + "--:|" * (len(groups) + 1),
    ]
    for m in rows:
        cells = [
            f"{m.cpu_us_per_request[g]:,.0f}" if g in m.cpu_us_per_request else "-" for g in groups
        ]
        msgs = "-" if m.extproc_msgs_per_request is None else f"{m.extproc_msgs_per_request:.2f}"
        out.append(f"| {m.scenario} | {m.system} | " + " | ".join(cells) + f" | {msgs} |")
    return out


def render_markdown(info: RunInfo, rows: Sequence[Measurement]) -> str:
    lines = [
        "# Gateway vs bare Envoy",
        "",
        f"- Date: {info.date}; commit `{info.commit}`; produced by `make bench`",
        f"- Machine: {info.machine}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in info.versions.items()),
        *(f"- {s}" for s in info.settings),
        "",
        f"Requests/s at {info.connections} connections; latency at 1 connection (wrk's"
        " percentiles). Ratio row: gateway req/s divided by bare Envoy's, and the"
        " milliseconds the gateway adds at p50 / p99.",
        "",
        *main_table(rows, info.connections),
        "",
        f"CPU microseconds per request at {info.connections} connections: `machine` is the"
        " whole machine; `envoy` the Envoy under test; `sidecar` the gateway's Python processes"
        " (workers and their supervisor); `upstream` the fake provider(s); `wrk` the load"
        " generator; `rest` everything else (the bench itself, other activity on the machine)."
        " `ext_proc msgs/req`: messages Envoy sent to the sidecar per request.",
        "",
        *cpu_table(rows, info.connections),
    ]
    if info.notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in info.notes)]
    return "\n".join(lines) + "\n"
