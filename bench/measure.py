"""One system, one scenario: the sanity check, then warm-up, throughput and latency runs."""

from __future__ import annotations

import http.client
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import cpu
from bench.payloads import Scenario
from bench.processes import BenchError, counters
from bench.report import Measurement
from bench.wrk import lua_script, run_wrk

# Envoy counters read before and after each phase: responses by class, sidecar messages.
_COUNTERS = r"^http\.ai_gateway\.downstream_rq_[1-5]xx$|ext_proc\.stream_msgs_sent$"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class System:
    """One system under test: where to send a scenario's requests, and its processes."""

    name: str
    url: str
    admin_url: str
    headers: dict[str, str]
    path: Callable[[Scenario], str]
    processes: Callable[[], dict[str, list[int]]]  # CPU group name -> pids
    diagnostics: Callable[[], str]  # recent output, shown when a check fails
    after_phase: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True, slots=True)
class Settings:
    warmup: float
    duration: float
    latency_duration: float
    connections: int


def sanity_check(system: System, scenario: Scenario) -> None:
    """One request must get 200 and exactly the upstream's body, or nothing is measured."""
    host, _, port = system.url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", system.path(scenario), body=scenario.request, headers=system.headers)
        resp = conn.getresponse()
        body = resp.read()
        content_type = resp.getheader("content-type", "")
    except OSError as exc:
        raise BenchError(f"{system.name} / {scenario.name}: request failed: {exc}") from None
    finally:
        conn.close()
    problems = []
    if resp.status != 200:
        problems.append(f"status {resp.status}")
    if not content_type.startswith(scenario.content_type):
        problems.append(f"content-type {content_type!r}")
    if body != scenario.response:
        problems.append(f"unexpected body ({len(body)} bytes): {body[:300]!r}")
    if problems:
        raise BenchError(
            f"sanity check failed for {system.name} / {scenario.name}: "
            + "; ".join(problems)
            + "\n"
            + system.diagnostics()
        )


def _children_seconds() -> float:
    # wrk is the only child the bench waits for during a run, so this is wrk's CPU time.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True)
class _Snapshot:
    counters: dict[str, int]
    machine: float
    wrk: float
    groups: dict[str, float]

    @classmethod
    def take(cls, admin_url: str, groups: dict[str, list[int]]) -> _Snapshot:
        return cls(
            counters(admin_url, _COUNTERS),
            cpu.machine_busy_seconds(),
            _children_seconds(),
            cpu.group_seconds(groups),
        )

    def responses(self, classes: str = "12345") -> int:
        return sum(self.counters.get(f"http.ai_gateway.downstream_rq_{c}xx", 0) for c in classes)

    def extproc_messages(self) -> int:
        return sum(v for k, v in self.counters.items() if k.endswith("ext_proc.stream_msgs_sent"))


def _cpu_per_request(before: _Snapshot, after: _Snapshot, requests: int) -> dict[str, float]:
    """Microseconds of CPU per request by group; ``rest`` is whatever no group accounts for."""
    per = {g: (after.groups[g] - before.groups[g]) * 1e6 / requests for g in after.groups}
    per["wrk"] = (after.wrk - before.wrk) * 1e6 / requests
    machine = (after.machine - before.machine) * 1e6 / requests
    per["rest"] = max(0.0, machine - sum(per.values()))
    return {"machine": machine, **per}


def measure(
    wrk: str,
    system: System,
    scenario: Scenario,
    settings: Settings,
    shared_groups: dict[str, list[int]],
    workdir: Path,
) -> Measurement:
    script = workdir / f"{system.name}-{scenario.name}.lua".replace(" ", "_")
    script.write_text(lua_script(scenario.request, system.headers))
    url = system.url + system.path(scenario)
    label = f"{scenario.name} / {system.name}"
    conns = settings.connections
    if settings.warmup >= 1:
        log(f"{label}: warm-up {settings.warmup:g}s @{conns}")
        run_wrk(wrk, url, script, conns, settings.warmup)
    system.after_phase()

    log(f"{label}: throughput {settings.duration:g}s @{conns}")
    groups = {**system.processes(), **shared_groups}
    before = _Snapshot.take(system.admin_url, groups)
    throughput = run_wrk(wrk, url, script, conns, settings.duration)
    after = _Snapshot.take(system.admin_url, groups)
    system.after_phase()
    # Envoy's count of answered requests, not wrk's: wrk leaves some in flight at the end.
    answered = max(1, after.responses() - before.responses())
    msgs = after.extproc_messages() - before.extproc_messages()

    log(f"{label}: latency {settings.latency_duration:g}s @1")
    latency = run_wrk(wrk, url, script, 1, settings.latency_duration)
    final = _Snapshot.take(system.admin_url, {})
    system.after_phase()
    non_2xx = final.responses("1345") - before.responses("1345")
    sockets = throughput.socket_errors + latency.socket_errors
    if non_2xx or sockets or throughput.http_errors or latency.http_errors:
        log(f"{label}: WARNING {non_2xx} non-2xx responses, {sockets} socket errors")
    return Measurement(
        scenario=scenario.name,
        system=system.name,
        throughput=throughput,
        latency=latency,
        non_2xx=non_2xx,
        cpu_us_per_request=_cpu_per_request(before, after, answered),
        extproc_msgs_per_request=msgs / answered if msgs else None,
    )


def background_load(seconds: float = 2.0) -> float:
    """Busy fraction of the whole machine while the bench sends nothing (0..nproc)."""
    start = cpu.machine_busy_seconds()
    time.sleep(seconds)
    return (cpu.machine_busy_seconds() - start) / seconds
