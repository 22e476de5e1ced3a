"""The peers: LiteLLM proxy and Portkey gateway, installed into bench/.cache and run on loopback.

Neither is a project dependency. Each is installed on first use into its own environment under
``bench/.cache`` (gitignored): a virtualenv for LiteLLM (``litellm[proxy]``, pinned), an npm
prefix for Portkey (``@portkey-ai/gateway``, pinned). A failed install or start makes that peer
"not available: <reason>" in the report; the rest of the run goes on.

Both are pointed at the same fast upstream as bare Envoy and the gateway:

- LiteLLM: a ``model_list`` config with one ``openai/<model>`` entry per scenario whose
  ``api_base`` is the scenario's upstream prefix, the provider key from the environment, and
  per-token prices so its cost tracking runs as for a known model; no database, no master key.
  Started with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (no fetch of the price list), and as many
  uvicorn workers as the gateway has sidecar workers.
- Portkey: ``x-portkey-provider: openai`` and ``x-portkey-custom-host: <upstream prefix>`` on
  every request, the client's ``Authorization`` passed through to the upstream (as with bare
  Envoy). Its server binds every interface by default; a small launcher of ours makes it listen
  on 127.0.0.1 only, and the bench checks the listening socket before sending anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.measure import System, Target, log
from bench.processes import ManagedProcess, descendants, listens_on_loopback_only
from bench.scenarios import Scenario

LITELLM = "litellm"
PORTKEY = "portkey"
LITELLM_VERSION = "1.108.7"
PORTKEY_PACKAGE = "@portkey-ai/gateway"
PORTKEY_VERSION = "1.15.2"
# Portkey depends on @hono/node-server ^1.3.3 and ships no lockfile, so npm picks the newest
# 1.x. From 1.14 on, `new Response(stream, upstreamResponse)` keeps the upstream's immutable
# Headers, and Portkey's own header append then throws ("TypeError: immutable"): every stream
# and embeddings answer becomes a 500. 1.13.8 (the last release without that) is pinned with an
# npm override; the bench reports it.
HONO_NODE_SERVER = "1.13.8"
CACHE = Path(__file__).resolve().parent / ".cache"
# gpt-4o-mini's list prices, so that LiteLLM's cost tracking computes a cost per request.
_PRICES = {"input_cost_per_token": 0.15e-6, "output_cost_per_token": 0.60e-6}


class PeerUnavailable(Exception):
    """The peer could not be installed or started: the reason goes into the report."""


def _run(argv: list[str], timeout: float, env: Mapping[str, str] | None = None) -> str:
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            env=dict(env) if env is not None else None,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"`{' '.join(argv[:3])} ...` failed: {exc}") from None
    if out.returncode != 0:
        lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        # pip and npm put the reason last; drop pip's warnings about missing local indexes.
        useful = [ln for ln in lines if "is ignored: it is neither" not in ln]
        raise PeerUnavailable(
            f"`{' '.join(argv[:4])} ...` exited {out.returncode}: " + " / ".join(useful[-3:])[-400:]
        )
    return out.stdout


def _quiet_env() -> dict[str, str]:
    return {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "NPM_CONFIG_FUND": "false"}


def litellm_python(cache: Path = CACHE) -> Path:
    """The LiteLLM venv's python, installing ``litellm[proxy]==VERSION`` there if needed."""
    venv = cache / LITELLM
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
    if python.exists():
        try:
            if _run(probe, 60).strip() == LITELLM_VERSION:
                return python
        except PeerUnavailable:
            pass
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once; about a minute)")
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], 300)
    pip = [str(python), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"]
    _run(pip, 1800, _quiet_env())
    if _run(probe, 60).strip() != LITELLM_VERSION:
        raise PeerUnavailable(f"litellm {LITELLM_VERSION} not importable after pip install")
    return python


def portkey_entry(cache: Path = CACHE, version: str = PORTKEY_VERSION) -> Path:
    """Portkey's server script, installing ``@portkey-ai/gateway@version`` with npm if needed."""
    prefix = cache / PORTKEY
    package = prefix / "node_modules" / "@portkey-ai" / "gateway"
    entry = package / "build" / "start-server.js"
    hono_dir = prefix / "node_modules" / "@hono" / "node-server"

    def installed() -> bool:
        try:
            meta = json.loads((package / "package.json").read_text())
            hono = json.loads((hono_dir / "package.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(
            meta.get("version") == version
            and hono.get("version") == HONO_NODE_SERVER
            and entry.exists()
        )

    if installed():
        return entry
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailable("node and npm are not installed")
    major = _run([node, "--version"], 30).strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 18:
        raise PeerUnavailable(f"node {major} is too old (Portkey needs 18 or newer)")
    log(f"installing {PORTKEY_PACKAGE}@{version} into {prefix} (once)")
    prefix.mkdir(parents=True, exist_ok=True)
    manifest = {"private": True, "overrides": {"@hono/node-server": HONO_NODE_SERVER}}
    (prefix / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    argv = [npm, "install", "--no-audit", "--no-fund", "--save-exact", "--prefix", str(prefix)]
    _run([*argv, f"{PORTKEY_PACKAGE}@{version}"], 900, _quiet_env())
    if not installed():
        raise PeerUnavailable(f"npm install left no {entry}")
    return entry


def _http_ok(url: str, expect: bytes = b"") -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback)
            return resp.status == 200 and expect in resp.read()
    except OSError:
        return False


def _base_env(extra: Mapping[str, str]) -> dict[str, str]:
    # Only what a server needs: no provider keys or proxies of the caller's environment.
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **extra}


@dataclass(frozen=True, slots=True)
class Upstreams:
    """Where each scenario's upstream listens (the port of its upstream kind)."""

    ports: Mapping[str, int]  # Scenario.upstream -> port

    def base_url(self, scenario: Scenario) -> str:
        return f"http://127.0.0.1:{self.ports[scenario.upstream]}{scenario.upstream_prefix}"


def litellm_config(
    scenarios: list[Scenario], upstreams: Upstreams, key_env: str, master_key_env: str
) -> dict[str, object]:
    models = []
    for s in scenarios:
        info: dict[str, object] = dict(_PRICES)
        if s.kind == "embeddings":
            info = {"mode": "embedding", "input_cost_per_token": 0.02e-6}
        models.append(
            {
                "model_name": s.model,
                "litellm_params": {
                    "model": f"openai/{s.model}",
                    "api_base": upstreams.base_url(s),
                    "api_key": f"os.environ/{key_env}",
                },
                "model_info": info,
            }
        )
    return {
        "model_list": models,
        # No retries: a failure should show as a failure, as with the other systems.
        "litellm_settings": {"num_retries": 0, "request_timeout": 120},
        # LiteLLM refuses to start without a master key (clients then send it as their key).
        "general_settings": {"master_key": f"os.environ/{master_key_env}"},
    }


class LiteLLMProxy(ManagedProcess):
    def __init__(
        self,
        python: Path,
        config: dict[str, object],
        workdir: Path,
        port: int,
        workers: int,
        env: Mapping[str, str],
    ) -> None:
        path = workdir / "litellm.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.url = f"http://127.0.0.1:{port}"
        argv = [str(python.parent / "litellm"), "--config", str(path)]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", str(workers)]
        server_env = _base_env(
            {
                **env,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
                "PYTHONUNBUFFERED": "1",
            }
        )
        super().__init__(
            "LiteLLM proxy",
            argv,
            lambda: _http_ok(f"{self.url}/health/liveliness"),
            env=server_env,
            cwd=workdir,
            start_timeout=180,
        )


# Portkey's start-server.js calls serve({fetch, port}) with no hostname: Node then listens on
# every interface. This launcher (ours) pins every listen() of the process to 127.0.0.1 and then
# loads the unmodified server.
_LAUNCHER = """\
import net from "node:net";
import { pathToFileURL } from "node:url";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number") {
    const callback = args.find((a) => typeof a === "function");
    return listen.call(this, { port: args[0], host: "127.0.0.1" }, callback);
  }
  if (args[0] && typeof args[0] === "object" && args[0].port !== undefined) {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
await import(pathToFileURL(process.argv[2]).href);
"""


class PortkeyGateway(ManagedProcess):
    def __init__(self, entry: Path, workdir: Path, port: int) -> None:
        launcher = workdir / "portkey-loopback.mjs"
        launcher.write_text(_LAUNCHER)
        self.url = f"http://127.0.0.1:{port}"
        node = shutil.which("node") or "node"
        # start-server.js reads its options from argv after its own path.
        argv = [node, str(launcher), str(entry), f"--port={port}", "--headless"]
        super().__init__(
            "Portkey gateway",
            argv,
            lambda: _http_ok(self.url + "/", b"AI Gateway"),
            env=_base_env({"NODE_ENV": "production"}),
            cwd=workdir,
            start_timeout=60,
        )


def peer_system(
    name: str,
    proc: ManagedProcess,
    url: str,
    target: Callable[[Scenario], Target],
) -> System:
    def processes() -> dict[str, list[int]]:
        return {"peer": descendants(proc.pid) if proc.pid else []}

    def restart() -> System:
        proc.stop()
        proc.__enter__()
        return system

    system = System(
        name=name,
        url=url,
        target=target,
        processes=processes,
        diagnostics=lambda: f"{proc.name} output:\n" + "".join(proc.tail),
        supports=lambda s: s.peers,
        memory_groups=processes,
        alive=proc.alive,
        restart=restart,
        death=lambda: "".join(list(proc.tail)[-3:]).strip()[-300:],
    )
    return system


def check_loopback(proc: ManagedProcess, port: int) -> None:
    if not listens_on_loopback_only(port):
        proc.stop()
        raise PeerUnavailable(f"{proc.name} listens on more than loopback (port {port})")
