"""The supervisor and its workers read one config: what Envoy is rendered from is what each
worker builds from the file and the options it is started with."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from extproc import cli

CONFIG = {
    "backends": {"b": {"schema": "openai", "url": "http://127.0.0.1:1/v1"}},
    "models": [{"name": "m", "backends": [{"backend": "b"}]}],
}


def _worker_config(argv: list[str]) -> object:
    assert argv[:3] == [sys.executable, "-m", "extproc"]
    args = cli.parser().parse_args(argv[3:])
    assert args.func is cli.cmd_worker
    return cli._adjusted(cli._load(args.config), args.state_dir, args.host)


def test_a_worker_of_run_builds_the_config_envoy_is_rendered_from(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"  # JSON is YAML
    path.write_bytes(orjson.dumps(CONFIG))
    args = cli.parser().parse_args(["run", "-c", str(path)])
    state = str(tmp_path / "state")
    rendered_from = cli._adjusted(cli._load(args.config), state, None)
    assert rendered_from.sidecar.socket_dir == state
    assert rendered_from.admin.envoy_socket == f"{state}/envoy-admin.sock"
    argv = cli._worker_argv(args, f"unix:{state}/worker-0.sock", state, None)
    assert _worker_config(argv) == rendered_from


def test_a_worker_of_serve_builds_the_config_with_its_host(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    path.write_bytes(orjson.dumps({**CONFIG, "sidecar": {"allow_plaintext": True}}))
    args = cli.parser().parse_args(["serve", "-c", str(path), "--host", "0.0.0.0"])
    served = cli._adjusted(cli._load(args.config), None, args.host)
    assert served.sidecar.host == "0.0.0.0"
    assert _worker_config(cli._worker_argv(args, "0.0.0.0:1063", None, "0.0.0.0")) == served
