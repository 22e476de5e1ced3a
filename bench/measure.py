"""One system, one scenario: the sanity check, then warm-up, throughput and latency runs."""

from __future__ import annotations

import dataclasses
import http.client
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import cpu
from bench.answers import answer_problems
from bench.processes import BenchError, SystemDied, counters
from bench.records import Measurement
from bench.scenarios import Scenario
from bench.wrk import lua_script, run_wrk

# Envoy counters read before and after each phase: responses by class, sidecar messages.
_COUNTERS = r"^http\.ai_gateway\.downstream_rq_[1-5]xx$|ext_proc\.stream_msgs_sent$"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Target:
    """What a system is sent for one scenario."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class System:
    """One system under test: where to send a scenario's requests, and its processes."""

    name: str
    url: str
    target: Callable[[Scenario], Target]
    processes: Callable[[], dict[str, list[int]]]  # CPU group name -> pids
    diagnostics: Callable[[], str]  # recent output, shown when a check fails
    # Byte-exact answers expected (bare Envoy, and the gateway's pass-through scenarios);
    # otherwise the answer must carry the upstream's text (or vectors) and usage.
    exact: Callable[[Scenario], bool] = field(default=lambda s: False)
    admin_url: str | None = None  # Envoy's admin, for its counters; None: wrk's counts
    supports: Callable[[Scenario], bool] = field(default=lambda s: True)
    after_phase: Callable[[], None] = field(default=lambda: None)
    # Process groups whose memory the open-streams test samples.
    memory_groups: Callable[[], dict[str, list[int]]] = field(default=lambda: {})
    alive: Callable[[], bool] = field(default=lambda: True)
    # A fresh instance after a crash (the same System if its address does not change).
    restart: Callable[[], System] | None = None
    death: Callable[[], str] = field(default=lambda: "")  # what it said when it died

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("http://").partition(":")
        return host, int(port)


@dataclass(slots=True)
class Settings:
    warmup: float
    duration: float
    latency_duration: float
    connections: int
    retries: int  # extra runs of a case when other activity on the machine disturbed it
    noise_limit: float  # cores of other activity above which a case counts as disturbed
    # Extra runs left for the whole bench: a machine busy all along must not double its time.
    reruns_left: int = 6


def sanity_check(system: System, scenario: Scenario) -> None:
    """One request must get 200 and the upstream's answer, or nothing is measured."""
    host, port = system.host_port
    target = system.target(scenario)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", target.path, body=target.body, headers=target.headers)
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
    if system.exact(scenario):
        if body != scenario.response:
            problems.append(f"unexpected body ({len(body)} bytes): {body[:300]!r}")
    elif resp.status == 200:
        problems += answer_problems(scenario, body)
    if problems:
        raise BenchError(
            f"sanity check failed for {system.name} / {scenario.name}: "
            + "; ".join(problems)
            + (f"\nbody: {body[:300]!r}" if resp.status != 200 else "")
            + "\n"
            + system.diagnostics()
        )


def _children_seconds() -> float:
    # wrk is the only child the bench waits for during a run, so this is wrk's CPU time.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_seconds() -> float:
    # The bench itself: the harness thread reading the gateway's access log, mostly.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True)
class _Snapshot:
    when: float
    counters: dict[str, int]
    machine: float
    wrk: float
    bench: float
    groups: dict[str, float]

    @classmethod
    def take(cls, admin_url: str | None, groups: dict[str, list[int]]) -> _Snapshot:
        return cls(
            time.monotonic(),
            counters(admin_url, _COUNTERS) if admin_url else {},
            cpu.machine_busy_seconds(),
            _children_seconds(),
            _self_seconds(),
            cpu.group_seconds(groups),
        )

    def responses(self, classes: str = "12345") -> int:
        return sum(self.counters.get(f"http.ai_gateway.downstream_rq_{c}xx", 0) for c in classes)

    def extproc_messages(self) -> int:
        return sum(v for k, v in self.counters.items() if k.endswith("ext_proc.stream_msgs_sent"))


def _cpu_seconds(before: _Snapshot, after: _Snapshot) -> dict[str, float]:
    """CPU seconds by group between two snapshots; ``rest`` is whatever no group accounts for."""
    per = {g: after.groups[g] - before.groups[g] for g in after.groups}
    per["wrk"] = after.wrk - before.wrk
    per["bench"] = after.bench - before.bench
    machine = after.machine - before.machine
    per["rest"] = max(0.0, machine - sum(per.values()))
    return {"machine": machine, **per}


def _other_cores(before: _Snapshot, after: _Snapshot) -> float:
    """Cores busy with something other than the bench's processes between two snapshots."""
    seconds = after.when - before.when
    return _cpu_seconds(before, after)["rest"] / seconds if seconds > 0 else 0.0


def _one_run(
    wrk: str,
    system: System,
    scenario: Scenario,
    url: str,
    script: Path,
    settings: Settings,
    shared: dict[str, list[int]],
) -> Measurement:
    """Throughput at N connections then latency at 1, with CPU and noise accounting."""
    groups = {**system.processes(), **shared}

    def snapshot() -> _Snapshot:
        try:
            return _Snapshot.take(system.admin_url, groups)
        except OSError as exc:
            raise SystemDied(
                f"{system.name} / {scenario.name}: its Envoy admin stopped answering ({exc})\n"
                + system.diagnostics()
            ) from None

    before = snapshot()
    throughput = run_wrk(wrk, url, script, settings.connections, settings.duration)
    after = snapshot()
    system.after_phase()
    # Envoy's count of answered requests if there is an Envoy in front, else wrk's (wrk leaves
    # a few in flight at the end, which Envoy does count).
    answered = after.responses() - before.responses() if system.admin_url else throughput.requests
    answered = max(1, answered)
    msgs = after.extproc_messages() - before.extproc_messages()
    latency = run_wrk(wrk, url, script, 1, settings.latency_duration)
    final = snapshot()
    system.after_phase()
    if system.admin_url:
        non_2xx = final.responses("1345") - before.responses("1345")
    else:
        non_2xx = throughput.http_errors + latency.http_errors
    return Measurement(
        scenario=scenario.name,
        system=system.name,
        throughput=throughput,
        latency=latency,
        non_2xx=non_2xx,
        cpu_us_per_request={g: s * 1e6 / answered for g, s in _cpu_seconds(before, after).items()},
        extproc_msgs_per_request=msgs / answered if msgs else None,
        other_cores=max(_other_cores(before, after), _other_cores(after, final)),
    )


def measure(
    wrk: str,
    system: System,
    scenario: Scenario,
    settings: Settings,
    shared_groups: dict[str, list[int]],
    workdir: Path,
) -> Measurement:
    """Warm-up, then the measured runs; a run disturbed by other work is run again (up to
    ``settings.retries`` times) and the least disturbed run is kept."""
    target = system.target(scenario)
    script = workdir / f"{system.name}-{scenario.key}.lua".replace(" ", "_")
    script.write_text(lua_script(target.body, target.headers))
    url = system.url + target.path
    label = f"{scenario.name} / {system.name}"
    conns = settings.connections
    if settings.warmup >= 1:
        log(f"{label}: warm-up {settings.warmup:g}s @{conns}")
        run_wrk(wrk, url, script, conns, settings.warmup)
    system.after_phase()

    runs: list[Measurement] = []
    for attempt in range(1 + settings.retries):
        again = f" (again: {runs[-1].other_cores:.2f} cores of other work)" if attempt else ""
        log(
            f"{label}: throughput {settings.duration:g}s @{conns},"
            f" latency {settings.latency_duration:g}s @1{again}"
        )
        m = _one_run(wrk, system, scenario, url, script, settings, shared_groups)
        sockets = m.throughput.socket_errors + m.latency.socket_errors
        if m.non_2xx or sockets or m.throughput.http_errors or m.latency.http_errors:
            log(f"{label}: WARNING {m.non_2xx} non-2xx responses, {sockets} socket errors")
        runs.append(m)
        if m.other_cores <= settings.noise_limit or attempt == settings.retries:
            break
        if settings.reruns_left <= 0:
            log(f"{label}: disturbed ({m.other_cores:.2f} cores of other work); no re-runs left")
            break
        # Running again only helps if the other work has stopped: look before trying.
        now = background_load(1.0)
        if now > settings.noise_limit:
            log(
                f"{label}: disturbed ({m.other_cores:.2f} cores of other work) and the machine"
                f" is still busy ({now:.2f} cores): keeping this run"
            )
            break
        settings.reruns_left -= 1
    best = min(runs, key=lambda m: m.other_cores)
    return dataclasses.replace(best, runs=len(runs))


def background_load(seconds: float = 2.0) -> float:
    """Busy fraction of the whole machine while the bench sends nothing (0..nproc)."""
    start = cpu.machine_busy_seconds()
    time.sleep(seconds)
    return (cpu.machine_busy_seconds() - start) / seconds
