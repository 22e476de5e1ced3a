"""What a run records: the measured systems' names, each measurement, the facts of the run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.wrk import WrkResult

if TYPE_CHECKING:
    from bench.streams import StreamsResult
    from bench.ttft import TtftResult

BARE = "bare envoy"
FLOOR = "python floor"  # bare Envoy + a do-nothing Python ext_proc (bench/floor.py)
FLOOR_2 = "python floor, 2 msgs"  # the same, ending each stream after the request body
GATEWAY = "gateway"
# The same gateway with accounting.mode: envoy (Envoy reads pass-through answers; see README).
GATEWAY_ENVOY = "gateway, envoy accounting"
GATEWAYS = (GATEWAY, GATEWAY_ENVOY)
LITELLM = "litellm"
PORTKEY = "portkey"
SYSTEMS = (BARE, FLOOR, FLOOR_2, GATEWAY, GATEWAY_ENVOY, LITELLM, PORTKEY)
PEERS = (LITELLM, PORTKEY)


@dataclass(frozen=True, slots=True)
class Measurement:
    scenario: str
    system: str
    throughput: WrkResult  # at N connections
    latency: WrkResult  # at 1 connection
    non_2xx: int  # answers that were not 2xx, both measured phases
    cpu_us_per_request: dict[str, float]  # at N connections, by process group
    extproc_msgs_per_request: float | None  # Envoy -> sidecar messages, None for bare Envoy
    other_cores: float = 0.0  # cores busy with work outside the bench's processes
    runs: int = 1  # measured runs (more than one: the earlier ones were disturbed)


@dataclass(slots=True)
class RunInfo:
    date: str
    commit: str
    machine: list[str]
    versions: dict[str, str]
    settings: list[str]
    connections: int
    scenarios: list[str]  # report order
    names: dict[str, str]  # scenario key (chat, stream, ...) -> name
    peer_scenarios: list[str]  # the ones LiteLLM and Portkey run
    stream_scenarios: list[str]  # the ones with a time-to-first-token figure
    streams: int  # open streams of the memory test (0: not run)
    noise_limit: float
    unavailable: dict[str, str] = field(default_factory=dict)  # peer -> reason
    failures: dict[tuple[str, str], str] = field(default_factory=dict)  # (system, scenario)
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Results:
    rows: list[Measurement] = field(default_factory=list)
    ttft: list[TtftResult] = field(default_factory=list)
    streams: list[StreamsResult] = field(default_factory=list)


def find(rows: Sequence[Measurement], scenario: str, system: str) -> Measurement | None:
    return next((m for m in rows if m.scenario == scenario and m.system == system), None)


def floor_of(gw: Measurement) -> str:
    """The floor with the gateway's shape in this scenario: two messages per request when it
    handed the answers off to Envoy (envoy accounting, pass-through chat), four otherwise."""
    msgs = gw.extproc_msgs_per_request
    return FLOOR_2 if msgs is not None and msgs < 3 else FLOOR


def find_ttft(results: Sequence[TtftResult], scenario: str, system: str) -> TtftResult | None:
    return next((t for t in results if t.scenario == scenario and t.system == system), None)
