"""What the bench measures of the started systems, phase by phase: sanity checks, throughput and
latency, time to first token, held streams; a peer's phase around its start and stop. A system
that dies in a phase is recorded and replaced by a fresh one."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import Settings, System, background_load, log, measure, sanity_check
from bench.peers import PeerUnavailable
from bench.processes import BenchError, SystemDied
from bench.records import LITELLM, PORTKEY, Results
from bench.scenarios import Scenario, all_scenarios, hold_scenario
from bench.streams import hold_streams
from bench.ttft import measure_ttft


@dataclass(frozen=True, slots=True)
class Plan:
    """What the flags selected."""

    args: argparse.Namespace
    systems: list[str]  # report names, in run order
    # Started by the bench and measured side by side; the others are peers, one at a time.
    own: tuple[str, ...]
    scenarios: list[Scenario] = field(default_factory=list)
    hold: Scenario = field(default_factory=hold_scenario)

    @classmethod
    def of(cls, args: argparse.Namespace, systems: list[str], own: tuple[str, ...]) -> Plan:
        return cls(args, systems, own, [s for s in all_scenarios() if s.key in args.scenarios])

    @property
    def configured(self) -> list[Scenario]:
        """Every scenario the systems are configured for: measured ones and the held streams."""
        return self.scenarios + ([self.hold] if self.args.streams else [])

    @property
    def stream_scenarios(self) -> list[Scenario]:
        return [s for s in self.scenarios if s.streaming] if self.args.ttft_samples else []

    def estimate_seconds(self) -> float:
        a = self.args
        per_case: float = a.warmup + a.duration + a.latency_duration + 1
        cases = sum(
            1 for s in self.scenarios for system in self.systems if system in self.own or s.peers
        )
        ttft = len(self.stream_scenarios) * len(self.systems) * 6
        streams = (15 if a.streams else 0) * len(self.systems)
        peers = 30 * sum(s in (LITELLM, PORTKEY) for s in self.systems)
        return cases * per_case + ttft + streams + peers + 20


@dataclass(slots=True)
class Record:
    """What the run found, for the report."""

    results: Results = field(default_factory=Results)
    unavailable: dict[str, str] = field(default_factory=dict)  # peer -> why not measured
    failures: dict[tuple[str, str], str] = field(default_factory=dict)  # (system, scenario)
    notes: list[str] = field(default_factory=list)
    idle: float = 0.0  # cores busy before the load, the highest of the phases


class Phases:
    """Every measurement of a set of started systems, each recorded in ``record``."""

    def __init__(
        self,
        plan: Plan,
        wrk: str,  # the wrk binary
        record: Record,
        shared: dict[str, list[int]],  # process groups measured with every system (upstreams)
        workdir: Path,
    ) -> None:
        args = plan.args
        self.plan = plan
        self.wrk = wrk
        self.record = record
        self.shared = shared
        self.workdir = workdir
        self.settings = Settings(
            args.warmup,
            args.duration,
            args.latency_duration,
            args.connections,
            args.retries,
            args.noise_limit,
        )

    def run(self, systems: list[System], own_systems: bool) -> None:
        """Sanity checks, then every measurement of ``systems``."""
        plan, record = self.plan, self.record
        runnable = {system.name: self._checked(system, own_systems) for system in systems}
        log("sanity checks passed: " + ", ".join(s.name for s in systems))
        record.idle = max(record.idle, background_load())
        if record.idle > plan.args.noise_limit:
            log(f"WARNING: {record.idle:.0%} of a core busy before any load: numbers will be noisy")

        for scenario in plan.scenarios:
            for i, system in enumerate(systems):
                if scenario in runnable[system.name]:

                    def throughput(system: System, scenario: Scenario = scenario) -> None:
                        record.results.rows.append(
                            measure(
                                self.wrk, system, scenario, self.settings, self.shared, self.workdir
                            )
                        )

                    self._measure_or_restart(systems, i, scenario.name, throughput)
        for scenario in plan.stream_scenarios:
            for i, system in enumerate(systems):
                if scenario in runnable[system.name]:

                    def ttft(system: System, scenario: Scenario = scenario) -> None:
                        n = plan.args.ttft_samples
                        log(f"{scenario.name} / {system.name}: time to first token, {n} samples")
                        record.results.ttft.append(measure_ttft(system, scenario, n))
                        system.after_phase()

                    self._measure_or_restart(systems, i, scenario.name, ttft)
        if plan.args.streams:
            for i in range(len(systems)):
                self._measure_or_restart(systems, i, plan.hold.name, self._hold_streams)

    def peer(self, peer: str, start: Callable[[contextlib.ExitStack], System]) -> None:
        """A peer's phase: ``start(stack)`` it, measure it, stop it; if it cannot start, say why."""
        if not any(s.peers for s in self.plan.scenarios):
            return
        try:
            with contextlib.ExitStack() as stack:
                self.run([start(stack)], own_systems=False)
        except PeerUnavailable as exc:
            log(f"{peer}: not available: {exc}")
            self.record.unavailable[peer] = str(exc)
        except BenchError as exc:
            reason = str(exc).splitlines()[0]
            log(f"{peer}: not available: {exc}")
            self.record.unavailable[peer] = reason

    def _checked(self, system: System, own_system: bool) -> list[Scenario]:
        """The scenarios ``system`` answered right; one of our own failing stops the bench."""
        runnable = []
        for scenario in self.plan.scenarios:
            if not system.supports(scenario):
                continue
            if own_system:
                sanity_check(system, scenario)  # a failure here stops the bench
                runnable.append(scenario)
                continue
            try:
                sanity_check(system, scenario)
            except BenchError as exc:
                reason = str(exc).splitlines()[0]
                log(f"WARNING {reason}; {system.name} skips {scenario.name}")
                self.record.failures[(system.name, scenario.name)] = (
                    f"sanity check failed: {reason}"
                )
                continue
            runnable.append(scenario)
        return runnable

    def _first_supported(self, system: System) -> Scenario | None:
        return next((s for s in self.plan.scenarios if system.supports(s)), None)

    def _measure_or_restart(
        self, systems: list[System], index: int, scenario: str, work: Callable[[System], None]
    ) -> None:
        """``work(system)``; if the system died doing it, record why and start a fresh one."""
        system = systems[index]
        try:
            work(system)
            if not system.alive():
                raise SystemDied(f"{system.name} exited")
        except SystemDied as exc:
            # Its last words (a crash's backtrace, the supervisor's line) may still be coming.
            deadline = time.monotonic() + 5
            while not system.death() and time.monotonic() < deadline:
                time.sleep(0.25)
            reason = system.death() or str(exc).splitlines()[0]
            log(f"{scenario} / {system.name}: FAILED, the system died: {reason}")
            self.record.failures[(system.name, scenario)] = f"crashed ({reason})"
            self.record.notes.append(
                f"{system.name} crashed during {scenario}: {reason}; it was restarted for the"
                " rest of the run"
            )
            if system.restart is None:
                raise BenchError(f"{system.name} died and cannot be restarted") from None
            systems[index] = system.restart()
            check = self._first_supported(system)
            if check is not None:
                sanity_check(systems[index], check)

    def _hold_streams(self, system: System) -> None:
        n = self.plan.args.streams
        log(f"{system.name}: opening {n:,} concurrent streams (memory test)")
        result = hold_streams(system, self.plan.hold, n, self.plan.args.hold_seconds)
        peak = ", ".join(f"{g} {m.rss_mb:,.0f} MB" for g, m in result.peak.items())
        log(
            f"{system.name}: {result.opened:,}/{n:,} open after {result.open_seconds:.1f}s;"
            f" peak RSS {peak}"
        )
        self.record.results.streams.append(result)
        # The system must have survived it: one more request, checked as before.
        time.sleep(1.0)
        if not system.alive():
            raise SystemDied(f"{system.name} exited during the {n:,}-stream test")
        check = self._first_supported(system)
        try:
            if check is not None:
                sanity_check(system, check)
        except BenchError as exc:
            self.record.notes.append(
                f"{system.name} failed a request after the {n:,}-stream test: "
                + str(exc).splitlines()[0]
            )
        system.after_phase()
