"""``make bench``: the gateway against bare Envoy, LiteLLM and Portkey; same upstream, one run.

Order of a run: start the upstreams, the gateway (``ai-gateway run`` through the test harness)
and bare Envoy; check that each answers one request of each scenario right; for each scenario
and system: warm-up, throughput at N connections, latency at 1 connection; then time to first
token and memory with many open streams. Then each peer in turn (installed on first use under
``bench/.cache``): started, checked, measured the same way, stopped. Progress goes to stderr; the
markdown report to stdout and ``bench/results/latest.md``, the chart to ``latest.png``.

Here: the flags and the run's order. Each system is started by ``bench/systems.py``, measured
by ``bench/phases.py``; ``bench/report.py`` writes the report, ``bench/targets.py`` holds the
targets it checks.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from bench.measure import log
from bench.peers import CACHE, PORTKEY_VERSION
from bench.phases import Phases, Plan, Record
from bench.processes import BenchError
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
from bench.report import chart_spec, render_markdown
from bench.runinfo import run_info
from bench.scenarios import SCENARIO_KEYS
from bench.systems import Factory
from bench.wrk import ensure_wrk

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.md"


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


def run(args: argparse.Namespace) -> tuple[RunInfo, Results]:
    """The upstreams, our own systems measured side by side, then each peer in turn."""
    wrk = ensure_wrk()
    plan = Plan.of(args, [_SYSTEM_NAMES[k] for k in args.systems], _OWN)
    record = Record()
    est = plan.estimate_seconds()
    log(
        f"{len(plan.scenarios)} scenarios x {len(plan.systems)} systems;"
        f" about {est / 60:.0f} minutes (more on the first run: peers are installed)"
    )
    with contextlib.ExitStack() as stack:
        factory = Factory(args, plan.configured, stack.enter_context(_workdir()))
        factory.start_upstreams(stack)
        phases = Phases(plan, wrk, record, factory.facts.shared, factory.workdir)
        own = [s for s in plan.systems if s in _OWN]
        if own:
            phases.run(factory.start_own(stack, own), own_systems=True)
        for peer in (LITELLM, PORTKEY):
            if peer in plan.systems:
                phases.peer(peer, functools.partial(factory.start_peer, peer))
    return run_info(plan, factory.facts, record, wrk), record.results


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
    try:
        info, results = run(args)
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; every process the bench started has been stopped")
        return 130
    info.settings.append(f"Whole run: {(time.monotonic() - started) / 60:.1f} minutes")
    report = render_markdown(info, results)
    print(report, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    log(f"report written to {args.output}")
    if not args.no_chart:
        png = args.output.with_suffix(".png")
        if write_chart(chart_spec(info, results), png):
            log(f"chart written to {png}")
    return 0
