"""Draw docs/metrics.png: a real gateway under a scripted mix of traffic, as Prometheus sees it.

Starts ``ai-gateway run`` (real Envoy + sidecar workers, :class:`tests.harness.Gateway`) in
front of the local fake providers (:class:`tests.fakes.openai.FakeOpenAI` as OpenAI,
:class:`tests.fakes.azure.FakeAzure` as Azure OpenAI), given a simulated latency before the
first token and between tokens so the figures look like a provider's. For ``--seconds`` it sends
chat completions (plain and streamed), embeddings, a burst of injected upstream 500s, a few
Azure 429s and a run of client disconnects mid-stream, through the official ``openai`` SDK. Every
second it scrapes the gateway's Prometheus endpoint (``GET <admin>/metrics``) and, at the end,
plots from those scrapes alone: requests/s by model and outcome, tokens/s by type, cumulative
cost by model, and p50/p95 of request duration, time to first token and time per output token,
computed from the histogram buckets the way PromQL's ``histogram_quantile`` does.

matplotlib is not a project dependency; install it into the virtualenv for this script only:

    .venv/bin/pip install matplotlib
    PYTHONPATH=. .venv/bin/python docs/metrics_figure.py            # writes docs/metrics.png
    PYTHONPATH=. .venv/bin/python docs/metrics_figure.py --seconds 30 -o /tmp/m.png

Everything listens on 127.0.0.1; no credential is real.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import random
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from openai import APIError, OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.azure import FakeAzure
from tests.fakes.openai import FakeOpenAI, Json, chat_reply
from tests.harness import Gateway

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "metrics.png"

CHAT = "gpt-4o-mini"
AZURE_CHAT = "gpt-4o"
EMBED = "text-embedding-3-small"
AZURE_KEY_ENV = "AZURE_OPENAI_API_KEY"
FAKE_AZURE_KEY = "fake-azure-key-for-the-figure"  # the fake's own; not a real credential

# USD per 1M tokens: the providers' published list prices for these models, for illustration.
PRICING: dict[str, dict[str, float]] = {
    CHAT: {"input": 0.15, "cached_input": 0.075, "output": 0.60},
    AZURE_CHAT: {"input": 2.50, "cached_input": 1.25, "output": 10.00},
    EMBED: {"input": 0.02},
}

PROMPT_TEXT = (
    "the gateway routes each request by model to a provider and accounts tokens latency and cost "
    "for every attempt envoy retries falls back and balances while the sidecar translates signs "
    "and measures streams chunk by chunk summarise this paragraph please explain briefly why"
)
WORDS = PROMPT_TEXT.split()

Labels = frozenset[tuple[str, str]]
Sample = tuple[str, Labels]


# --- the run's schedule and the fake providers' latency ---------------------------------------


class Schedule:
    """Where the run is: a ramp, a plateau, a surge (the providers slow down), a quieter tail."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def begin(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def fraction(self) -> float:
        return self.elapsed() / self.seconds

    def load(self) -> float:
        x = self.fraction()
        if x < 0.2:
            return 0.35 + 0.65 * x / 0.2
        if x < 0.6:
            return 1.0
        if x < 0.8:
            return 1.7
        return 0.6

    def pace(self) -> float:
        """How much slower than usual the providers answer now."""
        return 1.0 + 0.6 * max(0.0, self.load() - 1.0)


@dataclass
class Latency:
    """A provider's timing: lognormal around a median time to first token and per token."""

    first_token: float
    per_token: float
    schedule: Schedule
    rng: random.Random

    async def wait(self, fake: FakeOpenAI, path: str, body: Json) -> None:
        slow = self.schedule.pace()
        if path.endswith("/embeddings"):
            await asyncio.sleep(0.25 * self.first_token * slow * self.rng.lognormvariate(0, 0.4))
            return
        per_token = self.per_token * slow * self.rng.lognormvariate(0, 0.25)
        wait = self.first_token * slow * self.rng.lognormvariate(0, 0.45)
        if not body.get("stream"):  # a whole answer takes its generation time
            wait += per_token * chat_reply(body).completion_tokens
        await asyncio.sleep(wait)
        # The fake reads chunk_delay for this stream right after _body returns, with no await in
        # between, so setting it here cannot leak into another request on the same loop.
        fake.chunk_delay = per_token


class SlowOpenAI(FakeOpenAI):
    def __init__(self, latency: Latency, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.latency = latency

    async def _body(self, request: web.Request) -> Json:
        body = await super()._body(request)
        await self.latency.wait(self, request.path, body)
        return body


class SlowAzure(FakeAzure):
    def __init__(self, latency: Latency, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.latency = latency

    async def _body(self, request: web.Request) -> Json:
        body = await super()._body(request)
        await self.latency.wait(self, request.path, body)
        return body


# --- scraping -----------------------------------------------------------------------------------


@dataclass
class Scrapes:
    """``GET /metrics`` once a second: (seconds since start, {(sample, labels): value})."""

    url: str
    start: float
    points: list[tuple[float, dict[Sample, float]]] = field(default_factory=list)
    failures: int = 0

    def scrape(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:  # noqa: S310 (loopback)
                text = response.read().decode()
        except OSError:
            self.failures += 1
            return
        values: dict[Sample, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                values[(s.name, frozenset(s.labels.items()))] = float(s.value)
        self.points.append((time.monotonic() - self.start, values))

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            self.scrape()
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.points]

    def sums(
        self, name: str, by: Iterable[str], where: Callable[[Mapping[str, str]], bool] | None = None
    ) -> dict[tuple[str, ...], list[float]]:
        """Per group of label values, the sample ``name`` summed over the rest, at each scrape.

        A series not yet created counts as 0: a counter or bucket starts at 0.
        """
        keys = tuple(by)
        groups: set[tuple[str, ...]] = set()
        per_point: list[dict[tuple[str, ...], float]] = []
        for _, values in self.points:
            acc: dict[tuple[str, ...], float] = defaultdict(float)
            for (sample, labels), value in values.items():
                if sample != name:
                    continue
                label_map = dict(labels)
                if where is not None and not where(label_map):
                    continue
                group = tuple(label_map.get(k, "") for k in keys)
                acc[group] += value
                groups.add(group)
            per_point.append(acc)
        return {g: [p.get(g, 0.0) for p in per_point] for g in sorted(groups)}


def rate(times: list[float], values: list[float], window: float) -> list[float]:
    """Per-second increase over the trailing ``window`` seconds (like PromQL ``rate``)."""
    out = []
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        span = t - times[j]
        out.append((values[i] - values[j]) / span if span > 0 else 0.0)
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile`` over cumulative ``(le, count)`` pairs, sorted by ``le``."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower  # in the +Inf bucket: the highest finite bound
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def quantiles(
    scrapes: Scrapes,
    metric: str,
    qs: tuple[float, ...],
    window: float,
    where: Callable[[Mapping[str, str]], bool] | None = None,
) -> dict[float, list[float]]:
    """``histogram_quantile(q, sum by (le) (increase(<metric>_bucket[window])))`` per scrape."""
    by_le = scrapes.sums(f"{metric}_bucket", ["le"], where)
    bounds = sorted((float(le), series) for (le,), series in by_le.items())
    times = scrapes.times
    out: dict[float, list[float]] = {q: [] for q in qs}
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        buckets = [(le, series[i] - series[j]) for le, series in bounds]
        for q in qs:
            out[q].append(histogram_quantile(q, buckets) if j < i else math.nan)
    return out


# --- traffic ------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw, to print beside what the gateway counted."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


def prompt(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


class Traffic:
    def __init__(
        self,
        client: OpenAI,
        openai: FakeOpenAI,
        azure: FakeAzure,
        schedule: Schedule,
        seed: int,
    ) -> None:
        self.client = client
        self.openai = openai
        self.azure = azure
        self.schedule = schedule
        self.seed = seed
        self.tally = Tally()
        self.stop = threading.Event()

    def _loop(self, name: str, think: float, send: Callable[[random.Random], None]) -> None:
        rng = random.Random(f"{self.seed}-{name}")
        while not self.stop.is_set():
            try:
                send(rng)
            except APIError as exc:
                status = getattr(exc, "status_code", None)
                self.tally.add(f"client error {status or type(exc).__name__}")
            except Exception as exc:  # keep the load going; report what happened
                self.tally.add(f"client exception {type(exc).__name__}")
            pause = rng.expovariate(1.0) * think / self.schedule.load()
            self.stop.wait(pause)

    def chat(self, rng: random.Random) -> None:
        self.tally.add(f"{CHAT} chat")
        self.client.chat.completions.create(
            model=CHAT,
            messages=[
                {"role": "system", "content": "You are concise."},
                {"role": "user", "content": prompt(rng, 20, 300)},
            ],
            max_tokens=rng.randint(40, 400),
        )

    def chat_stream(self, rng: random.Random) -> None:
        self.tally.add(f"{CHAT} stream")
        stream = self.client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": prompt(rng, 30, 250)}],
            max_tokens=rng.randint(40, 250),
            stream=True,
            stream_options={"include_usage": True} if rng.random() < 0.7 else None,
        )
        for _ in stream:
            pass

    def azure_chat(self, rng: random.Random) -> None:
        self.tally.add(f"{AZURE_CHAT} stream")
        stream = self.client.chat.completions.create(
            model=AZURE_CHAT,
            messages=[{"role": "user", "content": prompt(rng, 50, 400)}],
            max_tokens=rng.randint(60, 200),
            stream=True,
            stream_options={"include_usage": True},
        )
        for _ in stream:
            pass

    def embed(self, rng: random.Random) -> None:
        self.tally.add(f"{EMBED} embeddings")
        inputs = [prompt(rng, 10, 120) for _ in range(rng.randint(1, 16))]
        self.client.embeddings.create(model=EMBED, input=inputs)

    def cut(self, rng: random.Random) -> None:
        """A client that reads the first few chunks of a long answer and hangs up."""
        if not 0.55 <= self.schedule.fraction() < 0.75:
            return
        self.tally.add(f"{CHAT} cut")
        stream = self.client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": prompt(rng, 200, 300)}],
            stream=True,
        )
        for i, _ in enumerate(stream):
            if i >= rng.randint(2, 12):
                break
        stream.close()

    def faults(self) -> None:
        """Injected upstream errors: a burst of OpenAI 500s, then a few Azure 429s."""
        while not self.stop.wait(0.4):
            x = self.schedule.fraction()
            if 0.35 <= x < 0.45:
                self.openai.fail_next(500, path="/v1/chat/completions")
            elif 0.8 <= x < 0.85:
                self.azure.fail_next(429)

    def run(self) -> None:
        loops: list[tuple[str, int, float, Callable[[random.Random], None]]] = [
            ("chat", 6, 0.3, self.chat),
            ("stream", 4, 0.4, self.chat_stream),
            ("azure", 3, 0.5, self.azure_chat),
            ("embed", 2, 0.5, self.embed),
            ("cut", 2, 0.5, self.cut),
        ]
        threads = [threading.Thread(target=self.faults, daemon=True)]
        for name, count, think, send in loops:
            for k in range(count):
                threads.append(
                    threading.Thread(
                        target=self._loop, args=(f"{name}{k}", think, send), daemon=True
                    )
                )
        for thread in threads:
            thread.start()
        self.stop.wait(self.schedule.seconds)
        self.stop.set()
        for thread in threads:
            thread.join(timeout=30)


# --- the figure ---------------------------------------------------------------------------------


def gateway_config(openai_url: str, azure_url: str) -> dict[str, Any]:
    once = {"retry": {"attempts": 1}}  # every upstream error reaches the client, and the figure
    return {
        "backends": {
            "openai": {"schema": "openai", "url": f"{openai_url}/v1"},
            "azure": {
                "schema": "azure_openai",
                "url": azure_url,
                "api_key": "${" + AZURE_KEY_ENV + "}",
            },
        },
        "models": [
            {"name": CHAT, "backends": [{"backend": "openai"}], "pricing": PRICING[CHAT], **once},
            {"name": EMBED, "backends": [{"backend": "openai"}], "pricing": PRICING[EMBED]},
            {
                "name": AZURE_CHAT,
                "backends": [{"backend": "azure", "model": AZURE_CHAT}],
                "pricing": PRICING[AZURE_CHAT],
                **once,
            },
        ],
    }


def succeeded(model: str) -> Callable[[Mapping[str, str]], bool]:
    """The attempts to ``model`` that ended well (no error_type, so not cut either)."""

    def match(labels: Mapping[str, str]) -> bool:
        return labels.get("gen_ai_request_model") == model and not labels.get("error_type")

    return match


def plot(scrapes: Scrapes, output: Path, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = scrapes.times
    window = 10.0  # for rates
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.6), sharex=True)
    colors = {CHAT: "tab:blue", AZURE_CHAT: "tab:orange", EMBED: "tab:green"}

    # 1. Upstream attempts per second, by model and outcome.
    ax = axes[0][0]
    reqs = scrapes.sums(
        "ai_gateway_requests_total", ["gen_ai_request_model", "error_type", "ai_gateway_cut"]
    )
    outcome: dict[tuple[str, str], list[float]] = {}
    for (model, error, cut), series in reqs.items():
        kind = "ok" if not error else ("client disconnected" if cut == "true" else error)
        key = (model, kind)
        prev = outcome.get(key)
        outcome[key] = (
            series if prev is None else [a + b for a, b in zip(prev, series, strict=True)]
        )
    for (model, kind), series in sorted(outcome.items()):
        style = "-" if kind == "ok" else (":" if kind == "client disconnected" else "--")
        label = model if kind == "ok" else f"{model}: {kind}"
        ax.plot(times, rate(times, series, window), style, color=colors.get(model), label=label)
    ax.set_title("Requests/s by model and outcome\nrate(ai_gateway_requests_total)", fontsize=10)
    ax.set_ylabel("requests/s")

    # 2. Tokens per second, by type.
    ax = axes[0][1]
    tokens = scrapes.sums("gen_ai_client_token_usage_sum", ["gen_ai_token_type"])
    for (kind,), series in tokens.items():
        ax.plot(times, rate(times, series, window), label=kind)
    by_model = scrapes.sums("gen_ai_client_token_usage_sum", ["gen_ai_request_model"])
    for group, series in by_model.items():
        ax.plot(
            times,
            rate(times, series, window),
            ":",
            linewidth=1,
            color=colors.get(group[0]),
            label=f"{group[0]} (all types)",
        )
    ax.set_title("Tokens/s by type\nrate(gen_ai_client_token_usage_sum)", fontsize=10)
    ax.set_ylabel("tokens/s")

    # 3. Cumulative cost, by model (stacked).
    ax = axes[0][2]
    cost = scrapes.sums("ai_gateway_cost_usd_total", ["gen_ai_request_model"])
    models = sorted(cost, key=lambda g: -cost[g][-1])
    ax.stackplot(
        times,
        *[cost[g] for g in models],
        labels=[f"{g[0]}  ${cost[g][-1]:.4f}" for g in models],
        colors=[colors.get(g[0], "grey") for g in models],
        alpha=0.8,
    )
    ax.set_title("Cumulative cost by model (USD)\nai_gateway_cost_usd_total", fontsize=10)
    ax.set_ylabel("USD")

    # 4-6. Quantiles from the histogram buckets, 15 s window, per model.
    latency_panels = [
        (axes[1][0], "gen_ai_server_request_duration_seconds", "Request duration", [CHAT, AZURE_CHAT, EMBED]),
        (axes[1][1], "gen_ai_server_time_to_first_token_seconds", "Time to first token (streams)", [CHAT, AZURE_CHAT]),
        (axes[1][2], "gen_ai_server_time_per_output_token_seconds", "Time per output token (streams)", [CHAT, AZURE_CHAT]),
    ]  # fmt: skip
    for ax, metric, title, panel_models in latency_panels:
        for model in panel_models:
            qs = quantiles(
                scrapes,
                metric,
                (0.5, 0.95),
                window=15.0,
                where=succeeded(model),
            )
            ax.plot(times, qs[0.5], "-", color=colors[model], label=f"{model} p50")
            ax.plot(times, qs[0.95], "--", color=colors[model], label=f"{model} p95")
        ax.set_title(f"{title}: p50 / p95 over 15 s\n{metric}_bucket", fontsize=10)
        ax.set_ylabel("seconds (successful attempts)")
        if metric.endswith("request_duration_seconds"):
            ax.set_yscale("log")

    for row in axes:
        for ax in row:
            ax.grid(True, alpha=0.3)
            ax.set_xlim(0, max(times[-1], seconds))
            if ax.get_yscale() == "log":
                ax.legend(fontsize=7.5, loc="lower right", ncols=2, framealpha=0.85)
            else:  # headroom at the top for the legend
                ax.set_ylim(0, ax.get_ylim()[1] * 1.45)
                ax.legend(fontsize=7.5, loc="upper left", ncols=2, framealpha=0.85)
    for ax in axes[1]:
        ax.set_xlabel("seconds since start")
    fig.suptitle(
        "ai-gateway: scripted traffic through Envoy + sidecar to fake OpenAI / Azure OpenAI, "
        "scraped from the gateway's Prometheus /metrics every second",
        fontsize=11,
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    plt.close(fig)
    # A 256-colour palette keeps the file small (a line plot has few colours to begin with).
    from PIL import Image

    image = Image.open(buffer).convert("RGB")
    palette = image.quantize(colors=256, dither=Image.Dither.NONE)
    output.parent.mkdir(parents=True, exist_ok=True)
    palette.save(output, format="PNG", optimize=True)


def summary(scrapes: Scrapes, tally: Tally) -> str:
    last = scrapes.points[-1][1] if scrapes.points else {}

    def total(name: str, match: Mapping[str, str] | None = None) -> float:
        wanted = (match or {}).items()
        return sum(
            v
            for (sample, labels), v in last.items()
            if sample == name and wanted <= dict(labels).items()
        )

    tokens = "gen_ai_client_token_usage_sum"
    lines = ["clients sent:"]
    lines += [f"  {what}: {n}" for what, n in sorted(tally.counts.items())]
    lines += [
        "gateway counted:",
        f"  upstream attempts: {total('ai_gateway_requests_total'):.0f}",
        f"  cut streams: {total('ai_gateway_requests_total', {'ai_gateway_cut': 'true'}):.0f}",
        f"  input tokens: {total(tokens, {'gen_ai_token_type': 'input'}):.0f}",
        f"  output tokens: {total(tokens, {'gen_ai_token_type': 'output'}):.0f}",
        f"  cost: ${total('ai_gateway_cost_usd_total'):.4f}",
        f"scrapes: {len(scrapes.points)} ({scrapes.failures} failed)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seconds", type=float, default=75.0, help="length of the traffic run")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "metrics_figure.py needs matplotlib, which is not a project dependency:\n"
            "    .venv/bin/pip install matplotlib",
            file=sys.stderr,
        )
        return 2

    schedule = Schedule(args.seconds)
    rng = random.Random(args.seed)
    openai_fake = SlowOpenAI(Latency(0.25, 0.012, schedule, random.Random(rng.random())))
    azure_fake = SlowAzure(
        Latency(0.45, 0.022, schedule, random.Random(rng.random())), api_key=FAKE_AZURE_KEY
    )
    with openai_fake, azure_fake:
        config = gateway_config(openai_fake.url, azure_fake.url)
        with Gateway(config, env={AZURE_KEY_ENV: FAKE_AZURE_KEY}) as gw:
            print(f"gateway {gw.url}, metrics {gw.admin_url}/metrics", flush=True)
            client = OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=60)
            traffic = Traffic(client, openai_fake, azure_fake, schedule, args.seed)
            schedule.begin()
            scrapes = Scrapes(f"{gw.admin_url}/metrics", schedule.start)
            stop_scraping = threading.Event()
            scraper = threading.Thread(target=scrapes.run, args=(stop_scraping,), daemon=True)
            scraper.start()
            traffic.run()
            time.sleep(3.0)  # the last records land; a few flat seconds at the end
            stop_scraping.set()
            scraper.join()
            client.close()
    print(summary(scrapes, traffic.tally))
    if len(scrapes.points) < 3:
        print("too few scrapes to plot", file=sys.stderr)
        return 1
    plot(scrapes, args.output, args.seconds)
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
