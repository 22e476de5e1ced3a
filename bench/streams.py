"""Memory with many open streams: N concurrent streaming requests held open, RSS sampled.

The streams go to a slow paced upstream (one event every couple of seconds), so every request
stays open in the system under test while the bench samples the resident memory of its
processes from /proc. An asyncio client opens them (a bounded number of connects in flight, so
the listen backlog is not what is measured), waits for each one's first event, holds them all
for a few seconds, then closes them. Bounded in time: whatever has not opened by the deadline is
reported as not opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import System
from bench.scenarios import Scenario


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass(slots=True)
class Memory:
    """Summed over a group's processes, in MB (10^6 bytes)."""

    rss_mb: float
    pss_mb: float
    processes: int

    @classmethod
    def of(cls, pids: list[int]) -> Memory:
        rss = sum(_status_kb(p, "VmRSS") for p in pids)
        pss = sum(_pss_kb(p) for p in pids)
        return cls(rss * 1024 / 1e6, pss * 1024 / 1e6, len(pids))


@dataclass(slots=True)
class StreamsResult:
    system: str
    wanted: int
    opened: int = 0
    failed: int = 0
    open_seconds: float = 0.0
    idle: dict[str, Memory] = field(default_factory=dict)  # before the streams, by group
    peak: dict[str, Memory] = field(default_factory=dict)  # highest RSS while they were open
    error: str = ""


def _request(host: str, port: int, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [
        f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _open_one(
    host: str, port: int, request: bytes, gate: asyncio.Semaphore, deadline: float
) -> asyncio.StreamWriter | None:
    """A connection whose stream has started (status 200 and a first ``data:``), or None."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with gate:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            async with asyncio.timeout(left):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                    raise ConnectionError(head[:100].decode(errors="replace"))
                seen = b""
                while b"data:" not in seen:
                    chunk = await reader.read(4096)
                    if not chunk:
                        raise ConnectionError("closed before the first event")
                    seen += chunk
        return writer
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        if writer is not None:
            writer.transport.abort()
        return None


def _peak(groups: Callable[[], dict[str, list[int]]], peak: dict[str, Memory]) -> None:
    for name, pids in groups().items():
        now = Memory.of(pids)
        if name not in peak or now.rss_mb > peak[name].rss_mb:
            peak[name] = now


async def _hold(
    system: System,
    scenario: Scenario,
    n: int,
    hold_seconds: float,
    open_timeout: float,
    result: StreamsResult,
) -> None:
    host, port = system.host_port
    target = system.target(scenario)
    request = _request(host, port, target.path, target.headers, target.body)
    gate = asyncio.Semaphore(64)
    start = time.monotonic()
    tasks = [
        asyncio.ensure_future(_open_one(host, port, request, gate, start + open_timeout))
        for _ in range(n)
    ]
    writers: list[asyncio.StreamWriter] = []
    try:
        pending: set[asyncio.Future[asyncio.StreamWriter | None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=0.25)
            _peak(system.memory_groups, result.peak)
            for task in done:
                writer = task.result()
                if writer is None:
                    result.failed += 1
                else:
                    writers.append(writer)
        result.opened = len(writers)
        result.open_seconds = time.monotonic() - start
        # All open at once: memory settles (buffers, per-stream state) within a moment.
        until = time.monotonic() + hold_seconds
        while time.monotonic() < until:
            _peak(system.memory_groups, result.peak)
            await asyncio.sleep(0.25)
    finally:
        for task in tasks:
            task.cancel()
        for writer in writers:
            writer.transport.abort()
        await asyncio.sleep(0)


def _raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def hold_streams(
    system: System,
    scenario: Scenario,
    n: int,
    hold_seconds: float = 3.0,
    open_timeout: float = 30.0,
) -> StreamsResult:
    """Open ``n`` streams of ``scenario`` on ``system``, sample memory, close them."""
    _raise_fd_limit(n)
    result = StreamsResult(system=system.name, wanted=n)
    result.idle = {name: Memory.of(pids) for name, pids in system.memory_groups().items()}
    try:
        asyncio.run(_hold(system, scenario, n, hold_seconds, open_timeout, result))
    except OSError as exc:
        result.error = str(exc)
    return result
