"""The targets of the report: the goals the README's "Performance" section quotes (from the
performance issue), one table; and each gateway system's figures set against them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bench.records import (
    BARE,
    GATEWAY,
    GATEWAYS,
    LITELLM,
    PORTKEY,
    Measurement,
    Results,
    RunInfo,
    find,
    find_ttft,
)


@dataclass(frozen=True, slots=True)
class Goal:
    """``figure >= goal``, or ``figure <= goal`` when ``at_most``."""

    what: str  # the figure, naming {gateway} and, where they apply, {scenario} and {streams}
    goal: float
    unit: str  # written after every number: "x", " ms", " MB"
    at_most: bool = False
    digits: int = 2  # of every number shown but the goal (shown as written here)

    def label(self, **names: object) -> str:
        op = "<=" if self.at_most else ">="
        return f"{self.what.format(**names)} {op} {self.goal:g}{self.unit}"


GOALS: Final = {
    "chat vs bare": Goal("non-streaming chat throughput, {gateway} / bare Envoy", 0.35, "x"),
    "stream vs bare": Goal("{scenario} throughput, {gateway} / bare Envoy", 0.7, "x"),
    "added ttft": Goal("added TTFT p50, {scenario}, {gateway}", 0.5, " ms", True, digits=3),
    "added latency": Goal("added p50 latency @1, non-streaming chat, {gateway}", 0.5, " ms", True),
    # Each peer, in each of the scenarios named in PEER_SCENARIOS.
    LITELLM: Goal("{scenario} throughput, {gateway} / litellm", 20, "x"),
    PORTKEY: Goal("{scenario} throughput, {gateway} / portkey", 1.5, "x"),
    "sidecar rss": Goal(
        "sidecar RSS with {streams:,} open streams, {gateway}", 300, " MB", True, 0
    ),
}
PEER_SCENARIOS = ("chat", "stream", "embeddings")  # scenario keys


@dataclass(frozen=True, slots=True)
class TargetRow:
    target: str
    measured: str
    verdict: str
    score: float | None  # measured / target for "at least", target / measured for "at most"


def _not_measured(name: str, why: str) -> TargetRow:
    failed = "failed" in why or "crashed" in why
    return TargetRow(
        name, "-", f"**not measured**: {why}" if failed else f"not measured ({why})", None
    )


def _judge(goal: Goal, name: str, value: float | None, why: str) -> TargetRow:
    if value is None:
        return _not_measured(name, why)
    fmt = f"{{:.{goal.digits}f}}{goal.unit}"
    measured, target = fmt.format(value), goal.goal
    if goal.at_most:
        if value <= target:
            verdict = f"met, {fmt.format(target - value)} to spare"
        else:
            verdict = (
                f"**missed**, over by {fmt.format(value - target)}"
                f" ({value / target:.1f}x the target)"
            )
        return TargetRow(name, measured, verdict, target / value if value > 0 else math.inf)
    if value >= target:
        verdict = f"met, by {fmt.format(value - target)}"
    else:
        verdict = (
            f"**missed**, short by {fmt.format(target - value)} ({value / target:.0%} of target)"
        )
    return TargetRow(name, measured, verdict, value / target if target else None)


def _why(info: RunInfo, scenario: str | None, *systems: str) -> str:
    """Why a target needing ``systems`` on ``scenario`` has no figure."""
    if scenario is None:
        return "scenario not selected"
    for system in systems:
        if (system, scenario) in info.failures:
            return f"{system} {info.failures[system, scenario]}"
        if system in info.unavailable:
            return f"{system} not available: {info.unavailable[system]}"
    return "not run: " + " and ".join(systems) + " were not all selected"


def _rps_ratio(rows: Sequence[Measurement], scenario: str | None, a: str, b: str) -> float | None:
    if scenario is None:
        return None
    ma, mb = find(rows, scenario, a), find(rows, scenario, b)
    if ma is None or mb is None or mb.throughput.rps <= 0:
        return None
    return ma.throughput.rps / mb.throughput.rps


def _flag_noise(
    row: TargetRow, info: RunInfo, rows: Sequence[Measurement], scenario: str | None, *systems: str
) -> TargetRow:
    """Say so when a figure the row rests on was measured on a busy machine."""
    busy = [
        f"{m.system} {m.other_cores:.1f}"
        for system in systems
        if scenario is not None
        and (m := find(rows, scenario, system)) is not None
        and m.other_cores > info.noise_limit
    ]
    if not busy or row.score is None:
        return row
    note = f" (noisy: cores of other work during the run: {', '.join(busy)})"
    return TargetRow(row.target, row.measured, row.verdict + note, row.score)


def targets(info: RunInfo, results: Results) -> list[TargetRow]:
    """Every target, for each gateway system measured."""
    measured = {m.system for m in results.rows} | {s.system for s in results.streams}
    gateways = [g for g in GATEWAYS if g in measured] or [GATEWAY]
    return [row for gateway in gateways for row in _targets(info, results, gateway)]


def _throughput(
    info: RunInfo,
    rows: Sequence[Measurement],
    key: str,
    name: str | None,
    gw: str,
    other: str,
    shown: str | None = None,
) -> TargetRow:
    """``gw``'s req/s over ``other``'s on scenario ``name`` (None: not selected; the label
    then says ``shown``)."""
    goal = GOALS[key]
    label = goal.label(gateway=gw, scenario=name or shown)
    row = _judge(goal, label, _rps_ratio(rows, name, gw, other), _why(info, name, gw, other))
    return _flag_noise(row, info, rows, name, gw, other)


def _targets(info: RunInfo, results: Results, gateway: str) -> list[TargetRow]:
    rows = results.rows
    chat, stream = info.names.get("chat"), info.names.get("stream")
    out = [
        _throughput(info, rows, "chat vs bare", chat, gateway, BARE),
        _throughput(info, rows, "stream vs bare", stream, gateway, BARE, shown="stream-20"),
    ]
    ttft_goal = GOALS["added ttft"]
    for scenario in info.stream_scenarios:
        gw = find_ttft(results.ttft, scenario, gateway)
        bare = find_ttft(results.ttft, scenario, BARE)
        added = None
        if gw and bare and gw.samples_us and bare.samples_us:
            added = (gw.p50_us - bare.p50_us) / 1000
        label = ttft_goal.label(gateway=gateway, scenario=scenario)
        out.append(_judge(ttft_goal, label, added, _why(info, scenario, gateway, BARE)))
    added_p50 = None
    if chat is not None:
        gw_m, bare_m = find(rows, chat, gateway), find(rows, chat, BARE)
        if gw_m and bare_m:
            added_p50 = (gw_m.latency.p50_us - bare_m.latency.p50_us) / 1000
    latency_goal = GOALS["added latency"]
    row = _judge(
        latency_goal,
        latency_goal.label(gateway=gateway),
        added_p50,
        _why(info, chat, gateway, BARE),
    )
    out.append(_flag_noise(row, info, rows, chat, gateway, BARE))
    for peer in (LITELLM, PORTKEY):
        for key in PEER_SCENARIOS:
            name = info.names.get(key)
            if name is not None:
                out.append(_throughput(info, rows, peer, name, gateway, peer))
    out.append(_sidecar_rss(info, results, gateway))
    return out


def _sidecar_rss(info: RunInfo, results: Results, gateway: str) -> TargetRow:
    goal = GOALS["sidecar rss"]
    label = goal.label(gateway=gateway, streams=info.streams)
    gw_streams = next((s for s in results.streams if s.system == gateway), None)
    if gw_streams is not None and "sidecar" in gw_streams.peak:
        row = _judge(goal, label, gw_streams.peak["sidecar"].rss_mb, "")
        if gw_streams.opened < gw_streams.wanted:
            return TargetRow(
                label,
                f"{row.measured} with only {gw_streams.opened:,} open",
                f"**missed**: {gw_streams.wanted - gw_streams.opened:,} streams did not open",
                0.0,
            )
        return row
    if not info.streams:
        return _not_measured(label, "memory test skipped (--streams 0)")
    return _not_measured(label, _why(info, "held streams", gateway))


def targets_table(rows: Sequence[TargetRow]) -> list[str]:
    out = ["| target | measured | result |", "|---|--:|---|"]
    out += [f"| {r.target} | {r.measured} | {r.verdict} |" for r in rows]
    return out
