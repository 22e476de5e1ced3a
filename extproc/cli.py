"""``ai-gateway``: run, serve, render, check."""

from __future__ import annotations

import argparse
import getpass
import logging
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from extproc.backendconfig import CREDENTIAL_VARIABLES
from extproc.config import WILDCARD_MODEL, ConfigError, GatewayConfig, default_config, load_config
from extproc.ports import PortInUse, check_free
from extproc.supervisor import Drain, Supervisor

log = logging.getLogger("extproc")

NO_PROVIDER_HINT = """\
No provider is configured, so every model request will answer 404.
Set one of these and restart, or pass a config file with -c:
  OPENAI_API_KEY=sk-...            (and optionally OPENAI_BASE_URL=https://.../v1)
  OPENAI_BASE_URL=http://127.0.0.1:8000/v1   (a keyless OpenAI-compatible server: vLLM, Ollama)
"""


_FLUSH_TIME = 10.0  # seconds a stopping worker may spend exporting its last telemetry


def _load(path: str | None, secrets: bool = True) -> GatewayConfig:
    return load_config(path, secrets=secrets) if path else default_config()


def _adjusted(config: GatewayConfig, state: str | None, host: str | None) -> GatewayConfig:
    """The config as ``run`` (its state directory holds the sockets) or ``serve --host`` sees
    it. The supervisor renders Envoy from it and each worker makes it from the same file and
    options (:func:`_worker_argv`): one config on both sides."""
    sidecar, admin = config.sidecar, config.admin
    if state is not None:
        sidecar = sidecar.model_copy(update={"socket_dir": state})
        admin = admin.model_copy(update={"envoy_socket": str(Path(state) / "envoy-admin.sock")})
    if host is not None:
        sidecar = sidecar.model_copy(update={"host": host})
    return config.model_copy(update={"sidecar": sidecar, "admin": admin})


def _worker_argv(
    args: argparse.Namespace, address: str, state: str | None, host: str | None
) -> list[str]:
    argv = [sys.executable, "-m", "extproc", "--log-level", args.log_level, "worker", address]
    argv += ["-c", args.config] if args.config else []
    argv += ["--state-dir", state] if state is not None else []
    return argv + (["--host", host] if host is not None else [])


def cmd_worker(args: argparse.Namespace) -> int:
    from extproc.server import run_worker

    run_worker(_adjusted(_load(args.config), args.state_dir, args.host), args.address)
    return 0


def _supervise_workers(
    args: argparse.Namespace,
    config: GatewayConfig,
    addresses: list[str],
    drain: Drain | None = None,
    state: str | None = None,
    host: str | None = None,
) -> Supervisor:
    # A worker given SIGTERM keeps serving its open streams for the drain time, then flushes
    # its telemetry: that is how long it may take before it is killed.
    # A worker that cannot listen would only be restarted over and over.
    check_free(_tcp(a, "a sidecar worker's") for a in addresses if not a.startswith("unix:"))
    sup = Supervisor(drain, grace=config.http.drain_time + _FLUSH_TIME)
    for i, address in enumerate(addresses):
        sup.add(f"worker-{i}", _worker_argv(args, address, state, host), restart=True)
    return sup


def _start_metrics(config: GatewayConfig, directory: Path, host: str | None = None) -> None:
    from extproc.prometheus import prepare_directory, serve_metrics

    prepare_directory(directory)
    sidecar = config.sidecar
    address = sidecar.metrics_address() if host is None else f"{host}:{sidecar.metrics_port}"
    if not address.startswith("unix:"):
        check_free([_tcp(address, "the sidecar's metrics")])
    serve_metrics(address, directory, sidecar.tls)


def _tcp(address: str, what: str) -> tuple[str, int, str]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port), what


def cmd_serve(args: argparse.Namespace) -> int:
    from extproc.render import sidecar_addresses

    override = args.host or None
    config = _adjusted(_load(args.config), None, override)
    refusal = config.sidecar.plaintext_error()
    if refusal:
        raise ConfigError(refusal)
    host = config.sidecar.host
    with tempfile.TemporaryDirectory(prefix="ai-gateway-metrics-") as metrics_dir:
        _start_metrics(config, Path(metrics_dir), host)
        addresses = sidecar_addresses(config, host)
        sup = _supervise_workers(args, config, addresses, host=override)
        sup.start_all()
        log.info("sidecar serving %d workers", len(sup.children))
        return sup.run()


def cmd_run(args: argparse.Namespace) -> int:
    from extproc import statedir

    config = _load(args.config)
    state = Path(args.state_dir or tempfile.mkdtemp(prefix=statedir.TEMP_PREFIX))
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)  # the sockets in it are the sidecar's ports: the owner's alone
    try:
        statedir.claim(state)
    except statedir.StateInUse as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    if not args.state_dir:
        statedir.sweep_temp(keep=state)
    try:
        # Before anything heavy is imported or started: Envoy would say so too, but only in
        # its log, after the workers started.
        check_free(
            [
                (config.listen.host, config.listen.port, "the gateway's"),
                (config.admin.host, config.admin.port, "the admin"),
            ]
        )
        return _run(args, config, state)
    finally:
        statedir.release(state)
        if not args.state_dir:
            shutil.rmtree(state, ignore_errors=True)


def envoy_environment(config: GatewayConfig, env: dict[str, str]) -> dict[str, str]:
    """The environment Envoy runs with: the supervisor's, without any credential in it: the
    variables every schema's credential chain reads, whatever the config says, and every
    value the config's backends hold as a secret."""
    secrets_ = {
        s.get_secret_value()
        for backend in config.backends.values()
        for s in backend.secrets()
        if s.get_secret_value()
    }
    return {k: v for k, v in env.items() if k not in CREDENTIAL_VARIABLES and v not in secrets_}


def upstreams(config: GatewayConfig) -> str:
    """What the start banner says the gateway sends requests to (no credential, no userinfo)."""
    lines = []
    for name, backend in config.backends.items():
        scheme, _, _, path = backend.endpoint()
        models = [m.name for m in config.models if m.backend_entry(name) is not None]
        named = ["any model name" if m == WILDCARD_MODEL else m for m in models]
        served = ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
        target = f"{scheme}://{backend.authority()}{path}"
        lines.append(f"  {name}: {target}  ({served or 'no model routes to it'})")
    return "Upstreams:\n" + "\n".join(lines)


def _run(args: argparse.Namespace, config: GatewayConfig, state: Path) -> int:
    from extproc import statedir
    from extproc.render import render_yaml, sidecar_addresses
    from extproc.supervisor import EnvoyDrain, envoy_binary, wait_ready

    config = _adjusted(config, str(state), None)
    _start_metrics(config, state / "prometheus")
    envoy_yaml = state / "envoy.yaml"
    envoy_yaml.write_text(render_yaml(config, source=args.config or "<embedded default>"))
    addresses = sidecar_addresses(config)
    settle = 2 * config.accounting.flush_interval if config.accounting.by_envoy else 0.0
    drain = EnvoyDrain(config.admin.envoy_socket, config.http.drain_time, settle=settle)
    sup = _supervise_workers(args, config, addresses, drain, str(state))
    concurrency = args.envoy_concurrency or max(1, (os.cpu_count() or 2) // 2)
    envoy_argv = [
        envoy_binary(),
        "-c",
        str(envoy_yaml),
        "--concurrency",
        str(concurrency),
        "--log-level",
        args.envoy_log_level,
        "--base-id",
        str(os.getpid() % 60000),
        # Access log lines reach stdout within half a second (Envoy's default is 10 s).
        "--file-flush-interval-msec",
        "500",
        # SIGTERM drains (see EnvoyDrain): every connection is told to close at once.
        "--drain-strategy",
        "immediate",
        "--drain-time-s",
        str(max(1, math.ceil(config.http.drain_time))),
    ]
    envoy = sup.add(
        "envoy",
        envoy_argv,
        restart=False,
        env=envoy_environment(config, dict(os.environ)),
        keep_stderr=True,
    )
    sup.start_all()
    statedir.write(state, {"envoy": envoy.proc.pid if envoy.proc else 0})
    admin_url = f"http://{config.admin.host}:{config.admin.port}"

    def gave_up() -> bool:
        return sup.stopping or (envoy.proc is not None and envoy.proc.poll() is not None)

    if not wait_ready(admin_url, addresses, cancelled=gave_up):
        sup.stop()
        if sup.stopping:
            return 0  # asked to stop while starting
        if envoy.proc is not None and envoy.proc.poll() is not None:
            log.error("the gateway could not start: %s", envoy.exit_reason())
        else:
            log.error("the gateway did not become ready; see the messages above")
        return 1
    url = f"http://{config.listen.host}:{config.listen.port}/v1"
    print(f"AI gateway ready: {url}  (admin {admin_url}, state {state})", flush=True)
    if config.backends:
        print(upstreams(config), flush=True)
    else:
        print(NO_PROVIDER_HINT, file=sys.stderr, flush=True)
    return sup.run()


def _owner(value: str) -> tuple[int, int]:
    uid, _, gid = value.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not UID or UID:GID (numbers)")
    return int(uid), int(gid or uid)


def cmd_certs(args: argparse.Namespace) -> int:
    from extproc.certs import tls_config, write_certs

    directory = Path(args.output)
    names = args.name or ["sidecar"]
    written = write_certs(directory, names, days=args.days, force=args.force, owner=args.owner)
    print(f"{'wrote' if written else 'kept the existing'} certificates in {directory}")
    tls = tls_config(directory.absolute(), server_name=names[0]).model_dump()
    print("sidecar:\n  tls:\n" + "".join(f"    {k}: {v}\n" for k, v in tls.items()), end="")
    return 0


def cmd_hash_key(args: argparse.Namespace) -> int:
    from extproc.clients import hash_key

    if args.new:
        key = secrets.token_urlsafe(32)
        print(f"key:        {key}\nkey_sha256: {hash_key(key)}")
        return 0
    # Read, not an argument: a key on the command line ends up in shell history and `ps`.
    key = getpass.getpass("gateway key: ") if sys.stdin.isatty() else sys.stdin.readline()
    if not key.strip():
        print("no key given", file=sys.stderr)
        return 2
    print(hash_key(key.strip()))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from extproc.render import render_yaml

    config = _load(args.config, secrets=False)
    text = render_yaml(config, sidecar_host=args.sidecar_host, source=args.config or "")
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from extproc.importer import run_import

    return run_import(args.files, args.output, args.allow_partial)


def cmd_check(args: argparse.Namespace) -> int:
    from extproc.render import render_yaml
    from extproc.supervisor import envoy_binary

    config = _load(args.config, secrets=not args.no_secrets)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(render_yaml(config))
        f.flush()
        result = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", f.name, "--log-level", "error"],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        print(
            f"envoy rejected the rendered config:\n{result.stdout}{result.stderr}", file=sys.stderr
        )
        return 1
    print(
        f"ok: {len(config.backends)} backends, {len(config.models)} models; Envoy accepts the config"
    )
    return 0


# Libraries that log credentials at DEBUG (botocore prints each SigV4 canonical request, AWS
# session token included): never below INFO, whatever --log-level says.
_LOG_SECRETS_AT_DEBUG = ("botocore", "boto3", "urllib3")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai-gateway", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("AI_GATEWAY_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "-c", "--config", help="gateway config (default: built from the environment)"
        )
        return p

    run = add("run", "start Envoy and the sidecar workers together")
    run.add_argument("--state-dir", help="where the rendered config and sockets go")
    run.add_argument("--envoy-concurrency", type=int, default=0)
    run.add_argument("--envoy-log-level", default="warning")
    run.set_defaults(func=cmd_run)
    serve = add("serve", "start the sidecar workers only (beside an Envoy container)")
    serve.add_argument("--host", help="listen address (default: sidecar.host from the config)")
    serve.set_defaults(func=cmd_serve)
    render = add("render", "print the Envoy bootstrap for the config")
    render.add_argument("-o", "--output", default="-")
    render.add_argument(
        "--sidecar-host", help="host Envoy reaches the sidecar on (compose: sidecar)"
    )
    render.set_defaults(func=cmd_render)
    check = add("check", "validate the config and the Envoy bootstrap rendered from it")
    check.add_argument(
        "--no-secrets", action="store_true", help="do not require the secrets' variables to be set"
    )
    check.set_defaults(func=cmd_check)
    certs = sub.add_parser(
        "certs", help="write a CA and the certificates for mutual TLS between Envoy and sidecar"
    )
    certs.add_argument("-o", "--output", required=True, help="directory for the files")
    certs.add_argument(
        "--name",
        action="append",
        help="name in the sidecar's certificate (repeatable; the first is sidecar.tls"
        ".server_name; default: sidecar)",
    )
    certs.add_argument("--days", type=int, default=825, help="validity (default: 825)")
    certs.add_argument("--force", action="store_true", help="replace a complete existing set")
    certs.add_argument("--owner", type=_owner, help="UID[:GID] to own the files (compose: 10001)")
    certs.set_defaults(func=cmd_certs)
    hash_cmd = sub.add_parser("hash-key", help="print the key_sha256 of a gateway key (from stdin)")
    hash_cmd.add_argument("--new", action="store_true", help="make a new random key and its hash")
    hash_cmd.set_defaults(func=cmd_hash_key)
    imp = sub.add_parser("import", help="write a gateway config from Envoy AI Gateway resources")
    imp.add_argument("files", nargs="+", metavar="FILE", help="YAML with the resources")
    imp.add_argument("-o", "--output", default="-", help="the config to write (default: stdout)")
    imp.add_argument(
        "--allow-partial", action="store_true", help="write it even if something cannot carry over"
    )
    imp.set_defaults(func=cmd_import)
    worker = add("worker", argparse.SUPPRESS)
    worker.add_argument("address")
    worker.add_argument("--state-dir")  # run's, see _adjusted
    worker.add_argument("--host")  # serve's
    worker.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in _LOG_SECRETS_AT_DEBUG:
        logging.getLogger(name).setLevel(max(logging.getLogger().level, logging.INFO))
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2
    except PortInUse as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
