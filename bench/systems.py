"""How each measured system is started, and started again after a crash: the upstreams, bare
Envoy, the Python floors, the gateway in both accounting modes (``ai-gateway run`` through the
test harness), and the peers LiteLLM and Portkey."""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cpu
from bench.bootstraps import bare_bootstrap, floor_bootstrap, upstream_bootstrap
from bench.measure import System, Target, log
from bench.payloads import BEDROCK_ACCESS_KEY, BEDROCK_MODEL_ID, BEDROCK_REGION
from bench.peers import (
    CACHE,
    LITELLM_VERSION,
    LiteLLMProxy,
    PortkeyGateway,
    Upstreams,
    check_loopback,
    litellm_config,
    litellm_python,
    peer_system,
    portkey_entry,
)
from bench.processes import (
    BenchError,
    EnvoyProcess,
    ManagedProcess,
    admin_get,
    port_open,
    server_info,
)
from bench.records import BARE, FLOOR, FLOOR_2, GATEWAY, GATEWAY_ENVOY, LITELLM, PORTKEY
from bench.scenarios import Scenario
from extproc.config import parse_config
from tests.harness import Gateway, free_port

REPO = Path(__file__).resolve().parent.parent

KEY_ENV = "BENCH_API_KEY"
MASTER_KEY_ENV = "BENCH_LITELLM_MASTER_KEY"
AWS_KEY_ENV = "BENCH_AWS_ACCESS_KEY_ID"
AWS_SECRET_ENV = "BENCH_AWS_SECRET_ACCESS_KEY"
# The gateway strips the client's credential and adds the provider's; sending one (a wrong one
# for the upstream) makes every request prove that, not only the sanity check.
CLIENT_KEY = "sk-bench-client-not-for-upstream"
# The held streams' upstream sends an event every few seconds: every stream stays open for
# longer than the bench needs to open them all and sample memory, which then closes them.
HOLD_GAP_MS = 3000
# What bare Envoy sends in the Bedrock scenario: a SigV4-shaped header the upstream accepts
# (it checks the key id, not the signature). The gateway computes a real signature instead.
_BARE_SIGV4 = {
    "Authorization": f"AWS4-HMAC-SHA256 Credential={BEDROCK_ACCESS_KEY}/20250101/"
    f"{BEDROCK_REGION}/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date,"
    " Signature=" + "0" * 64,
    "X-Amz-Date": "20250101T000000Z",
}


def gateway_config(upstreams: Upstreams, items: list[Scenario]) -> dict[str, Any]:
    """One backend and one model per scenario, each backend on its own upstream prefix."""
    backends: dict[str, dict[str, Any]] = {}
    models: list[dict[str, Any]] = []
    for s in items:
        if s.bedrock:
            backends[s.model] = {
                "schema": "aws_bedrock",
                "url": f"http://127.0.0.1:{upstreams.ports[s.upstream]}",
                "region": BEDROCK_REGION,
                "access_key_id": f"${{{AWS_KEY_ENV}}}",
                "secret_access_key": f"${{{AWS_SECRET_ENV}}}",
            }
            models.append(
                {"name": s.model, "backends": [{"backend": s.model, "model": BEDROCK_MODEL_ID}]}
            )
        else:
            backends[s.model] = {
                "schema": "openai",
                "url": upstreams.base_url(s),
                "api_key": f"${{{KEY_ENV}}}",
            }
            models.append({"name": s.model, "backends": [{"backend": s.model}]})
    return {"backends": backends, "models": models}


def _gateway_processes(gw: Gateway) -> dict[str, list[int]]:
    # The harness keeps its process private; every process of this gateway (supervisor,
    # workers, Envoy) has an argument inside the harness's directory, which is public.
    found = cpu.processes_with_arg_under(gw.config_path.parent)
    envoy = [pid for pid, argv in found.items() if Path(argv[0]).name == "envoy"]
    return {"envoy": envoy, "sidecar": [pid for pid in found if pid not in envoy]}


def _distinct_ports(n: int) -> list[int]:
    # free_port() may hand out the same port twice in a row; the harness picks its own too.
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


@dataclass(frozen=True, slots=True)
class Ports:
    """Where everything listens, all on 127.0.0.1."""

    upstream: int
    upstream_admin: int
    paced: int
    hold: int
    bare: int
    bare_admin: int
    litellm: int
    portkey: int
    floor: int
    floor_admin: int
    floor2: int
    floor2_admin: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*_distinct_ports(len(dataclasses.fields(cls))))


@dataclass(slots=True)
class Facts:
    """What starting the systems showed: versions, processes, workers (for the report)."""

    versions: dict[str, str] = field(default_factory=dict)
    shared: dict[str, list[int]] = field(default_factory=dict)  # the upstreams' processes
    # Envoy --concurrency of bare Envoy and the floors: the gateway's, once one has started.
    concurrency: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))
    sidecar_workers: int = 0
    floor_workers: int = 0
    litellm_workers: int = 0


class Factory:
    """Starts each system of a run on its own ports, every process entered in a ``stack``."""

    def __init__(self, args: argparse.Namespace, configured: list[Scenario], workdir: Path) -> None:
        self.args = args
        self.configured = configured  # the scenarios every system is configured for
        self.workdir = workdir
        self.api_key = f"sk-bench-{secrets.token_hex(8)}"
        self.env = {
            KEY_ENV: self.api_key,
            AWS_KEY_ENV: BEDROCK_ACCESS_KEY,
            AWS_SECRET_ENV: secrets.token_urlsafe(30),
        }
        self.ports = Ports.pick()
        self.upstreams = Upstreams(
            {"envoy": self.ports.upstream, "paced": self.ports.paced, "hold": self.ports.hold}
        )
        self.facts = Facts()

    def start_upstreams(self, stack: contextlib.ExitStack) -> None:
        workdir = self.workdir
        log("starting the upstreams")
        boot = upstream_bootstrap(
            self.ports.upstream, self.ports.upstream_admin, self.api_key, self.configured
        )
        upstream = stack.enter_context(
            EnvoyProcess("upstream", boot, workdir, self.ports.upstream_admin, 1)
        )
        procs: list[ManagedProcess] = [upstream]
        gaps = {"paced": self.args.paced_gap_ms, "hold": HOLD_GAP_MS}
        for s in self.configured:
            if s.upstream in gaps:
                port = self.upstreams.ports[s.upstream]
                argv = [sys.executable, "-m", "bench.paced", str(port)]
                argv += [s.upstream_path, self.api_key, f"{gaps[s.upstream]:g}"]
                proc = ManagedProcess(
                    f"{s.upstream} upstream", argv, functools.partial(port_open, port), cwd=REPO
                )
                procs.append(stack.enter_context(proc))
        self.facts.shared = {"upstream": [p.pid for p in procs if p.pid is not None]}
        self.facts.versions["Envoy"] = str(
            server_info(upstream.admin_url).get("version", "?/?")
        ).split("/")[1]

    def start_own(self, stack: contextlib.ExitStack, own: list[str]) -> list[System]:
        """Those of bare Envoy, the floors and the gateways that are in ``own``."""
        workdir = self.workdir
        config = gateway_config(self.upstreams, self.configured)
        gateways = [
            self._start_gateway(stack, config, GATEWAY) if GATEWAY in own else None,
            self._start_gateway(stack, {**config, "accounting": {"mode": "envoy"}}, GATEWAY_ENVOY)
            if GATEWAY_ENVOY in own
            else None,
        ]
        systems: list[System] = []
        if BARE in own:
            log("starting bare Envoy")
            listen = {"host": "127.0.0.1", "port": self.ports.bare}
            bare_config = parse_config({**config, "listen": listen}, env=self.env)
            prefixes = {s.model: s.upstream_prefix for s in self.configured}
            boot = bare_bootstrap(bare_config, self.ports.bare, self.ports.bare_admin, prefixes)
            bare = stack.enter_context(
                EnvoyProcess("bare", boot, workdir, self.ports.bare_admin, self.facts.concurrency)
            )
            systems.append(self._bare_system(bare))
        if FLOOR in own:
            systems.append(self._start_floor(stack, config, hand_off=False))
        if FLOOR_2 in own:
            systems.append(self._start_floor(stack, config, hand_off=True))
        return systems + [g for g in gateways if g is not None]

    def _start_floor(
        self, stack: contextlib.ExitStack, config: dict[str, Any], hand_off: bool
    ) -> System:
        workdir = self.workdir
        workers = self.facts.sidecar_workers or self.args.workers or (os.cpu_count() or 1)
        self.facts.floor_workers = workers
        name, port, admin = (
            (FLOOR_2, self.ports.floor2, self.ports.floor2_admin)
            if hand_off
            else (FLOOR, self.ports.floor, self.ports.floor_admin)
        )
        log(f"starting the {name} (bare Envoy + {workers} do-nothing ext_proc workers)")
        sockets = workdir / ("floor-2" if hand_off else "floor")
        sockets.mkdir()
        listen = {"host": "127.0.0.1", "port": port}
        sidecar = {"socket_dir": str(sockets), "workers": workers}
        floor_config = parse_config({**config, "listen": listen, "sidecar": sidecar}, env=self.env)
        pids: list[int] = []
        for i in range(workers):
            socket = sockets / f"worker-{i}.sock"
            argv = [sys.executable, "-m", "bench.floor", f"unix:{socket}"]
            argv += ["--hand-off"] if hand_off else []
            proc = ManagedProcess(f"{name} worker {i}", argv, socket.exists, cwd=REPO)
            pids.append(stack.enter_context(proc).pid or 0)
        prefixes = {s.model: s.upstream_prefix for s in self.configured}
        boot = floor_bootstrap(floor_config, port, admin, prefixes)
        label = "floor-2" if hand_off else "floor"
        envoy = stack.enter_context(
            EnvoyProcess(label, boot, workdir, admin, self.facts.concurrency)
        )
        return self._bare_system(envoy, name, port, sidecar=pids)

    def _start_gateway(
        self, stack: contextlib.ExitStack, config: dict[str, Any], name: str
    ) -> System:
        log(f"starting the {name} (ai-gateway run)")
        # Its own stack, so that a gateway that crashed can be replaced by a fresh one.
        own = contextlib.ExitStack()
        stack.callback(own.close)
        try:
            gw = own.enter_context(Gateway(config, env=self.env, workers=self.args.workers))
        except RuntimeError as exc:  # the harness's "did not start", with its output
            raise BenchError(str(exc)) from None
        own.callback(shutil.rmtree, gw.config_path.parent, ignore_errors=True)
        info = server_info(gw.admin_url)
        # Bare Envoy gets as many worker threads as the gateway's Envoy (1 on 2 cores).
        self.facts.concurrency = int(info["command_line_options"]["concurrency"])
        argvs = cpu.processes_with_arg_under(gw.config_path.parent).values()
        self.facts.sidecar_workers = sum("worker" in argv for argv in argvs)

        def restart() -> System:
            own.close()
            return self._start_gateway(stack, config, name)

        kept: collections.deque[str] = collections.deque(maxlen=200)

        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"}
        return System(
            name=name,
            url=gw.url,
            target=lambda s: Target(s.client_path, headers, s.request),
            processes=lambda: _gateway_processes(gw),
            diagnostics=lambda: "gateway output:\n" + "".join(gw.output[-30:]),
            exact=lambda s: not s.bedrock,
            admin_url=gw.admin_url,
            # The harness keeps every line the gateway prints (its access log): dropping
            # them between phases keeps a long run's memory flat; the other lines (warnings,
            # a crash's backtrace) are kept for the report.
            after_phase=lambda: _drop_access_log(gw.output, kept),
            memory_groups=lambda: _gateway_processes(gw),
            alive=lambda: _admin_live(gw.admin_url),
            restart=restart,
            death=lambda: _death_reason([*kept, *gw.output]),
        )

    def _bare_system(
        self,
        bare: EnvoyProcess,
        name: str = BARE,
        port: int | None = None,
        sidecar: list[int] | None = None,
    ) -> System:
        """Bare Envoy, or (with ``sidecar`` workers) the Python floor built on it."""

        def target(s: Scenario) -> Target:
            headers = {"Content-Type": "application/json"}
            if s.bedrock:
                headers.update(_BARE_SIGV4)
            else:
                headers["Authorization"] = f"Bearer {self.api_key}"
            return Target(s.upstream_path, headers, s.bare_request or s.request)

        def envoy() -> dict[str, list[int]]:
            return {"envoy": [bare.pid or 0], **({"sidecar": sidecar} if sidecar else {})}

        system = System(
            name=name,
            url=f"http://127.0.0.1:{port or self.ports.bare}",
            target=target,
            processes=envoy,
            diagnostics=lambda: f"{name} output:\n" + "".join(bare.tail),
            exact=lambda s: True,
            admin_url=bare.admin_url,
            memory_groups=envoy,
            alive=bare.alive,
            restart=lambda: _restarted(bare, system),
            death=lambda: _death_reason(list(bare.tail)),
        )
        return system

    def start_peer(self, peer: str, stack: contextlib.ExitStack) -> System:
        """LiteLLM or Portkey (installed on first use: ``PeerUnavailable`` if that fails)."""
        workdir = self.workdir
        if peer == LITELLM:
            python = litellm_python(CACHE)
            self.facts.versions["LiteLLM"] = LITELLM_VERSION
            workers = (
                self.args.litellm_workers or self.facts.sidecar_workers or (os.cpu_count() or 1)
            )
            self.facts.litellm_workers = workers
            log(f"starting the LiteLLM proxy ({workers} workers)")
            config = litellm_config(self.configured, self.upstreams, KEY_ENV, MASTER_KEY_ENV)
            master_key = f"sk-bench-master-{secrets.token_hex(16)}"
            env = {KEY_ENV: self.api_key, MASTER_KEY_ENV: master_key}
            proc: ManagedProcess = LiteLLMProxy(
                python, config, workdir, self.ports.litellm, workers, env
            )
            stack.enter_context(proc)
            check_loopback(proc, self.ports.litellm)
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {master_key}"}
            return peer_system(
                LITELLM,
                proc,
                f"http://127.0.0.1:{self.ports.litellm}",
                lambda s: Target(s.client_path, headers, s.request),
            )
        entry = portkey_entry(CACHE, self.args.portkey_version)
        self.facts.versions["Portkey gateway"] = self.args.portkey_version
        self.facts.versions["Node.js"] = _node_version()
        log("starting the Portkey gateway")
        proc = PortkeyGateway(entry, workdir, self.ports.portkey)
        stack.enter_context(proc)
        check_loopback(proc, self.ports.portkey)

        def target(s: Scenario) -> Target:
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.api_key}",
                "x-portkey-provider": "openai",
                "x-portkey-custom-host": self.upstreams.base_url(s),
            }
            return Target(s.client_path, headers, s.request)

        return peer_system(PORTKEY, proc, f"http://127.0.0.1:{self.ports.portkey}", target)


def _admin_live(admin_url: str) -> bool:
    try:
        return admin_get(admin_url, "/ready", timeout=2.0).strip() == b"LIVE"
    except OSError:
        return False


def _drop_access_log(output: list[str], kept: collections.deque[str]) -> None:
    lines = output[:]
    del output[: len(lines)]  # the harness's thread appends meanwhile: keep those
    kept.extend(line for line in lines if not line.startswith("{"))


def _death_reason(output: list[str]) -> str:
    """What a crashed system printed about it: Envoy's fatal signal, the supervisor's line."""
    found = []
    for line in output:
        text = line.strip()
        if "Caught " in text and "backtrace" in text:
            found.append(text.rpartition("] ")[2])
        elif "exited with status" in text:
            found.append(text.partition(": ")[2] or text)
    return "; ".join(dict.fromkeys(found))[:300]


def _restarted(proc: ManagedProcess, system: System) -> System:
    proc.stop()
    proc.__enter__()
    return system


def _node_version() -> str:
    try:
        out = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip().lstrip("v") or "?"
