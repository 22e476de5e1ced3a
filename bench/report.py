"""What was measured, on what, as markdown: printed and written to bench/results/latest.md."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.records import (
    BARE,
    FLOOR,
    FLOOR_2,
    GATEWAYS,
    PEERS,
    SYSTEMS,
    Measurement,
    Results,
    RunInfo,
    find,
    find_ttft,
    floor_of,
)
from bench.targets import GOALS, targets, targets_table

if TYPE_CHECKING:
    from bench.streams import StreamsResult
    from bench.ttft import TtftResult

CPU_COLUMNS = ("machine", "envoy", "sidecar", "peer", "upstream", "wrk", "bench", "rest")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cpu_mhz() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            values = [float(ln.partition(":")[2]) for ln in f if ln.startswith("cpu MHz")]
    except (OSError, ValueError):
        return ""
    return f", {max(values):.0f} MHz" if values else ""


def _virtualization() -> str:
    try:
        flags = next(
            ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")
        )
    except (OSError, StopIteration):
        return ""
    return "virtual machine (hypervisor flag set)" if " hypervisor" in flags else "bare metal"


def machine_summary() -> list[str]:
    usable = len(os.sched_getaffinity(0))
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        memory = ""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"nproc {usable} ({os.cpu_count()} online), {cpu_model()}{_cpu_mhz()}{memory},"
        f" Linux {platform.release()}, {_virtualization()}",
        f"Load average at the start (1, 5, 15 min): {load}; the systems under test, the"
        " upstreams and wrk all share these cores",
    ]


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


def _ratio_row(scenario: str, gw: Measurement, other: Measurement) -> str:
    ratio = gw.throughput.rps / other.throughput.rps if other.throughput.rps else math.inf
    p50 = gw.latency.p50_us - other.latency.p50_us
    p99 = gw.latency.p99_us - other.latency.p99_us
    return (
        f"| {scenario} | **{gw.system} / {other.system}** | **{ratio:.2f}x**"
        f" | **{p50 / 1000:+.2f}** | **{p99 / 1000:+.2f}** | | | |"
    )


def main_table(info: RunInfo, rows: Sequence[Measurement]) -> list[str]:
    out = [
        f"| scenario | system | req/s @{info.connections} | p50 ms @1 | p99 ms @1"
        " | non-2xx / socket errors | other work (cores) | runs |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for scenario in info.scenarios:
        for system in SYSTEMS:
            m = find(rows, scenario, system)
            if m is not None:
                out.append(
                    f"| {scenario} | {m.system} | {m.throughput.rps:,.0f}"
                    f" | {_ms(m.latency.p50_us)} | {_ms(m.latency.p99_us)} | {_errors(m)}"
                    f" | {m.other_cores:.2f} | {m.runs} |"
                )
            elif (why := _missing(info, system, scenario)) is not None:
                out.append(f"| {scenario} | {system} | {why} | | | | | |")
        for gateway in GATEWAYS:
            gw = find(rows, scenario, gateway)
            if gw is None:
                continue
            for system in (BARE, floor_of(gw), *PEERS):
                other = find(rows, scenario, system)
                if other is not None:
                    out.append(_ratio_row(scenario, gw, other))
    return out


def _missing(info: RunInfo, system: str, scenario: str) -> str | None:
    """Why ``system`` has no figure for ``scenario``, or None if it was not meant to have one."""
    if (system, scenario) in info.failures:
        return f"**failed**: {info.failures[system, scenario]}"
    if system in info.unavailable and scenario in info.peer_scenarios:
        return f"not available: {info.unavailable[system]}"
    return None


def cpu_table(rows: Sequence[Measurement]) -> list[str]:
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


def ttft_table(info: RunInfo, results: Sequence[TtftResult]) -> list[str]:
    out = [
        "| scenario | system | TTFT p50 ms | p90 ms | p99 ms | added p50 ms vs bare | samples"
        " / errors |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for scenario in info.stream_scenarios:
        bare = find_ttft(results, scenario, BARE)
        for system in SYSTEMS:
            t = find_ttft(results, scenario, system)
            if t is None:
                if (why := _missing(info, system, scenario)) is not None:
                    out.append(f"| {scenario} | {system} | {why} | | | | |")
                continue
            added = "-"
            if bare is not None and system != BARE and bare.samples_us and t.samples_us:
                added = f"**{(t.p50_us - bare.p50_us) / 1000:+.3f}**"
            out.append(
                f"| {scenario} | {system} | {t.p50_us / 1000:.3f} | {t.percentile(90) / 1000:.3f}"
                f" | {t.percentile(99) / 1000:.3f} | {added} | {len(t.samples_us)} / {t.errors} |"
            )
    return out


def _group_label(system: str, group: str) -> str:
    names = {
        "sidecar": "sidecar (supervisor + workers)",
        "envoy": "Envoy",
        "peer": "all its processes",
    }
    return names.get(group, group)


def streams_table(info: RunInfo, results: Sequence[StreamsResult]) -> list[str]:
    out = [
        "| system | processes | streams open | opened in s | RSS idle MB | RSS peak MB"
        " | PSS peak MB | count |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in sorted(results, key=lambda r: SYSTEMS.index(r.system) if r.system in SYSTEMS else 9):
        opened = f"{r.opened:,} / {r.wanted:,}" + (f" ({r.error})" if r.error else "")
        for group, peak in r.peak.items():
            idle = r.idle.get(group)
            out.append(
                f"| {r.system} | {_group_label(r.system, group)} | {opened}"
                f" | {r.open_seconds:.1f} | {idle.rss_mb if idle else 0:,.0f} | {peak.rss_mb:,.0f}"
                f" | {peak.pss_mb:,.0f} | {peak.processes} |"
            )
    for (system, scenario), why in info.failures.items():
        if scenario == "held streams":
            out.append(f"| {system} | **failed**: {why} | | | | | | |")
    for peer, reason in info.unavailable.items():
        out.append(f"| {peer} | not available: {reason} | | | | | | |")
    return out


def floor_summary(info: RunInfo, results: Results) -> list[str]:
    """What the do-nothing Python ext_procs reached: the ceiling of each mode, for scale."""
    out = []
    for scenario in info.scenarios:
        bare = find(results.rows, scenario, BARE)
        if bare is None or bare.throughput.rps <= 0:
            continue
        for floor_name in (FLOOR, FLOOR_2):
            floor = find(results.rows, scenario, floor_name)
            if floor is None:
                continue
            line = (
                f"{scenario}, {floor_name}: {floor.throughput.rps / bare.throughput.rps:.2f}x bare"
                f" Envoy's throughput, {(floor.latency.p50_us - bare.latency.p50_us) / 1000:+.2f} ms"
                " at p50"
            )
            reached = [
                f"{gw.system} reaches {gw.throughput.rps / floor.throughput.rps:.2f}x of it"
                for name in GATEWAYS
                if (gw := find(results.rows, scenario, name)) is not None
                and floor_of(gw) == floor_name
            ]
            out.append("; ".join([line, *reached]))
    if not out:
        return []
    return [
        "",
        "For scale, the Python floors (bare Envoy plus an ext_proc that answers every message"
        " with an empty reply, same runtime and workers as the sidecar: `bench/floor.py`): four"
        " messages per request as in the default accounting mode, or two (the stream ends after"
        " the request body) as for a request handed off in envoy mode; each gateway system is"
        " set against the floor with its own messages per request in that scenario. A target"
        " above a floor is out of reach for that shape of Python ext_proc, whatever it does.",
        "",
        *(f"- {line}" for line in out),
    ]


def render_markdown(info: RunInfo, results: Results) -> str:
    target_rows = targets(info, results)
    lines = [
        "# Gateway vs bare Envoy, the Python floor, LiteLLM and Portkey",
        "",
        f"- Date: {info.date}; commit `{info.commit}`; produced by `make bench`",
        f"- Machine: {info.machine[0]}",
        *(f"- {m}" for m in info.machine[1:]),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in info.versions.items()),
        *(f"- {s}" for s in info.settings),
        "",
        "## Targets",
        "",
        "From the performance issue; same run, same machine.",
        "",
        *targets_table(target_rows),
        *floor_summary(info, results),
        "",
        "## Throughput and latency",
        "",
        f"Requests/s at {info.connections} connections; latency at 1 connection (wrk's"
        " percentiles). Ratio rows: the gateway's req/s divided by the other system's, and the"
        " milliseconds the gateway adds (negative: it is faster) at p50 / p99. `other work`:"
        " cores busy outside the bench's own processes during the runs; a case above"
        f" {info.noise_limit:g} was run again and the least disturbed run kept (`runs`).",
        "",
        *main_table(info, results.rows),
    ]
    if results.ttft:
        lines += [
            "",
            "## Time to first token",
            "",
            "One connection, sequential streaming requests, time from sending the request to the"
            " first complete SSE event (`data: ...` and its blank line), measured by the bench's"
            " own client (Python http.client; its overhead is the same for every system). Added:"
            " p50 minus bare Envoy's p50.",
            "",
            *ttft_table(info, results.ttft),
        ]
    if results.streams:
        lines += [
            "",
            f"## Memory with {info.streams:,} open streams",
            "",
            f"{info.streams:,} concurrent streaming requests to a slow upstream (one event every"
            " few seconds), all open at once, held a few seconds; resident memory summed over"
            " each group's processes, sampled from /proc every 0.25 s (peak kept). RSS counts"
            " pages shared between processes once per process; PSS splits them.",
            "",
            *streams_table(info, results.streams),
        ]
    lines += [
        "",
        "## CPU per request",
        "",
        f"CPU microseconds per request at {info.connections} connections: `machine` is the"
        " whole machine; `envoy` the Envoy under test; `sidecar` the gateway's Python processes"
        " (workers and their supervisor); `peer` LiteLLM's or Portkey's processes; `upstream`"
        " the fake provider(s); `wrk` the load generator; `bench` the bench process itself"
        " (reading the systems' logs); `rest` everything else (other activity on the machine)."
        " `ext_proc msgs/req`: messages Envoy sent to the sidecar per request.",
        "",
        *cpu_table(results.rows),
    ]
    notes = list(info.notes)
    notes += [f"{peer} not available: {reason}" for peer, reason in info.unavailable.items()]
    busy = [m for m in results.rows if m.other_cores > info.noise_limit]
    if busy:
        cases = ", ".join(f"{m.scenario} / {m.system} ({m.other_cores:.1f})" for m in busy)
        notes.append(
            f"{len(busy)} of {len(results.rows)} cases ran while other work kept more than"
            f" {info.noise_limit:g} core busy (cores in brackets; a case is run again only if the"
            f" machine has calmed down): their figures are off by an unknown amount. {cases}"
        )
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def chart_spec(info: RunInfo, results: Results) -> dict[str, Any]:
    """The figures of the report, for bench/chart.py (which runs where matplotlib is)."""
    systems = [s for s in SYSTEMS if any(m.system == s for m in results.rows)]

    def grouped(value: Any) -> dict[str, list[float | None]]:
        return {
            system: [
                value(m) if (m := find(results.rows, scenario, system)) is not None else None
                for scenario in info.scenarios
            ]
            for system in systems
        }

    panels: list[dict[str, Any]] = [
        {
            "title": f"Requests/s at {info.connections} connections",
            "ylabel": "req/s (log scale)",
            "log": True,
            "categories": info.scenarios,
            "series": grouped(lambda m: m.throughput.rps),
        },
        {
            "title": "Latency p50 at 1 connection",
            "ylabel": "ms (log scale)",
            "log": True,
            "categories": info.scenarios,
            "series": grouped(lambda m: m.latency.p50_us / 1000),
        },
    ]
    if results.ttft:
        panels.append(
            {
                "title": "Time to first token, p50 at 1 connection",
                "ylabel": "ms (log scale)",
                "log": True,
                "categories": info.stream_scenarios,
                "series": {
                    system: [
                        t.p50_us / 1000 if (t := find_ttft(results.ttft, s, system)) else None
                        for s in info.stream_scenarios
                    ]
                    for system in systems
                },
            }
        )
    if results.streams:
        rss = GOALS["sidecar rss"]
        bars: dict[str, list[float | None]] = {}
        labels = []
        for r in results.streams:
            for group, peak in r.peak.items():
                labels.append(f"{r.system}\n{group}")
                bars.setdefault("RSS peak", []).append(peak.rss_mb)
        panels.append(
            {
                "title": f"RSS with {info.streams:,} open streams",
                "ylabel": "MB",
                "log": False,
                "categories": labels,
                "series": bars,
                "hline": {"y": rss.goal, "label": f"sidecar target {rss.goal:g}{rss.unit}"},
            }
        )
    panels.append(
        {
            "title": "CPU per request at 32 connections (whole machine)",
            "ylabel": "µs (log scale)",
            "log": True,
            "categories": info.scenarios,
            "series": grouped(lambda m: m.cpu_us_per_request.get("machine")),
        }
    )
    scored = [r for r in targets(info, results) if r.score is not None]
    panels.append(
        {
            "title": "Targets: measured vs target (1 = just met)",
            "kind": "targets",
            "labels": [r.target for r in scored],
            "values": [min(max(r.score or 0.0, 0.01), 100.0) for r in scored],
            "measured": [r.measured for r in scored],
        }
    )
    busy = [m for m in results.rows if m.other_cores > info.noise_limit]
    summary = [
        f"Machine: {info.machine[0]}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in info.versions.items()),
        f"Cases disturbed by other work (> {info.noise_limit:g} core): {len(busy)}"
        f" of {len(results.rows)}",
        *(f"{s} / {g}: {why}" for (g, s), why in info.failures.items()),
        "Full report: bench/results/latest.md",
    ]
    return {
        "title": f"ai-gateway bench, {info.date}, commit {info.commit}",
        "panels": panels,
        "summary": summary,
    }
