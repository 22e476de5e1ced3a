"""The sidecar serves only Envoy (issue 29).

- ``ai-gateway serve`` as the README and compose set it up (``ai-gateway certs``, the example
  config's ``sidecar.tls``) beside a real Envoy rendered by ``ai-gateway render``: requests,
  their access-log records and ``/metrics`` all cross mutual TLS; every sidecar port (each
  worker's ext_proc and access-log service, the metrics server) refuses a client without
  Envoy's certificate: plaintext, TLS without a certificate, a certificate of another CA, and
  the sidecar's own certificate (signed by the right CA, but for serving only).
- ``ai-gateway serve`` refuses plaintext TCP unless ``sidecar.allow_plaintext`` says so.
- ``ai-gateway run``: the state directory is 0700 and every socket in it 0600; another user
  cannot connect.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
import trustme
import yaml
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extproc.supervisor import envoy_binary
from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway, free_port
from tests.integration.probes import wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "envoy" / "gateway.example.yaml"
WORKERS = 2
CLI = [sys.executable, "-m", "extproc"]


@dataclass
class Deployment:
    certs: Path
    ports: list[int]  # the workers'
    metrics_port: int
    admin_url: str
    url: str
    output: Path


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _port_outside(taken: set[int]) -> int:
    port = free_port()
    while port in taken:
        port = free_port()
    taken.add(port)
    return port


@pytest.fixture(scope="module")
def deployment(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The compose deployment on one host: the example's ``sidecar`` section (mutual TLS),
    certificates from ``ai-gateway certs``, ``serve --host``, Envoy from ``render``."""
    work = tmp_path_factory.mktemp("serve")
    certs = work / "tls"
    subprocess.run([*CLI, "certs", "-o", str(certs)], check=True, capture_output=True)
    sidecar = yaml.safe_load(EXAMPLE.read_text())["sidecar"]
    port = free_port()
    taken = {port + i for i in range(WORKERS)}
    metrics_port, listen, admin = (_port_outside(taken) for _ in range(3))
    sidecar.update(port=port, workers=WORKERS, metrics_port=metrics_port)
    config = {
        "listen": {"host": "127.0.0.1", "port": listen},
        "admin": {"host": "127.0.0.1", "port": admin, "envoy_socket": str(work / "admin.sock")},
        "sidecar": sidecar,
        # Handed-off answers are accounted from Envoy's access log: that service too runs
        # over the link.
        "accounting": {"mode": "envoy", "flush_interval": "100ms"},
        "backends": {"oa": {"schema": "openai", "url": f"{fake.url}/v1"}},
        "models": [{"name": "m", "backends": [{"backend": "oa"}]}],
    }
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "AI_GATEWAY_TLS_DIR": str(certs)}
    rendered = work / "envoy.yaml"
    subprocess.run(
        [*CLI, "render", "-c", str(path), "--sidecar-host", "127.0.0.1", "-o", str(rendered)],
        check=True,
        env=env,
    )
    output = work / "output.log"
    with output.open("wb") as log:
        serve = subprocess.Popen(
            [*CLI, "serve", "-c", str(path), "--host", "127.0.0.1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        envoy = subprocess.Popen(
            [envoy_binary(), "-c", str(rendered), "--base-id", str(os.getpid() % 50000 + 7)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        admin_url = f"http://127.0.0.1:{admin}"
        wait_for(lambda: _ready(f"{admin_url}/ready"), timeout=60, what="Envoy ready")
        wait_for(
            lambda: (
                b"listening" in output.read_bytes()
                and output.read_bytes().count(b"(mutual TLS)") == WORKERS
            ),
            timeout=60,
            what="workers listening",
        )
        yield Deployment(
            certs=certs,
            ports=[port + i for i in range(WORKERS)],
            metrics_port=metrics_port,
            admin_url=admin_url,
            url=f"http://127.0.0.1:{listen}/v1",
            output=output,
        )
    finally:
        _stop(envoy)
        _stop(serve)


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _credentials(certs: Path, pair: str | None, ca: bytes | None = None) -> grpc.ChannelCredentials:
    root = ca if ca is not None else _read(certs / "ca.pem")
    if pair is None:
        return grpc.ssl_channel_credentials(root)
    return grpc.ssl_channel_credentials(
        root, _read(certs / f"{pair}-key.pem"), _read(certs / f"{pair}.pem")
    )


def _channel(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    target = f"127.0.0.1:{port}"
    if credentials is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(
        target, credentials, options=[("grpc.ssl_target_name_override", "sidecar")]
    )


def _ext_proc(channel: grpc.Channel) -> grpc.StatusCode:
    """What a caller posing as Envoy gets: a request for ``/v1/models`` (answered at once)."""
    headers = pb.HttpHeaders(end_of_stream=True)
    for name, value in ((":method", "GET"), (":path", "/v1/models")):
        headers.headers.headers.add(key=name, raw_value=value.encode())
    try:
        replies = list(
            pb_grpc.ExternalProcessorStub(channel).Process(
                iter([pb.ProcessingRequest(request_headers=headers)]), timeout=5
            )
        )
    except grpc.RpcError as exc:
        return exc.code()
    assert replies[0].HasField("immediate_response")
    return grpc.StatusCode.OK


def _access_log(channel: grpc.Channel) -> grpc.StatusCode:
    message = als_pb2.StreamAccessLogsMessage()
    message.identifier.log_name = "ai_gateway"
    try:
        als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(iter([message]), timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _strangers(certs: Path) -> dict[str, grpc.ChannelCredentials | None]:
    other = trustme.CA()
    impostor = other.issue_cert("envoy", "sidecar")
    return {
        "plaintext": None,
        "tls without a certificate": _credentials(certs, None),
        "a certificate of another CA": grpc.ssl_channel_credentials(
            _read(certs / "ca.pem"),
            impostor.private_key_pem.bytes(),
            impostor.cert_chain_pems[0].bytes(),
        ),
        "the sidecar's own certificate": _credentials(certs, "sidecar"),
    }


def test_requests_and_their_records_cross_mutual_tls(
    deployment: Deployment, fake: FakeOpenAI
) -> None:
    client = openai.OpenAI(base_url=deployment.url, api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.choices[0].message.content == "Echo: hello"
    assert fake.requests[-1].path == "/v1/chat/completions"

    def recorded() -> bool:
        with urllib.request.urlopen(f"{deployment.admin_url}/metrics", timeout=5) as response:
            text = response.read().decode()
        # The answer was handed off: its record came over the access-log service, and the
        # admin port read it from the metrics server, both over the link.
        return any(
            line.startswith("ai_gateway_requests_total{") and 'gen_ai_request_model="m"' in line
            for line in text.splitlines()
        )

    wait_for(recorded, timeout=10, what="the record in /metrics")


def test_every_worker_port_refuses_whoever_is_not_envoy(deployment: Deployment) -> None:
    for port in deployment.ports:
        for who, credentials in _strangers(deployment.certs).items():
            with _channel(port, credentials) as channel:
                assert _ext_proc(channel) == grpc.StatusCode.UNAVAILABLE, (port, who)
                assert _access_log(channel) == grpc.StatusCode.UNAVAILABLE, (port, who)
        with _channel(port, _credentials(deployment.certs, "envoy")) as channel:
            assert _ext_proc(channel) == grpc.StatusCode.OK
            assert _access_log(channel) == grpc.StatusCode.OK


def _metrics(port: int, context: ssl.SSLContext | None) -> int:
    scheme = "https" if context else "http"
    with urllib.request.urlopen(
        f"{scheme}://127.0.0.1:{port}/metrics", timeout=5, context=context
    ) as response:
        return int(response.status)


def test_the_metrics_port_refuses_whoever_is_not_envoy(deployment: Deployment) -> None:
    certs = deployment.certs

    def context(pair: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        ctx.check_hostname = False  # the certificate names "sidecar", dialled as 127.0.0.1
        if pair:
            ctx.load_cert_chain(str(certs / f"{pair}.pem"), str(certs / f"{pair}-key.pem"))
        return ctx

    port = deployment.metrics_port
    with pytest.raises((OSError, ConnectionError)):
        _metrics(port, None)
    for pair in (None, "sidecar"):
        with pytest.raises((ssl.SSLError, OSError)):
            _metrics(port, context(pair))
    assert _metrics(port, context("envoy")) == 200


def test_a_stalled_handshake_does_not_block_the_metrics_port(deployment: Deployment) -> None:
    with socket.create_connection(("127.0.0.1", deployment.metrics_port)):
        # A client that connected and sent nothing: the next one is still served.
        ctx = ssl.create_default_context(cafile=str(deployment.certs / "ca.pem"))
        ctx.check_hostname = False
        ctx.load_cert_chain(
            str(deployment.certs / "envoy.pem"), str(deployment.certs / "envoy-key.pem")
        )
        assert _metrics(deployment.metrics_port, ctx) == 200


def _serve(config: dict[str, Any], tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [*CLI, "serve", "-c", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_serve_refuses_plaintext_tcp(host: str, tmp_path: Path) -> None:
    result = _serve({"sidecar": {"host": host, "port": free_port()}}, tmp_path)
    assert result.returncode == 2
    assert "sidecar.tls" in result.stderr and "sidecar.allow_plaintext" in result.stderr
    assert f"{host}:" in result.stderr


def test_serve_takes_plaintext_when_allowed(tmp_path: Path) -> None:
    port = free_port()
    config = {"sidecar": {"port": port, "workers": 1, "allow_plaintext": True}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [*CLI, "serve", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def answers() -> bool:
            with _channel(port, None) as channel:
                return bool(_ext_proc(channel) == grpc.StatusCode.OK)

        wait_for(answers, timeout=30, what="the plaintext worker")
    finally:
        _stop(proc)


# --- ai-gateway run: Unix sockets -----------------------------------------------------------------


def _connects_as(uid: int, path: Path) -> bool:
    """Whether a process of user ``uid`` can connect to the socket (a forked child: the
    interpreter's own files may be closed to that user)."""
    pid = os.fork()
    if pid == 0:  # the child only connects and exits, whatever happens
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
            code = 0
        except PermissionError:
            code = 13
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 13), f"probe failed ({code})"
    return code == 0


def test_run_sockets_are_the_owners_alone(tmp_path: Path) -> None:
    with Gateway({}, workers=2) as gw:
        state = Path(gw._dir) / "state"
        assert state.stat().st_mode & 0o777 == 0o700
        sockets = sorted(p for p in state.iterdir() if p.is_socket())
        names = {p.name for p in sockets}
        assert {"worker-0.sock", "worker-1.sock", "metrics.sock"} <= names, names
        for path in sockets:
            if path.name.startswith("worker-") or path.name == "metrics.sock":
                assert path.stat().st_mode & 0o777 == 0o600, path
        if os.geteuid() == 0:
            # Root passes permission checks: ask as an unprivileged user, even with the
            # directory opened up, so the socket's own mode is what is tested.
            nobody = pwd.getpwnam("nobody").pw_uid
            state.chmod(0o755)
            try:
                for path in sockets:
                    assert not _connects_as(nobody, path), path
            finally:
                state.chmod(0o700)
