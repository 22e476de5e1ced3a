"""``make soak``: a bounded soak of the real gateway (Envoy + sidecar) on loopback.

200 concurrent clients (``--clients``) for 10 minutes (``--duration``) mix chat completions,
streams (read to the end), embeddings, provider errors (a 400 from the provider) and clients
that leave a stream after a few chunks (10 % of the requests; ``--disconnects 30`` for 30 %,
``make soak DISCONNECTS=30``). The provider is the test suite's fake OpenAI, in its
own process. Every ``--sample`` seconds the script records, per process, RSS and open file
descriptors, and Envoy's live ext_proc streams and open requests.

Pass criteria, checked at the end and printed as a Markdown report (also written to
``bench/results/soak.md``):

- RSS after warm-up (``--warmup``, default a fifth of the run) grows less than 10 % by the end,
  for the sidecar workers together and for Envoy;
- open file descriptors do not grow: their mean over the last quarter of the run is within
  10 % of their mean over the quarter after the warm-up (connections come and go with the
  load, so single samples move), for the sidecar and for Envoy;
- once the clients stop, no ext_proc stream and no request stays open in Envoy;
- zero lost usage records: every request that reached a provider has exactly one record in the
  sidecar's metrics, and the tokens recorded for the successful ones equal the usage the
  clients received;
- every answered request (a 200, disconnects included) has tokens in its record: the
  provider's, or for a client that left before the usage chunk the gateway's estimate;
- no gateway error (5xx) and no hung request.

The script stops by itself: after ``--duration`` the clients finish the request in hand and
the report is written. Exit status 0 when every criterion holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx2
import orjson

from tests.harness import Gateway
from tests.integration.probes import (
    children,
    envoy_stat,
    gateway_pid,
    metric,
    open_fds,
    rss_bytes,
)

RESULTS = Path(__file__).resolve().parent / "results" / "soak.md"
MIB = 1024 * 1024
REQUEST_TIMEOUT = 30.0  # a request slower than this counts as hung
# Scenario -> weight. "error": a request the provider refuses (400: empty messages).
MIX = {"chat": 35, "stream": 30, "embeddings": 15, "error": 10, "disconnect": 10}


class QuietGateway(Gateway):
    """The harness's gateway, counting access-log lines instead of keeping them all."""

    access_lines = 0

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith("{"):
                self.access_lines += 1
                continue
            self.output.append(line)
            if line.startswith("AI gateway ready"):
                self._ready.set()


# --- the provider, in its own process ------------------------------------------------------------


def serve_fake() -> None:
    """``python -m bench.soak --fake``: a fake OpenAI until stdin closes; prints its URL."""
    from tests.fakes.openai import FakeOpenAI

    # Tokens 20 ms apart, like a fast real provider: streams stay open a while.
    with FakeOpenAI(chunk_delay=0.02) as fake:
        print(fake.url, flush=True)
        sys.stdin.read()


@contextlib.contextmanager
def fake_provider() -> Any:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.soak", "--fake"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError("the fake provider did not start")
        yield url, proc.pid
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- clients -------------------------------------------------------------------------------------


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    recorded_expected: int = 0  # requests that reached the provider: one record each
    answered: int = 0  # of those, answered 200: each record has tokens
    tokens: int = 0  # usage the clients received on successful requests
    slowest: float = 0.0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(1000)}" for _ in range(n))


def _stream_usage(data: bytes) -> int:
    for event in reversed(data.split(b"\n\n")):
        if event.startswith(b"data: {"):
            usage = orjson.loads(event[6:]).get("usage")
            if usage:
                return int(usage["total_tokens"])
    raise ValueError("no usage chunk")


def mix(disconnects: float) -> dict[str, float]:
    """:data:`MIX` with ``disconnects`` percent of the requests leaving their stream."""
    others = {k: w for k, w in MIX.items() if k != "disconnect"}
    scale = (100 - disconnects) / sum(others.values())
    return {**{k: w * scale for k, w in others.items()}, "disconnect": disconnects}


async def _one(client: httpx2.AsyncClient, kind: str, rng: random.Random, tally: Tally) -> None:
    # A client that leaves does so long before its (300-word) stream could end.
    words = _words(rng, 300 if kind == "disconnect" else rng.randint(1, 30))
    messages = [{"role": "user", "content": words}]
    body: dict[str, Any]
    if kind == "embeddings":
        path, body = "/v1/embeddings", {"model": "e", "input": [words, "x y"]}
    elif kind == "error":
        path, body = "/v1/chat/completions", {"model": "m", "messages": []}
    else:
        body = {"model": "m", "messages": messages}
        path = "/v1/chat/completions"
        if kind in ("stream", "disconnect"):
            body |= {"stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", path, json=body) as response:
        if kind == "disconnect":
            leave = rng.randint(1, 20)
            async for _ in response.aiter_raw():
                leave -= 1
                if not leave:
                    break  # the client leaves after a few chunks
            tally.outcomes["disconnect"] += 1
            tally.recorded_expected += 1
            tally.answered += response.status_code == 200
            return
        data = await response.aread()
    status = response.status_code
    tally.recorded_expected += 1
    tally.answered += status == 200
    if kind == "error":
        if status != 400:
            tally.problem(f"error case answered {status}: {data[:200]!r}")
        tally.outcomes[f"error-{status}"] += 1
        return
    if status != 200:
        tally.problem(f"{kind} answered {status}: {data[:200]!r}")
        tally.outcomes[f"{kind}-{status}"] += 1
        return
    if kind == "stream":
        if not data.endswith(b"data: [DONE]\n\n"):
            tally.problem(f"stream without [DONE]: {data[-200:]!r}")
        tally.tokens += _stream_usage(data)
    else:
        tally.tokens += int(orjson.loads(data)["usage"]["total_tokens"])
    tally.outcomes[kind] += 1


async def _client(
    url: str,
    seed: int,
    stop_at: float,
    tally: Tally,
    stopping: threading.Event,
    weights_by_kind: dict[str, float],
) -> None:
    rng = random.Random(seed)
    kinds, weights = list(weights_by_kind), list(weights_by_kind.values())
    async with httpx2.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT) as client:
        while time.monotonic() < stop_at and not stopping.is_set():
            kind = rng.choices(kinds, weights)[0]
            started = time.monotonic()
            try:
                await _one(client, kind, rng, tally)
            except httpx2.TimeoutException:
                tally.outcomes["hung"] += 1
                tally.problem(f"{kind}: no answer in {REQUEST_TIMEOUT}s")
            except httpx2.TransportError as exc:
                tally.outcomes["transport-error"] += 1
                tally.problem(f"{kind}: {exc!r}")
            tally.slowest = max(tally.slowest, time.monotonic() - started)


def run_clients(
    url: str,
    clients: int,
    seconds: float,
    tally: Tally,
    stopping: threading.Event,
    weights_by_kind: dict[str, float],
) -> None:
    async def main() -> None:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(
            *(
                _client(url, seed, stop_at, tally, stopping, weights_by_kind)
                for seed in range(clients)
            )
        )

    asyncio.run(main())


# --- sampling ------------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the start of the load
    sidecar_rss: int
    envoy_rss: int
    sidecar_fds: int
    envoy_fds: int
    extproc_streams: int
    open_requests: int
    requests: int  # client requests finished so far


def sample(gw: Gateway, started: float, tally: Tally) -> Sample:
    procs = children(gateway_pid(gw))
    workers = [pid for pid, cmd in procs.items() if " worker " in cmd]
    envoy = next(pid for pid, cmd in procs.items() if cmd.split(" ", 1)[0].endswith("/envoy"))
    return Sample(
        at=time.monotonic() - started,
        sidecar_rss=sum(rss_bytes(p) for p in workers),
        envoy_rss=rss_bytes(envoy),
        sidecar_fds=sum(open_fds(p) for p in workers),
        envoy_fds=open_fds(envoy),
        extproc_streams=envoy_stat(gw, "cluster.ai_gateway_extproc.upstream_rq_active"),
        open_requests=envoy_stat(gw, "http.ai_gateway.downstream_rq_active"),
        requests=sum(tally.outcomes.values()),
    )


def log(text: str) -> None:
    print(f"[soak {datetime.datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def _growth(before: float, after: float) -> float:
    return (after - before) / before * 100 if before else 0.0


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def report(
    args: argparse.Namespace,
    samples: list[Sample],
    warm: Sample,
    end: Sample,
    quiet: Sample,
    tally: Tally,
    recorded: float,
    recorded_tokens: float,
    with_tokens: float,
    estimated: float,
) -> tuple[str, bool]:
    rss_sidecar = _growth(warm.sidecar_rss, end.sidecar_rss)
    rss_envoy = _growth(warm.envoy_rss, end.envoy_rss)
    loaded = [s for s in samples if s.at >= warm.at]
    quarter = max(1, len(loaded) // 4)
    first, last = loaded[:quarter], loaded[-quarter:]
    fds_sidecar = (_mean([s.sidecar_fds for s in first]), _mean([s.sidecar_fds for s in last]))
    fds_envoy = (_mean([s.envoy_fds for s in first]), _mean([s.envoy_fds for s in last]))
    lost = tally.recorded_expected - int(recorded)
    gateway_errors = sum(n for k, n in tally.outcomes.items() if k.split("-")[-1].startswith("5"))
    checks = {
        "sidecar RSS growth after warm-up < 10 %": rss_sidecar < 10,
        "Envoy RSS growth after warm-up < 10 %": rss_envoy < 10,
        "no growth in open file descriptors": _growth(*fds_sidecar) < 10
        and _growth(*fds_envoy) < 10,
        "no ext_proc stream or request left open": quiet.extproc_streams == 0
        and quiet.open_requests == 0,
        "zero lost usage records": lost == 0,
        "recorded tokens = tokens the clients received": int(recorded_tokens) == tally.tokens,
        "every answered request has tokens in its record": int(with_tokens) == tally.answered,
        "no gateway 5xx, no hung request": gateway_errors == 0
        and tally.outcomes["hung"] == 0
        and tally.outcomes["transport-error"] == 0,
    }
    total = sum(tally.outcomes.values())
    lines = [
        f"# Soak: {args.clients} clients, {args.duration:g} s, {args.disconnects:g} % leaving",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; warm-up {args.warmup:g} s;"
        f" {total} requests ({total / args.duration:.0f}/s), slowest {tally.slowest:.2f} s.",
        "",
        "| criterion | result |",
        "|---|---|",
        *(f"| {name} | {'pass' if ok else '**FAIL**'} |" for name, ok in checks.items()),
        "",
        "| measure | after warm-up | end of load | after the clients stopped |",
        "|---|--:|--:|--:|",
        f"| sidecar RSS (all workers) | {warm.sidecar_rss / MIB:.1f} MiB |"
        f" {end.sidecar_rss / MIB:.1f} MiB ({rss_sidecar:+.1f} %) | {quiet.sidecar_rss / MIB:.1f} MiB |",
        f"| Envoy RSS | {warm.envoy_rss / MIB:.1f} MiB | {end.envoy_rss / MIB:.1f} MiB"
        f" ({rss_envoy:+.1f} %) | {quiet.envoy_rss / MIB:.1f} MiB |",
        f"| sidecar open fds (mean of a quarter of the run) | {fds_sidecar[0]:.0f} |"
        f" {fds_sidecar[1]:.0f} ({_growth(*fds_sidecar):+.1f} %) | {quiet.sidecar_fds} |",
        f"| Envoy open fds (mean of a quarter of the run) | {fds_envoy[0]:.0f} |"
        f" {fds_envoy[1]:.0f} ({_growth(*fds_envoy):+.1f} %) | {quiet.envoy_fds} |",
        f"| live ext_proc streams | {warm.extproc_streams} | {end.extproc_streams} |"
        f" {quiet.extproc_streams} |",
        f"| open requests | {warm.open_requests} | {end.open_requests} | {quiet.open_requests} |",
        "",
        f"Usage records: {tally.recorded_expected} requests reached the provider, {recorded:.0f}"
        f" recorded ({lost} lost); tokens received by clients {tally.tokens}, recorded"
        f" {recorded_tokens:.0f}. {tally.answered} answered, {with_tokens:.0f} records with"
        f" tokens, {estimated:.0f} of them estimated by the gateway.",
        "",
        "Requests by outcome: "
        + ", ".join(f"{k} {n}" for k, n in sorted(tally.outcomes.items()))
        + ".",
        "",
        "Samples (s: sidecar RSS MiB / Envoy RSS MiB / fds sidecar+Envoy / ext_proc streams):",
        "",
        "```",
        *(
            f"{s.at:6.0f}s  {s.sidecar_rss / MIB:7.1f}  {s.envoy_rss / MIB:6.1f}"
            f"  {s.sidecar_fds:4d}+{s.envoy_fds:<4d}  {s.extproc_streams:4d}  {s.requests}"
            for s in samples
        ),
        "```",
    ]
    if tally.problems:
        lines += ["", "First problems:", "", *(f"- {p}" for p in tally.problems)]
    return "\n".join(lines) + "\n", all(checks.values())


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def soak(args: argparse.Namespace) -> int:
    # SIGTERM, and SIGINT even when started in the background (where it is ignored by
    # default), stop the run early and cleanly.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    tally = Tally()
    stopping = threading.Event()
    with fake_provider() as (url, _):
        config = {
            "backends": {"fake": {"schema": "openai", "url": f"{url}/v1"}},
            "models": [
                {"name": name, "backends": [{"backend": "fake"}], "retry": {"attempts": 1}}
                for name in ("m", "e")
            ],
        }
        with QuietGateway(config, workers=args.workers) as gw:
            log(f"gateway on {gw.url}; {args.clients} clients for {args.duration:g} s")
            thread = threading.Thread(
                target=run_clients,
                args=(gw.url, args.clients, args.duration, tally, stopping, mix(args.disconnects)),
            )
            started = time.monotonic()
            thread.start()
            samples: list[Sample] = []
            warm: Sample | None = None
            try:
                while thread.is_alive():
                    thread.join(args.sample)
                    if not thread.is_alive():
                        break
                    current = sample(gw, started, tally)
                    samples.append(current)
                    if warm is None and current.at >= args.warmup:
                        warm = current
                    log(
                        f"{current.at:4.0f}s {current.requests} requests; sidecar"
                        f" {current.sidecar_rss / MIB:.0f} MiB, Envoy"
                        f" {current.envoy_rss / MIB:.0f} MiB; fds"
                        f" {current.sidecar_fds}+{current.envoy_fds}; ext_proc streams"
                        f" {current.extproc_streams}"
                    )
            except KeyboardInterrupt:
                log("interrupted: the clients finish the request in hand, then everything stops")
                stopping.set()
                thread.join(REQUEST_TIMEOUT)
                return 130
            if not samples:  # a run shorter than one sampling period
                samples.append(sample(gw, started, tally))
            end = samples[-1]
            time.sleep(3)  # every connection closed, every record made
            quiet = sample(gw, started, tally)
            recorded = metric(gw, "ai_gateway_requests_total")
            # One input-token observation per record with usage, whoever counted it.
            with_tokens = metric(gw, "gen_ai_client_token_usage_count", gen_ai_token_type="input")
            estimated = metric(
                gw,
                "gen_ai_client_token_usage_count",
                gen_ai_token_type="input",
                ai_gateway_usage_source="estimated",
            )
            recorded_tokens = metric(
                gw, "gen_ai_client_token_usage_sum", error_type="", gen_ai_token_type="input"
            ) + metric(
                gw, "gen_ai_client_token_usage_sum", error_type="", gen_ai_token_type="output"
            )
    text, ok = report(
        args,
        samples,
        warm or samples[0],
        end,
        quiet,
        tally,
        recorded,
        recorded_tokens,
        with_tokens,
        estimated,
    )
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    log(f"{'PASS' if ok else 'FAIL'}; report in {args.output}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    p.add_argument("--clients", type=int, default=200, help="concurrent clients (200)")
    p.add_argument("--warmup", type=float, help="seconds before the RSS reference (duration/5)")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples (10)")
    p.add_argument("--workers", type=int, default=2, help="sidecar workers (2)")
    p.add_argument(
        "--disconnects", type=float, default=10.0, help="percent of clients leaving a stream (10)"
    )
    p.add_argument("--output", type=Path, default=RESULTS, help=f"report file ({RESULTS.name})")
    p.add_argument("--fake", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.fake:
        serve_fake()
        return 0
    if args.warmup is None:
        args.warmup = args.duration / 5
    return soak(args)


if __name__ == "__main__":
    raise SystemExit(main())
