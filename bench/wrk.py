"""The load generator: wrk, driven by a generated Lua script, results read back as JSON.

wrk is a C event loop that stays far below the system under test in CPU per request, which
matters on a 2-core machine where the generator, the upstream and the gateway share cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.processes import BenchError

_MARKER = "BENCH_RESULT "

# wrk's done() hook sees every counter; printing them as one JSON line is sturdier than
# parsing wrk's human-readable summary (units change with magnitude: us, ms, s).
_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\\n',
    MARKER, summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.mean,
    latency.max))
end
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_us: int
    bytes: int
    socket_errors: int  # connect + read + write + timeout
    http_errors: int  # responses with status >= 400 (wrk's "Non-2xx or 3xx")
    p50_us: int
    p99_us: int
    mean_us: float
    max_us: int

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def errors(self) -> int:
        return self.socket_errors + self.http_errors


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], env=env, capture_output=True, text=True, timeout=900, check=False
    )


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian package first if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: wrk is not installed; installing it: apt-get install -y wrk", file=sys.stderr)
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BenchError(
            "wrk is not installed and cannot be installed here (needs root and apt-get);"
            " install it yourself, e.g. `sudo apt-get install wrk`, then rerun `make bench`"
        )
    result = _apt_get("install", "-y", "wrk")
    if result.returncode != 0:
        # A fresh machine may have no package lists yet: fetch them once and try again.
        print("bench: apt-get install failed; running apt-get update first", file=sys.stderr)
        _apt_get("update")
        result = _apt_get("install", "-y", "wrk")
    found = shutil.which("wrk")
    if result.returncode != 0 or not found:
        raise BenchError(
            "could not install wrk with apt-get:\n"
            + (result.stdout + result.stderr)[-2000:]
            + "\ninstall it yourself (`apt-get install wrk`) and rerun `make bench`"
        )
    print(f"bench: installed wrk at {found}", file=sys.stderr)
    return found


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its banner and usage, and exits 1.
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split("Copyright")[0].strip() if first else "unknown"


def _lua_string(value: str) -> str:
    if not value.isascii() or any(c in value for c in '"\\\n\r'):
        raise ValueError(f"header value not safe to embed in Lua: {value!r}")
    return f'"{value}"'


def lua_script(body: bytes, headers: Mapping[str, str]) -> str:
    text = body.decode()
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    lines = ['wrk.method = "POST"', f"wrk.body = [{eq}[{text}]{eq}]"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    lines.append(f"MARKER = {_lua_string(_MARKER)}")
    return "\n".join(lines) + "\n" + _DONE


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    connections: int,
    duration: float,
    threads: int = 1,
    request_timeout: float = 10.0,
) -> WrkResult:
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={request_timeout:g}s",
        "-s",
        str(script),
        url,
    ]
    # wrk stops by itself after -d; the timeout only guards against a hung wrk.
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 60, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from None
    for line in out.stdout.splitlines():
        if line.startswith(_MARKER):
            data = json.loads(line[len(_MARKER) :])
            return WrkResult(
                requests=data["requests"],
                duration_us=data["duration_us"],
                bytes=data["bytes"],
                socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
                http_errors=data["status"],
                p50_us=data["p50_us"],
                p99_us=data["p99_us"],
                mean_us=data["mean_us"],
                max_us=data["max_us"],
            )
    raise BenchError(f"wrk failed (exit {out.returncode}):\n{out.stdout}{out.stderr}")
