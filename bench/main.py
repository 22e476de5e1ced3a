"""``make bench``: the gateway against bare Envoy, LiteLLM and Portkey; same upstream, one run.

Order of a run: start the upstreams, the gateway (``ai-gateway run`` through the test harness)
and bare Envoy; check that each answers one request of each scenario right; for each scenario
and system: warm-up, throughput at N connections, latency at 1 connection; then time to first
token and memory with many open streams. Then each peer in turn (installed on first use under
``bench/.cache``): started, checked, measured the same way, stopped. Progress goes to stderr; the
markdown report to stdout and ``bench/results/latest.md``, the chart to ``latest.png``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from bench import cpu
from bench.bootstraps import bare_bootstrap, floor_bootstrap, upstream_bootstrap
from bench.measure import (
    Settings,
    System,
    Target,
    background_load,
    log,
    measure,
    sanity_check,
)
from bench.payloads import (
    BEDROCK_ACCESS_KEY,
    BEDROCK_MODEL_ID,
    BEDROCK_REGION,
    SCENARIO_KEYS,
    Scenario,
    all_scenarios,
    hold_scenario,
)
from bench.peers import (
    CACHE,
    HONO_NODE_SERVER,
    LITELLM_VERSION,
    PORTKEY_VERSION,
    LiteLLMProxy,
    PeerUnavailable,
    PortkeyGateway,
    Upstreams,
    check_loopback,
    litellm_config,
    litellm_python,
    peer_system,
    portkey_entry,
)
from bench.processes import (
    BenchError,
    EnvoyProcess,
    ManagedProcess,
    SystemDied,
    admin_get,
    port_open,
    server_info,
)
from bench.records import (
    BARE,
    FLOOR,
    FLOOR_2,
    GATEWAY,
    GATEWAY_ENVOY,
    LITELLM,
    PORTKEY,
    SYSTEMS,
    Results,
    RunInfo,
)
from bench.report import chart_spec, git_commit, machine_summary, render_markdown
from bench.streams import hold_streams
from bench.ttft import measure_ttft
from bench.wrk import ensure_wrk, wrk_version
from extproc import __version__
from extproc.config import parse_config
from tests.harness import Gateway, free_port

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.md"
KEY_ENV = "BENCH_API_KEY"
MASTER_KEY_ENV = "BENCH_LITELLM_MASTER_KEY"
AWS_KEY_ENV = "BENCH_AWS_ACCESS_KEY_ID"
AWS_SECRET_ENV = "BENCH_AWS_SECRET_ACCESS_KEY"
# The gateway strips the client's credential and adds the provider's; sending one (a wrong one
# for the upstream) makes every request prove that, not only the sanity check.
CLIENT_KEY = "sk-bench-client-not-for-upstream"
# The held streams' upstream sends an event every few seconds: every stream stays open for
# longer than the bench needs to open them all and sample memory, which then closes them.
HOLD_GAP_MS = 3000
# What bare Envoy sends in the Bedrock scenario: a SigV4-shaped header the upstream accepts
# (it checks the key id, not the signature). The gateway computes a real signature instead.
_BARE_SIGV4 = {
    "Authorization": f"AWS4-HMAC-SHA256 Credential={BEDROCK_ACCESS_KEY}/20250101/"
    f"{BEDROCK_REGION}/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date,"
    " Signature=" + "0" * 64,
    "X-Amz-Date": "20250101T000000Z",
}


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _choices(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {allowed}")
    return chosen


SYSTEM_KEYS = ("bare", "floor", "floor-2", "gateway", "gateway-envoy", "litellm", "portkey")
_SYSTEM_NAMES = dict(zip(SYSTEM_KEYS, SYSTEMS, strict=True))
# Started by the bench, measured side by side.
_OWN = (BARE, FLOOR, FLOOR_2, GATEWAY, GATEWAY_ENVOY)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])

    def number(flag: str, env: str, default: float, help_: str, kind: type = float) -> None:
        p.add_argument(
            flag, type=kind, default=kind(_env_number(env, default)), help=f"{help_} (env {env})"
        )

    number("--duration", "BENCH_DURATION", 8, "seconds of each throughput run; default 8")
    number(
        "--latency-duration",
        "BENCH_LATENCY_DURATION",
        5,
        "seconds of each 1-connection latency run; default 5",
    )
    number("--warmup", "BENCH_WARMUP", 2, "seconds of warm-up before each case; default 2")
    number("--connections", "BENCH_CONNECTIONS", 32, "connections of throughput runs", int)
    number(
        "--workers",
        "BENCH_WORKERS",
        0,
        "gateway sidecar workers; default 0 = one per core, as `ai-gateway run` does",
        int,
    )
    number(
        "--paced-gap-ms",
        "BENCH_PACED_GAP_MS",
        1,
        "gap between the events of the paced stream scenario; 0 leaves that scenario out",
    )
    number(
        "--ttft-samples",
        "BENCH_TTFT_SAMPLES",
        200,
        "time-to-first-token samples per stream scenario and system; 0 skips",
        int,
    )
    number(
        "--streams",
        "BENCH_STREAMS",
        1000,
        "concurrent open streams of the memory test; 0 skips it",
        int,
    )
    number("--hold-seconds", "BENCH_HOLD_SECONDS", 3, "seconds the open streams are held")
    number(
        "--retries",
        "BENCH_RETRIES",
        1,
        "extra runs of a case disturbed by other work on the machine (only if the machine has"
        " calmed down, at most 6 in a run); default 1",
        int,
    )
    number(
        "--noise-limit",
        "BENCH_NOISE_LIMIT",
        0.5,
        "cores of other work during a case above which it is run again; default 0.5",
    )
    number(
        "--litellm-workers",
        "BENCH_LITELLM_WORKERS",
        0,
        "LiteLLM uvicorn workers; default 0 = as many as the gateway's sidecar workers",
        int,
    )
    p.add_argument(
        "--scenarios",
        type=lambda v: _choices(v, SCENARIO_KEYS, "scenarios"),
        default=_choices(
            os.environ.get("BENCH_SCENARIOS", ",".join(SCENARIO_KEYS)), SCENARIO_KEYS, "scenarios"
        ),
        help=f"comma-separated, of {','.join(SCENARIO_KEYS)}; default all (env BENCH_SCENARIOS)",
    )
    p.add_argument(
        "--systems",
        type=lambda v: _choices(v, SYSTEM_KEYS, "systems"),
        default=_choices(
            os.environ.get("BENCH_SYSTEMS", ",".join(SYSTEM_KEYS)), SYSTEM_KEYS, "systems"
        ),
        help=f"comma-separated, of {','.join(SYSTEM_KEYS)}; default all (env BENCH_SYSTEMS)",
    )
    p.add_argument(
        "--no-peers",
        action="store_true",
        default=os.environ.get("BENCH_NO_PEERS", "") not in ("", "0"),
        help="leave LiteLLM and Portkey out (env BENCH_NO_PEERS=1)",
    )
    p.add_argument(
        "--portkey-version",
        default=os.environ.get("BENCH_PORTKEY_VERSION", PORTKEY_VERSION),
        help=f"@portkey-ai/gateway version; default {PORTKEY_VERSION} (env BENCH_PORTKEY_VERSION)",
    )
    p.add_argument(
        "--no-chart",
        action="store_true",
        default=os.environ.get("BENCH_NO_CHART", "") not in ("", "0"),
        help="no PNG chart (env BENCH_NO_CHART=1)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=Path(os.environ.get("BENCH_OUTPUT", DEFAULT_OUTPUT)),
        help="markdown report file; default bench/results/latest.md (env BENCH_OUTPUT);"
        " the chart goes next to it (.png)",
    )
    args = p.parse_args(argv)
    if args.no_peers:
        args.systems = [s for s in args.systems if s not in ("litellm", "portkey")]
    if args.paced_gap_ms <= 0:
        args.scenarios = [s for s in args.scenarios if s != "paced"]
    # Bounded: a typo must not start an hour of load.
    if not (1 <= args.duration <= 600 and 1 <= args.latency_duration <= 600):
        p.error("durations must be between 1 (wrk's resolution) and 600 seconds")
    if not 0 <= args.warmup <= 600:
        p.error("--warmup must be between 0 and 600 seconds")
    if not 1 <= args.connections <= 1000:
        p.error("--connections must be between 1 and 1000")
    if not 0 <= args.paced_gap_ms <= 100:
        p.error("--paced-gap-ms must be between 0 and 100")
    if not 0 <= args.ttft_samples <= 10_000:
        p.error("--ttft-samples must be between 0 and 10000")
    if not 0 <= args.streams <= 5000:
        p.error("--streams must be between 0 and 5000")
    if not 0 <= args.hold_seconds <= 60:
        p.error("--hold-seconds must be between 0 and 60")
    if not 0 <= args.retries <= 3:
        p.error("--retries must be between 0 and 3")
    if not (args.scenarios and args.systems):
        p.error("nothing to measure: no scenario or no system selected")
    return args


def gateway_config(upstreams: Upstreams, items: list[Scenario]) -> dict[str, Any]:
    """One backend and one model per scenario, each backend on its own upstream prefix."""
    backends: dict[str, dict[str, Any]] = {}
    models: list[dict[str, Any]] = []
    for s in items:
        if s.bedrock:
            backends[s.model] = {
                "schema": "aws_bedrock",
                "url": f"http://127.0.0.1:{upstreams.ports[s.upstream]}",
                "region": BEDROCK_REGION,
                "access_key_id": f"${{{AWS_KEY_ENV}}}",
                "secret_access_key": f"${{{AWS_SECRET_ENV}}}",
            }
            models.append(
                {"name": s.model, "backends": [{"backend": s.model, "model": BEDROCK_MODEL_ID}]}
            )
        else:
            backends[s.model] = {
                "schema": "openai",
                "url": upstreams.base_url(s),
                "api_key": f"${{{KEY_ENV}}}",
            }
            models.append({"name": s.model, "backends": [{"backend": s.model}]})
    return {"backends": backends, "models": models}


def _gateway_processes(gw: Gateway) -> dict[str, list[int]]:
    # The harness keeps its process private; every process of this gateway (supervisor,
    # workers, Envoy) has an argument inside the harness's directory, which is public.
    found = cpu.processes_with_arg_under(gw.config_path.parent)
    envoy = [pid for pid, argv in found.items() if Path(argv[0]).name == "envoy"]
    return {"envoy": envoy, "sidecar": [pid for pid in found if pid not in envoy]}


def _distinct_ports(n: int) -> list[int]:
    # free_port() may hand out the same port twice in a row; the harness picks its own too.
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same path as Ctrl-C: unwind, and let every `with` stop its process.
    raise KeyboardInterrupt


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ai-gateway-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Bench:
    """One run: what is selected, where things listen, and what has been measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.wrk = ensure_wrk()
        self.scenarios = [s for s in all_scenarios() if s.key in args.scenarios]
        self.hold = hold_scenario()
        self.systems = [_SYSTEM_NAMES[k] for k in args.systems]
        self.api_key = f"sk-bench-{secrets.token_hex(8)}"
        self.env = {
            KEY_ENV: self.api_key,
            AWS_KEY_ENV: BEDROCK_ACCESS_KEY,
            AWS_SECRET_ENV: secrets.token_urlsafe(30),
        }
        (
            self.up_port,
            self.up_admin,
            self.paced_port,
            self.hold_port,
            self.bare_port,
            self.bare_admin,
            self.litellm_port,
            self.portkey_port,
            self.floor_port,
            self.floor_admin,
            self.floor2_port,
            self.floor2_admin,
        ) = _distinct_ports(12)
        self.upstreams = Upstreams(
            {"envoy": self.up_port, "paced": self.paced_port, "hold": self.hold_port}
        )
        self.settings = Settings(
            args.warmup,
            args.duration,
            args.latency_duration,
            args.connections,
            args.retries,
            args.noise_limit,
        )
        self.results = Results()
        self.unavailable: dict[str, str] = {}
        self.failures: dict[tuple[str, str], str] = {}  # (system, scenario) -> why not measured
        self.notes: list[str] = []
        self.versions: dict[str, str] = {}
        self.shared: dict[str, list[int]] = {}
        self.sidecar_workers = 0
        self.floor_workers = 0
        self.concurrency = max(1, (os.cpu_count() or 2) // 2)
        self.idle = 0.0
        self.litellm_workers = 0
        self.workdir = Path(tempfile.gettempdir())  # the run's own directory once it starts

    # --- what runs where ---------------------------------------------------------------------

    @property
    def configured(self) -> list[Scenario]:
        """Every scenario the systems are configured for: measured ones and the held streams."""
        return self.scenarios + ([self.hold] if self.args.streams else [])

    @property
    def stream_scenarios(self) -> list[Scenario]:
        return [s for s in self.scenarios if s.streaming] if self.args.ttft_samples else []

    def estimate_seconds(self) -> float:
        per_case: float = self.args.warmup + self.args.duration + self.args.latency_duration + 1
        cases = sum(
            1 for s in self.scenarios for system in self.systems if system in _OWN or s.peers
        )
        ttft = len(self.stream_scenarios) * len(self.systems) * 6
        streams = (15 if self.args.streams else 0) * len(self.systems)
        peers = 30 * sum(s in (LITELLM, PORTKEY) for s in self.systems)
        return cases * per_case + ttft + streams + peers + 20

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> RunInfo:
        est = self.estimate_seconds()
        log(
            f"{len(self.scenarios)} scenarios x {len(self.systems)} systems;"
            f" about {est / 60:.0f} minutes (more on the first run: peers are installed)"
        )
        with contextlib.ExitStack() as stack:
            workdir = self.workdir = stack.enter_context(_workdir())
            self._start_upstreams(stack, workdir)
            own = [s for s in self.systems if s in _OWN]
            if own:
                systems = self._start_own(stack, workdir, own)
                self._phase(systems, own_systems=True)
            for peer in (LITELLM, PORTKEY):
                if peer in self.systems:
                    self._peer_phase(peer, workdir)
        return self._info()

    def _start_upstreams(self, stack: contextlib.ExitStack, workdir: Path) -> None:
        log("starting the upstreams")
        boot = upstream_bootstrap(self.up_port, self.up_admin, self.api_key, self.configured)
        upstream = stack.enter_context(EnvoyProcess("upstream", boot, workdir, self.up_admin, 1))
        procs: list[ManagedProcess] = [upstream]
        gaps = {"paced": self.args.paced_gap_ms, "hold": HOLD_GAP_MS}
        for s in self.configured:
            if s.upstream in gaps:
                port = self.upstreams.ports[s.upstream]
                argv = [sys.executable, "-m", "bench.paced", str(port)]
                argv += [s.upstream_path, self.api_key, f"{gaps[s.upstream]:g}"]
                proc = ManagedProcess(
                    f"{s.upstream} upstream", argv, functools.partial(port_open, port), cwd=REPO
                )
                procs.append(stack.enter_context(proc))
        self.shared = {"upstream": [p.pid for p in procs if p.pid is not None]}
        self.versions["Envoy"] = str(server_info(upstream.admin_url).get("version", "?/?")).split(
            "/"
        )[1]

    def _start_own(
        self, stack: contextlib.ExitStack, workdir: Path, own: list[str]
    ) -> list[System]:
        config = gateway_config(self.upstreams, self.configured)
        gateways = [
            self._start_gateway(stack, config, GATEWAY) if GATEWAY in own else None,
            self._start_gateway(stack, {**config, "accounting": {"mode": "envoy"}}, GATEWAY_ENVOY)
            if GATEWAY_ENVOY in own
            else None,
        ]
        systems: list[System] = []
        if BARE in own:
            log("starting bare Envoy")
            listen = {"host": "127.0.0.1", "port": self.bare_port}
            bare_config = parse_config({**config, "listen": listen}, env=self.env)
            prefixes = {s.model: s.upstream_prefix for s in self.configured}
            boot = bare_bootstrap(bare_config, self.bare_port, self.bare_admin, prefixes)
            bare = stack.enter_context(
                EnvoyProcess("bare", boot, workdir, self.bare_admin, self.concurrency)
            )
            systems.append(self._bare_system(bare))
        if FLOOR in own:
            systems.append(self._start_floor(stack, workdir, config, hand_off=False))
        if FLOOR_2 in own:
            systems.append(self._start_floor(stack, workdir, config, hand_off=True))
        return systems + [g for g in gateways if g is not None]

    def _start_floor(
        self, stack: contextlib.ExitStack, workdir: Path, config: dict[str, Any], hand_off: bool
    ) -> System:
        workers = self.sidecar_workers or self.args.workers or (os.cpu_count() or 1)
        self.floor_workers = workers
        name, port, admin = (
            (FLOOR_2, self.floor2_port, self.floor2_admin)
            if hand_off
            else (FLOOR, self.floor_port, self.floor_admin)
        )
        log(f"starting the {name} (bare Envoy + {workers} do-nothing ext_proc workers)")
        sockets = workdir / ("floor-2" if hand_off else "floor")
        sockets.mkdir()
        listen = {"host": "127.0.0.1", "port": port}
        sidecar = {"socket_dir": str(sockets), "workers": workers}
        floor_config = parse_config({**config, "listen": listen, "sidecar": sidecar}, env=self.env)
        pids: list[int] = []
        for i in range(workers):
            socket = sockets / f"worker-{i}.sock"
            argv = [sys.executable, "-m", "bench.floor", f"unix:{socket}"]
            argv += ["--hand-off"] if hand_off else []
            proc = ManagedProcess(f"{name} worker {i}", argv, socket.exists, cwd=REPO)
            pids.append(stack.enter_context(proc).pid or 0)
        prefixes = {s.model: s.upstream_prefix for s in self.configured}
        boot = floor_bootstrap(floor_config, port, admin, prefixes)
        label = "floor-2" if hand_off else "floor"
        envoy = stack.enter_context(EnvoyProcess(label, boot, workdir, admin, self.concurrency))
        return self._bare_system(envoy, name, port, sidecar=pids)

    def _start_gateway(
        self, stack: contextlib.ExitStack, config: dict[str, Any], name: str
    ) -> System:
        log(f"starting the {name} (ai-gateway run)")
        # Its own stack, so that a gateway that crashed can be replaced by a fresh one.
        own = contextlib.ExitStack()
        stack.callback(own.close)
        try:
            gw = own.enter_context(Gateway(config, env=self.env, workers=self.args.workers))
        except RuntimeError as exc:  # the harness's "did not start", with its output
            raise BenchError(str(exc)) from None
        own.callback(shutil.rmtree, gw.config_path.parent, ignore_errors=True)
        info = server_info(gw.admin_url)
        # Bare Envoy gets as many worker threads as the gateway's Envoy (1 on 2 cores).
        self.concurrency = int(info["command_line_options"]["concurrency"])
        argvs = cpu.processes_with_arg_under(gw.config_path.parent).values()
        self.sidecar_workers = sum("worker" in argv for argv in argvs)

        def restart() -> System:
            own.close()
            return self._start_gateway(stack, config, name)

        kept: collections.deque[str] = collections.deque(maxlen=200)

        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"}
        return System(
            name=name,
            url=gw.url,
            target=lambda s: Target(s.client_path, headers, s.request),
            processes=lambda: _gateway_processes(gw),
            diagnostics=lambda: "gateway output:\n" + "".join(gw.output[-30:]),
            exact=lambda s: not s.bedrock,
            admin_url=gw.admin_url,
            # The harness keeps every line the gateway prints (its access log): dropping
            # them between phases keeps a long run's memory flat; the other lines (warnings,
            # a crash's backtrace) are kept for the report.
            after_phase=lambda: _drop_access_log(gw.output, kept),
            memory_groups=lambda: _gateway_processes(gw),
            alive=lambda: _admin_live(gw.admin_url),
            restart=restart,
            death=lambda: _death_reason([*kept, *gw.output]),
        )

    def _bare_system(
        self,
        bare: EnvoyProcess,
        name: str = BARE,
        port: int | None = None,
        sidecar: list[int] | None = None,
    ) -> System:
        """Bare Envoy, or (with ``sidecar`` workers) the Python floor built on it."""

        def target(s: Scenario) -> Target:
            headers = {"Content-Type": "application/json"}
            if s.bedrock:
                headers.update(_BARE_SIGV4)
            else:
                headers["Authorization"] = f"Bearer {self.api_key}"
            return Target(s.upstream_path, headers, s.bare_request or s.request)

        def envoy() -> dict[str, list[int]]:
            return {"envoy": [bare.pid or 0], **({"sidecar": sidecar} if sidecar else {})}

        system = System(
            name=name,
            url=f"http://127.0.0.1:{port or self.bare_port}",
            target=target,
            processes=envoy,
            diagnostics=lambda: f"{name} output:\n" + "".join(bare.tail),
            exact=lambda s: True,
            admin_url=bare.admin_url,
            memory_groups=envoy,
            alive=bare.alive,
            restart=lambda: _restarted(bare, system),
            death=lambda: _death_reason(list(bare.tail)),
        )
        return system

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
            self.failures[(system.name, scenario)] = f"crashed ({reason})"
            self.notes.append(
                f"{system.name} crashed during {scenario}: {reason}; it was restarted for the"
                " rest of the run"
            )
            if system.restart is None:
                raise BenchError(f"{system.name} died and cannot be restarted") from None
            systems[index] = system.restart()
            check = next((s for s in self.scenarios if system.supports(s)), None)
            if check is not None:
                sanity_check(systems[index], check)

    def _phase(self, systems: list[System], own_systems: bool) -> None:
        """Sanity checks, then every measurement of ``systems``."""
        runnable: dict[str, list[Scenario]] = {}
        for system in systems:
            runnable[system.name] = []
            for scenario in self.scenarios:
                if not system.supports(scenario):
                    continue
                if own_systems:
                    sanity_check(system, scenario)  # a failure here stops the bench
                    runnable[system.name].append(scenario)
                    continue
                try:
                    sanity_check(system, scenario)
                except BenchError as exc:
                    reason = str(exc).splitlines()[0]
                    log(f"WARNING {reason}; {system.name} skips {scenario.name}")
                    self.failures[(system.name, scenario.name)] = f"sanity check failed: {reason}"
                    continue
                runnable[system.name].append(scenario)
        log("sanity checks passed: " + ", ".join(s.name for s in systems))
        self.idle = max(self.idle, background_load())
        if self.idle > self.args.noise_limit:
            log(f"WARNING: {self.idle:.0%} of a core busy before any load: numbers will be noisy")

        for scenario in self.scenarios:
            for i, system in enumerate(systems):
                if scenario in runnable[system.name]:

                    def throughput(system: System, scenario: Scenario = scenario) -> None:
                        self.results.rows.append(
                            measure(
                                self.wrk, system, scenario, self.settings, self.shared, self.workdir
                            )
                        )

                    self._measure_or_restart(systems, i, scenario.name, throughput)
        for scenario in self.stream_scenarios:
            for i, system in enumerate(systems):
                if scenario in runnable[system.name]:

                    def ttft(system: System, scenario: Scenario = scenario) -> None:
                        n = self.args.ttft_samples
                        log(f"{scenario.name} / {system.name}: time to first token, {n} samples")
                        self.results.ttft.append(measure_ttft(system, scenario, n))
                        system.after_phase()

                    self._measure_or_restart(systems, i, scenario.name, ttft)
        if self.args.streams:
            for i in range(len(systems)):
                self._measure_or_restart(systems, i, self.hold.name, self._hold_streams)

    def _hold_streams(self, system: System) -> None:
        n = self.args.streams
        log(f"{system.name}: opening {n:,} concurrent streams (memory test)")
        result = hold_streams(system, self.hold, n, self.args.hold_seconds)
        peak = ", ".join(f"{g} {m.rss_mb:,.0f} MB" for g, m in result.peak.items())
        log(
            f"{system.name}: {result.opened:,}/{n:,} open after {result.open_seconds:.1f}s;"
            f" peak RSS {peak}"
        )
        self.results.streams.append(result)
        # The system must have survived it: one more request, checked as before.
        time.sleep(1.0)
        if not system.alive():
            raise SystemDied(f"{system.name} exited during the {n:,}-stream test")
        check = next((s for s in self.scenarios if system.supports(s)), None)
        try:
            if check is not None:
                sanity_check(system, check)
        except BenchError as exc:
            self.notes.append(
                f"{system.name} failed a request after the {n:,}-stream test: "
                + str(exc).splitlines()[0]
            )
        system.after_phase()

    def _peer_phase(self, peer: str, workdir: Path) -> None:
        scenarios = [s for s in self.scenarios if s.peers]
        if not scenarios:
            return
        try:
            with contextlib.ExitStack() as stack:
                system = self._start_peer(peer, workdir, stack)
                self._phase([system], own_systems=False)
        except PeerUnavailable as exc:
            log(f"{peer}: not available: {exc}")
            self.unavailable[peer] = str(exc)
        except BenchError as exc:
            reason = str(exc).splitlines()[0]
            log(f"{peer}: not available: {exc}")
            self.unavailable[peer] = reason

    def _start_peer(self, peer: str, workdir: Path, stack: contextlib.ExitStack) -> System:
        if peer == LITELLM:
            python = litellm_python(CACHE)
            self.versions["LiteLLM"] = LITELLM_VERSION
            workers = self.args.litellm_workers or self.sidecar_workers or (os.cpu_count() or 1)
            self.litellm_workers = workers
            log(f"starting the LiteLLM proxy ({workers} workers)")
            config = litellm_config(self.configured, self.upstreams, KEY_ENV, MASTER_KEY_ENV)
            master_key = f"sk-bench-master-{secrets.token_hex(16)}"
            env = {KEY_ENV: self.api_key, MASTER_KEY_ENV: master_key}
            proc: ManagedProcess = LiteLLMProxy(
                python, config, workdir, self.litellm_port, workers, env
            )
            stack.enter_context(proc)
            check_loopback(proc, self.litellm_port)
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {master_key}"}
            return peer_system(
                LITELLM,
                proc,
                f"http://127.0.0.1:{self.litellm_port}",
                lambda s: Target(s.client_path, headers, s.request),
            )
        entry = portkey_entry(CACHE, self.args.portkey_version)
        self.versions["Portkey gateway"] = self.args.portkey_version
        self.versions["Node.js"] = _node_version()
        log("starting the Portkey gateway")
        proc = PortkeyGateway(entry, workdir, self.portkey_port)
        stack.enter_context(proc)
        check_loopback(proc, self.portkey_port)

        def target(s: Scenario) -> Target:
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.api_key}",
                "x-portkey-provider": "openai",
                "x-portkey-custom-host": self.upstreams.base_url(s),
            }
            return Target(s.client_path, headers, s.request)

        return peer_system(PORTKEY, proc, f"http://127.0.0.1:{self.portkey_port}", target)

    # --- the report --------------------------------------------------------------------------

    def _info(self) -> RunInfo:
        self.versions.update(
            {
                "Python": platform.python_version(),
                "wrk": wrk_version(self.wrk).removeprefix("wrk "),
                "ai-gateway": __version__,
            }
        )
        if self.idle > self.args.noise_limit:
            self.notes.append(
                f"The machine was {self.idle:.0%} of a core busy before the load started: other"
                " processes competed for the cores (see `other work` and `rest`)."
            )
        return RunInfo(
            date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            commit=git_commit(REPO),
            machine=machine_summary(),
            versions=self.versions,
            settings=self._settings_lines(),
            connections=self.args.connections,
            scenarios=[s.name for s in self.scenarios],
            names={s.key: s.name for s in self.scenarios},
            peer_scenarios=[s.name for s in self.scenarios if s.peers],
            stream_scenarios=[s.name for s in self.stream_scenarios],
            streams=self.args.streams,
            noise_limit=self.args.noise_limit,
            unavailable=self.unavailable,
            failures=self.failures,
            notes=self.notes,
        )

    def _settings_lines(self) -> list[str]:
        a = self.args
        sizes = ", ".join(
            f"{s.name} {len(s.request)} B -> {len(s.response)} B" for s in self.scenarios
        )
        lines = [
            f"Runs: warm-up {a.warmup:g}s, throughput {a.duration:g}s @{a.connections}"
            f" connections, latency {a.latency_duration:g}s @1 connection; wrk, 1 thread;"
            f" time to first token: {a.ttft_samples} samples per stream scenario; memory:"
            f" {a.streams:,} open streams held {a.hold_seconds:g}s",
            f"Envoy --concurrency: gateway {self.concurrency}, bare {self.concurrency}, upstream 1;"
            f" gateway sidecar workers: {self.sidecar_workers}; machine busy before load:"
            f" {self.idle:.0%} of a core",
            f"Bodies (request -> upstream response): {sizes}",
            "Upstream: Envoy `direct_response` on loopback, no added latency (a stream arrives"
            " in one piece); it answers only requests carrying the provider credential",
            "Bare Envoy: the gateway's own rendered bootstrap minus the ext_proc filters (routes"
            " on the path instead of the x-ai-eg-model header the sidecar sets); the client sends"
            " the provider key",
        ]
        if FLOOR in self.systems:
            lines.append(
                "Python floor: bare Envoy plus one ext_proc filter (request headers, buffered"
                " request body, response headers, streamed response body) to"
                f" {self.floor_workers} workers of `bench/floor.py` that answer every"
                " message with an empty reply: grpc.aio on uvloop, one Unix socket each, the"
                " gateway's sidecar cluster; the cost of the design before any of its work"
            )
        if FLOOR_2 in self.systems:
            lines.append(
                "Python floor, 2 msgs: the same, but each worker ends the stream after the"
                " request body (`bench/floor.py --hand-off`), as the sidecar does for a request"
                " it hands off to Envoy in envoy accounting mode: request headers and body only"
            )
        if any(s.bedrock for s in self.scenarios):
            lines.append(
                "Bedrock: the gateway translates the OpenAI chat request to Converse, signs it"
                " (SigV4) and translates the answer back; the upstream is the same static Envoy,"
                " which checks that a SigV4 Authorization header of the bench's key id arrived"
                " but does not verify the signature (tests/fakes/bedrock.py, which does, would be"
                " the bottleneck). Bare Envoy's and the Python floor's rows there are the"
                " already-translated Converse request sent as is: a reference, not a like-for-like"
                " ratio"
            )
        if any(s.upstream == "paced" for s in self.scenarios):
            lines.append(
                f"Paced stream: a Python (uvloop) upstream writes each of the 20 events"
                f" {a.paced_gap_ms:g} ms apart, so each reaches the proxy on its own as with a real"
                f" provider; its req/s @{a.connections} is capped by the pacing for any system"
            )
        if LITELLM in self.systems:
            lines.append(
                f"LiteLLM: `litellm[proxy]=={LITELLM_VERSION}` in bench/.cache/litellm,"
                f" LITELLM_LOCAL_MODEL_COST_MAP=True, no database, a master key (it refuses to"
                " start without one; clients send it),"
                f" {self.litellm_workers}"
                " uvicorn workers (as many as the gateway's sidecar workers), one `openai/<model>`"
                " entry per scenario with `api_base` on the same upstream and per-token prices"
                " (its cost tracking on), retries off"
            )
        if PORTKEY in self.systems:
            lines.append(
                f"Portkey: `@portkey-ai/gateway@{a.portkey_version}` in bench/.cache/portkey, one"
                " Node.js process as shipped (`--headless`), listen() pinned to 127.0.0.1 by a"
                " launcher of ours; its dependency @hono/node-server pinned to"
                f" {HONO_NODE_SERVER} with an npm override (npm's pick, 1.19, breaks every"
                " stream and embeddings answer: `TypeError: immutable`, a 500);"
                " requests carry `x-portkey-provider: openai` and"
                " `x-portkey-custom-host: <upstream>/v1` and the provider key. Its stream"
                " handler waits 25 ms before passing on a stream's first chunk (a fixed"
                " `setTimeout` in its code): most of its time to first token"
            )
        return lines


def _admin_live(admin_url: str) -> bool:
    try:
        return admin_get(admin_url, "/ready", timeout=2.0).strip() == b"LIVE"
    except OSError:
        return False


def _drop_access_log(output: list[str], kept: collections.deque[str]) -> None:
    lines = output[:]
    del output[: len(lines)]  # the harness's thread appends meanwhile: keep those
    kept.extend(line for line in lines if not line.startswith("{"))


def _death_reason(output: list[str]) -> str:
    """What a crashed system printed about it: Envoy's fatal signal, the supervisor's line."""
    found = []
    for line in output:
        text = line.strip()
        if "Caught " in text and "backtrace" in text:
            found.append(text.rpartition("] ")[2])
        elif "exited with status" in text:
            found.append(text.partition(": ")[2] or text)
    return "; ".join(dict.fromkeys(found))[:300]


def _restarted(proc: ManagedProcess, system: System) -> System:
    proc.stop()
    proc.__enter__()
    return system


def _node_version() -> str:
    try:
        out = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip().lstrip("v") or "?"


PLOT_VENV = CACHE / "plot"


def _plot_python() -> Path | None:
    """A python with matplotlib: bench/.cache/plot, created on first use; None if it fails."""
    python = PLOT_VENV / "bin" / "python"
    probe = [str(python), "-c", "import matplotlib"]
    if (
        python.exists()
        and subprocess.run(probe, capture_output=True, timeout=60, check=False).returncode == 0
    ):
        return python
    log(f"installing matplotlib into {PLOT_VENV} for the chart (once)")
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(PLOT_VENV)],
            capture_output=True,
            timeout=300,
            check=True,
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "matplotlib"],
            capture_output=True,
            timeout=900,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"no chart: matplotlib could not be installed ({exc})")
        return None
    return python


def write_chart(spec: dict[str, Any], out: Path) -> bool:
    python = _plot_python()
    if python is None:
        return False
    spec_file = out.with_suffix(".json.tmp")
    spec_file.write_text(json.dumps(spec))
    try:
        script = Path(__file__).resolve().parent / "chart.py"
        done = subprocess.run(
            [str(python), str(script), str(spec_file), str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        spec_file.unlink(missing_ok=True)
    if done.returncode != 0:
        log(f"no chart: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.monotonic()
    bench: Bench | None = None
    try:
        bench = Bench(args)
        info = bench.run()
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; every process the bench started has been stopped")
        return 130
    info.settings.append(f"Whole run: {(time.monotonic() - started) / 60:.1f} minutes")
    report = render_markdown(info, bench.results)
    print(report, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    log(f"report written to {args.output}")
    if not args.no_chart:
        png = args.output.with_suffix(".png")
        if write_chart(chart_spec(info, bench.results), png):
            log(f"chart written to {png}")
    return 0
