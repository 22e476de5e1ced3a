"""What the report says of the run itself: when, on what, with which versions and settings."""

from __future__ import annotations

import datetime
import platform

from bench.peers import HONO_NODE_SERVER, LITELLM_VERSION
from bench.phases import Plan, Record
from bench.records import FLOOR, FLOOR_2, LITELLM, PORTKEY, RunInfo
from bench.report import git_commit, machine_summary
from bench.systems import REPO, Facts
from bench.wrk import wrk_version
from extproc import __version__


def run_info(plan: Plan, facts: Facts, record: Record, wrk: str) -> RunInfo:
    """The run's facts; a busy machine gets a note."""
    facts.versions.update(
        {
            "Python": platform.python_version(),
            "wrk": wrk_version(wrk).removeprefix("wrk "),
            "ai-gateway": __version__,
        }
    )
    if record.idle > plan.args.noise_limit:
        record.notes.append(
            f"The machine was {record.idle:.0%} of a core busy before the load started: other"
            " processes competed for the cores (see `other work` and `rest`)."
        )
    return RunInfo(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=git_commit(REPO),
        machine=machine_summary(),
        versions=facts.versions,
        settings=_settings_lines(plan, facts, record),
        connections=plan.args.connections,
        scenarios=[s.name for s in plan.scenarios],
        names={s.key: s.name for s in plan.scenarios},
        peer_scenarios=[s.name for s in plan.scenarios if s.peers],
        stream_scenarios=[s.name for s in plan.stream_scenarios],
        streams=plan.args.streams,
        noise_limit=plan.args.noise_limit,
        unavailable=record.unavailable,
        failures=record.failures,
        notes=record.notes,
    )


def _settings_lines(plan: Plan, facts: Facts, record: Record) -> list[str]:
    a = plan.args
    sizes = ", ".join(f"{s.name} {len(s.request)} B -> {len(s.response)} B" for s in plan.scenarios)
    lines = [
        f"Runs: warm-up {a.warmup:g}s, throughput {a.duration:g}s @{a.connections}"
        f" connections, latency {a.latency_duration:g}s @1 connection; wrk, 1 thread;"
        f" time to first token: {a.ttft_samples} samples per stream scenario; memory:"
        f" {a.streams:,} open streams held {a.hold_seconds:g}s",
        f"Envoy --concurrency: gateway {facts.concurrency}, bare {facts.concurrency}, upstream 1;"
        f" gateway sidecar workers: {facts.sidecar_workers}; machine busy before load:"
        f" {record.idle:.0%} of a core",
        f"Bodies (request -> upstream response): {sizes}",
        "Upstream: Envoy `direct_response` on loopback, no added latency (a stream arrives"
        " in one piece); it answers only requests carrying the provider credential",
        "Bare Envoy: the gateway's own rendered bootstrap minus the ext_proc filters (routes"
        " on the path instead of the x-ai-eg-model header the sidecar sets); the client sends"
        " the provider key",
    ]
    if FLOOR in plan.systems:
        lines.append(
            "Python floor: bare Envoy plus one ext_proc filter (request headers, buffered"
            " request body, response headers, streamed response body) to"
            f" {facts.floor_workers} workers of `bench/floor.py` that answer every"
            " message with an empty reply: grpc.aio on uvloop, one Unix socket each, the"
            " gateway's sidecar cluster; the cost of the design before any of its work"
        )
    if FLOOR_2 in plan.systems:
        lines.append(
            "Python floor, 2 msgs: the same, but each worker ends the stream after the"
            " request body (`bench/floor.py --hand-off`), as the sidecar does for a request"
            " it hands off to Envoy in envoy accounting mode: request headers and body only"
        )
    if any(s.bedrock for s in plan.scenarios):
        lines.append(
            "Bedrock: the gateway translates the OpenAI chat request to Converse, signs it"
            " (SigV4) and translates the answer back; the upstream is the same static Envoy,"
            " which checks that a SigV4 Authorization header of the bench's key id arrived"
            " but does not verify the signature (tests/fakes/bedrock.py, which does, would be"
            " the bottleneck). Bare Envoy's and the Python floor's rows there are the"
            " already-translated Converse request sent as is: a reference, not a like-for-like"
            " ratio"
        )
    if any(s.upstream == "paced" for s in plan.scenarios):
        lines.append(
            f"Paced stream: a Python (uvloop) upstream writes each of the 20 events"
            f" {a.paced_gap_ms:g} ms apart, so each reaches the proxy on its own as with a real"
            f" provider; its req/s @{a.connections} is capped by the pacing for any system"
        )
    if LITELLM in plan.systems:
        lines.append(
            f"LiteLLM: `litellm[proxy]=={LITELLM_VERSION}` in bench/.cache/litellm,"
            f" LITELLM_LOCAL_MODEL_COST_MAP=True, no database, a master key (it refuses to"
            " start without one; clients send it),"
            f" {facts.litellm_workers}"
            " uvicorn workers (as many as the gateway's sidecar workers), one `openai/<model>`"
            " entry per scenario with `api_base` on the same upstream and per-token prices"
            " (its cost tracking on), retries off"
        )
    if PORTKEY in plan.systems:
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
