"""``python -m bench.compression``: what compressing answers for the client costs and saves.

The gateway (``ai-gateway run``) in front of the bench's Envoy upstream, embeddings x16 and
chat, each measured with and without ``Accept-Encoding: gzip`` from the client, interleaved
over rounds in one run: requests/s at 32 connections and bytes on the wire per answer. Also the
sidecar's own cost of reading an answer compressed although it asked for ``identity``
(extproc/encoding.py): the choice "ask for identity" against "let providers compress".
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import tempfile
import time
import zlib
from pathlib import Path

from bench.bootstraps import upstream_bootstrap
from bench.peers import Upstreams
from bench.processes import EnvoyProcess
from bench.scenarios import Scenario, all_scenarios
from bench.systems import CLIENT_KEY, KEY_ENV, gateway_config
from bench.wrk import ensure_wrk, lua_script, run_wrk
from extproc.clients import hash_key
from extproc.encoding import Decoder
from tests.harness import Gateway, free_port

_API_KEY = "sk-bench-compression"


def _decode_us(body: bytes, rounds: int = 200) -> float:
    packed = gzip.compress(body, 1)
    start = time.perf_counter()
    for _ in range(rounds):
        Decoder("gzip", len(body) + 1).feed(packed, end=True)
    return (time.perf_counter() - start) / rounds * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    wrk = ensure_wrk()
    scenarios: list[Scenario] = [s for s in all_scenarios() if s.key in ("chat", "embeddings")]
    up_port, up_admin = free_port(), free_port()
    upstreams = Upstreams({"envoy": up_port})
    config = gateway_config(upstreams, scenarios)
    config["clients"] = [{"name": "bench", "key_sha256": hash_key(CLIENT_KEY)}]
    results: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gz-")))
        boot = upstream_bootstrap(up_port, up_admin, _API_KEY, scenarios)
        stack.enter_context(EnvoyProcess("upstream", boot, workdir, up_admin, 1))
        gw = stack.enter_context(Gateway(config, env={KEY_ENV: _API_KEY}))
        for _ in range(args.rounds):
            for s in scenarios:
                for packed in (False, True):
                    headers = {
                        "Content-Type": "application/json",
                        "Authorization": f"Bearer {CLIENT_KEY}",
                    }
                    if packed:
                        headers["Accept-Encoding"] = "gzip"
                    script = workdir / "load.lua"
                    script.write_text(lua_script(s.request, headers))
                    run_wrk(wrk, gw.url + s.client_path, script, 32, 1.0)  # warm-up
                    r = run_wrk(wrk, gw.url + s.client_path, script, 32, args.seconds)
                    if r.errors:
                        raise SystemExit(f"{s.name}: {r.errors} errors")
                    per = r.bytes / r.requests if r.requests else 0.0
                    results.setdefault((s.name, packed), []).append((r.rps, per))
    print("| scenario | client | req/s (median) | bytes per answer |")
    print("|---|---|--:|--:|")
    for (name, packed), runs in results.items():
        rps = sorted(x for x, _ in runs)[len(runs) // 2]
        print(f"| {name} | {'gzip' if packed else 'identity'} | {rps:,.0f} | {runs[0][1]:,.0f} |")
    for s in scenarios:
        plain, fast = len(s.response), len(gzip.compress(s.response, 1))
        print(
            f"\n{s.name}: answer {plain:,} B, gzip level 1 {fast:,} B"
            f" ({fast / plain:.0%}); sidecar gunzip {_decode_us(s.response):.0f} us"
            f" (zlib {len(zlib.compress(s.response, 6)):,} B at level 6)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
