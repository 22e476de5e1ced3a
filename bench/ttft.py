"""Time to first token: one connection, one streaming request at a time.

wrk measures whole responses; a stream's first event is what a user waits for. This client sends
a streaming request, takes the time when the response's first complete SSE event has arrived
(``data: ...`` and its blank line), then reads the rest of the stream so that the keep-alive
connection is reused for the next sample, as an SDK would. The client's own overhead (Python's
http.client) is the same for every system, so differences between systems are what they add.
"""

from __future__ import annotations

import http.client
import statistics
import time
from dataclasses import dataclass

from bench.measure import System
from bench.scenarios import Scenario


@dataclass(frozen=True, slots=True)
class TtftResult:
    scenario: str
    system: str
    samples_us: list[float]
    errors: int

    def percentile(self, q: int) -> float:
        if not self.samples_us:
            return float("nan")
        if len(self.samples_us) == 1:
            return self.samples_us[0]
        return statistics.quantiles(self.samples_us, n=100, method="inclusive")[q - 1]

    @property
    def p50_us(self) -> float:
        return statistics.median(self.samples_us) if self.samples_us else float("nan")


def _first_event_us(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str], body: bytes
) -> float | None:
    start = time.perf_counter()
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        resp.read()
        return None
    seen = b""
    first: float | None = None
    while first is None:
        data = resp.read1(65536)
        if not data:
            break
        seen += data
        if b"\n\n" in seen.replace(b"\r\n", b"\n").partition(b"data:")[2]:
            first = time.perf_counter()
    # The rest of the stream, so that the connection can carry the next request.
    resp.read()
    return None if first is None else (first - start) * 1e6


def measure_ttft(system: System, scenario: Scenario, samples: int, warmup: int = 20) -> TtftResult:
    """``samples`` sequential streaming requests after ``warmup`` unmeasured ones."""
    host, port = system.host_port
    target = system.target(scenario)
    out: list[float] = []
    errors = 0
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        for i in range(warmup + samples):
            try:
                us = _first_event_us(conn, target.path, target.headers, target.body)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
                us = None
            if us is None:
                errors += i >= warmup
            elif i >= warmup:
                out.append(us)
    finally:
        conn.close()
    return TtftResult(scenario.name, system.name, out, errors)
