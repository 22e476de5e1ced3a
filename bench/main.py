"""``make bench``: the gateway against bare Envoy, same upstream, same requests, one run.

Order of a run: start the upstreams, the gateway (``ai-gateway run`` through the test harness)
and bare Envoy; check that each answers one request of each scenario exactly right; then for
each scenario and system: warm-up, throughput at N connections, latency at 1 connection.
Progress goes to stderr; the markdown report to stdout and to ``bench/results/latest.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from bench import cpu
from bench.bootstraps import bare_bootstrap, upstream_bootstrap
from bench.measure import Settings, System, background_load, log, measure, sanity_check
from bench.payloads import CHAT_PATH, Scenario, scenarios
from bench.processes import BenchError, EnvoyProcess, ManagedProcess, port_open, server_info
from bench.report import (
    BARE,
    GATEWAY,
    Measurement,
    RunInfo,
    git_commit,
    machine_summary,
    render_markdown,
)
from bench.wrk import ensure_wrk, wrk_version
from extproc import __version__
from extproc.config import parse_config
from tests.harness import Gateway, free_port

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.md"
KEY_ENV = "BENCH_API_KEY"
# The gateway strips the client's credential and adds the provider's; sending one (a wrong one
# for the upstream) makes every request prove that, not only the sanity check.
CLIENT_KEY = "sk-bench-client-not-for-upstream"


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])

    def number(flag: str, env: str, default: float, help_: str, kind: type = float) -> None:
        p.add_argument(
            flag, type=kind, default=kind(_env_number(env, default)), help=f"{help_} (env {env})"
        )

    number("--duration", "BENCH_DURATION", 10, "seconds of each throughput run; default 10")
    number(
        "--latency-duration",
        "BENCH_LATENCY_DURATION",
        0,
        "seconds of each 1-connection latency run; default: --duration",
    )
    number("--warmup", "BENCH_WARMUP", 3, "seconds of warm-up before each system's runs; default 3")
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
    p.add_argument(
        "--output",
        type=Path,
        default=Path(os.environ.get("BENCH_OUTPUT", DEFAULT_OUTPUT)),
        help="markdown report file; default bench/results/latest.md (env BENCH_OUTPUT)",
    )
    args = p.parse_args(argv)
    args.latency_duration = args.latency_duration or args.duration
    # Bounded: a typo must not start an hour of load.
    if not (1 <= args.duration <= 600 and 1 <= args.latency_duration <= 600):
        p.error("durations must be between 1 (wrk's resolution) and 600 seconds")
    if not 0 <= args.warmup <= 600:
        p.error("--warmup must be between 0 and 600 seconds")
    if not 1 <= args.connections <= 1000:
        p.error("--connections must be between 1 and 1000")
    if not 0 <= args.paced_gap_ms <= 100:
        p.error("--paced-gap-ms must be between 0 and 100")
    return args


def gateway_config(ports: dict[str, int], items: list[Scenario]) -> dict[str, Any]:
    """One backend and one model per scenario, each backend on its own upstream prefix."""
    return {
        "backends": {
            s.model: {
                "schema": "openai",
                "url": f"http://127.0.0.1:{ports[s.name]}{s.upstream_prefix}",
                "api_key": f"${{{KEY_ENV}}}",
            }
            for s in items
        },
        "models": [{"name": s.model, "backends": [{"backend": s.model}]} for s in items],
    }


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


def run(args: argparse.Namespace) -> str:
    wrk = ensure_wrk()
    items = scenarios(paced=args.paced_gap_ms > 0)
    api_key = f"sk-bench-{secrets.token_hex(8)}"
    env = {KEY_ENV: api_key}
    up_port, up_admin, paced_port, bare_port, bare_admin = _distinct_ports(5)
    ports = {s.name: paced_port if s.paced else up_port for s in items}
    config = gateway_config(ports, items)
    settings = Settings(args.warmup, args.duration, args.latency_duration, args.connections)
    rows: list[Measurement] = []

    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(_workdir())
        log("starting the upstreams, the gateway and bare Envoy")
        upstream_boot = upstream_bootstrap(up_port, up_admin, api_key, items)
        upstream = EnvoyProcess("upstream", upstream_boot, workdir, up_admin, 1)
        upstreams: list[ManagedProcess] = [stack.enter_context(upstream)]
        for paced in (s for s in items if s.paced):
            argv = [sys.executable, "-m", "bench.paced", str(paced_port)]
            argv += [paced.upstream_prefix + CHAT_PATH, api_key, f"{args.paced_gap_ms:g}"]
            proc = ManagedProcess("paced upstream", argv, lambda: port_open(paced_port))
            upstreams.append(stack.enter_context(proc))
        try:
            gw = stack.enter_context(Gateway(config, env=env, workers=args.workers))
        except RuntimeError as exc:  # the harness's "did not start", with its output
            raise BenchError(str(exc)) from None
        stack.callback(shutil.rmtree, gw.config_path.parent, ignore_errors=True)
        gw_info = server_info(gw.admin_url)
        # Bare Envoy gets as many worker threads as the gateway's Envoy (1 on 2 cores).
        concurrency = int(gw_info["command_line_options"]["concurrency"])
        listen = {"host": "127.0.0.1", "port": bare_port}
        bare_config = parse_config({**config, "listen": listen}, env=env)
        prefixes = {s.model: s.upstream_prefix for s in items}
        bare_boot = bare_bootstrap(bare_config, bare_port, bare_admin, prefixes)
        bare_envoy = EnvoyProcess("bare", bare_boot, workdir, bare_admin, concurrency)
        bare = stack.enter_context(bare_envoy)

        systems = [
            System(
                name=BARE,
                url=f"http://127.0.0.1:{bare_port}",
                admin_url=bare.admin_url,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
                path=lambda s: s.upstream_prefix + CHAT_PATH,
                processes=lambda: {"envoy": [bare.pid or 0]},
                diagnostics=lambda: "bare Envoy output:\n" + "".join(bare.tail),
            ),
            System(
                name=GATEWAY,
                url=gw.url,
                admin_url=gw.admin_url,
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {CLIENT_KEY}",
                },
                path=lambda s: "/v1" + CHAT_PATH,
                processes=lambda: _gateway_processes(gw),
                diagnostics=lambda: "gateway output:\n" + "".join(gw.output[-30:]),
                # The harness keeps every line the gateway prints (its access log): dropping
                # them between phases keeps a long run's memory flat.
                after_phase=gw.output.clear,
            ),
        ]
        for scenario in items:
            for system in systems:
                sanity_check(system, scenario)
        log("sanity checks passed: both systems return the upstream's exact bodies")
        idle = background_load()
        if idle > 0.1:
            log(f"WARNING: {idle:.0%} of a core busy before any load: numbers will be noisy")

        shared = {"upstream": [u.pid for u in upstreams if u.pid is not None]}
        for scenario in items:
            for system in systems:
                rows.append(measure(wrk, system, scenario, settings, shared, workdir))

        gw_argvs = cpu.processes_with_arg_under(gw.config_path.parent).values()
        workers = sum("worker" in argv for argv in gw_argvs)
        info = RunInfo(
            date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            commit=git_commit(REPO),
            machine=machine_summary(),
            versions={
                "Envoy": str(gw_info.get("version", "?/?")).split("/")[1],
                "Python": platform.python_version(),
                "wrk": wrk_version(wrk).removeprefix("wrk "),
                "ai-gateway": __version__,
            },
            settings=_settings_lines(args, items, concurrency, workers, idle),
            connections=args.connections,
        )
        if idle > 0.1:
            info.notes.append(
                f"The machine was {idle:.0%} of a core busy before the load started: other"
                " processes competed for the cores (see `rest`), so these numbers are noisy."
            )
    return render_markdown(info, rows)


def _settings_lines(
    args: argparse.Namespace, items: list[Scenario], concurrency: int, workers: int, idle: float
) -> list[str]:
    sizes = ", ".join(f"{s.name} {len(s.request)} B -> {len(s.response)} B" for s in items)
    lines = [
        f"Runs: warm-up {args.warmup:g}s, throughput {args.duration:g}s @{args.connections}"
        f" connections, latency {args.latency_duration:g}s @1 connection; wrk, 1 thread",
        f"Envoy --concurrency: gateway {concurrency}, bare {concurrency}, upstream 1;"
        f" gateway sidecar workers: {workers}; machine busy before load: {idle:.0%} of a core",
        f"Bodies (request -> response): {sizes}",
        "Upstream: Envoy `direct_response` on loopback, no added latency: the stream arrives"
        " in one piece",
        "Bare Envoy: the gateway's own rendered bootstrap minus the ext_proc filters (routes on"
        " the path instead of the x-ai-eg-model header the sidecar sets)",
    ]
    if any(s.paced for s in items):
        lines.append(
            f"Paced stream: a Python (uvloop) upstream writes each of the 20 events"
            f" {args.paced_gap_ms:g} ms apart, so each reaches Envoy on its own as with a real"
            f" provider; its req/s @{args.connections} is capped by the pacing for any system"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        report = run(args)
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; every process the bench started has been stopped")
        return 130
    print(report, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    log(f"report written to {args.output}")
    return 0
