"""The memory store's counters outlive its process through a snapshot file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from extproc.limitstore import Counter, MemoryStore


class Clocks:
    def __init__(self, monotonic: float, wall: float) -> None:
        self.monotonic, self.wall = monotonic, wall

    def store(self, path: Path) -> MemoryStore:
        return MemoryStore(lambda: self.monotonic, path, lambda: self.wall)


def test_counters_come_back_in_a_new_process_with_their_expiry(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    clocks = Clocks(monotonic=100.0, wall=1_000_000.0)

    async def spend() -> None:
        store = clocks.store(path)
        assert (await store.acquire([Counter("budget", 40, 60)], [40]))[0]
        await store.add([Counter("short", 1, 5)])
        await asyncio.sleep(MemoryStore.SAVE_EVERY + 0.2)  # saved without a clean close

    asyncio.run(spend())
    # Another process: its own monotonic clock; 10 s later by the wall clock.
    clocks.monotonic, clocks.wall = 5.0, 1_000_010.0
    restarted = clocks.store(path)
    ok, values = asyncio.run(restarted.acquire([Counter("budget", 0, 60)], [40]))
    assert not ok and values == [40]
    assert len(restarted) == 1  # "short" expired meanwhile
    clocks.monotonic += 51
    assert asyncio.run(restarted.acquire([Counter("budget", 1, 60)], [40]))[0]


def test_close_saves_at_once_and_a_broken_file_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"

    async def spend() -> None:
        store = MemoryStore(snapshot=path)
        await store.add([Counter("k", 3, 60)])
        await store.aclose()

    asyncio.run(spend())
    assert len(MemoryStore(snapshot=path)) == 1
    path.write_bytes(b"{not json")
    assert len(MemoryStore(snapshot=path)) == 0
