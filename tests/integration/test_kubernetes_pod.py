"""The pod of ``ai-gateway render --kubernetes``, run here as the kubelet would run it: the two
containers' commands from the Deployment (the real Envoy, ``ai-gateway serve``), their files
from the ConfigMaps, the socket volume a directory of its own, the secret in the sidecar's
environment only; the probes as the kubelet runs them, and the preStop drain."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from openai import OpenAI

from extproc.kubernetes import SOCKET_DIR, render_manifests
from extproc.supervisor import envoy_binary
from tests.fakes.openai import FakeOpenAI
from tests.harness import free_port

API_KEY = "sk-pod-canary-0123456789"
WORDS = 40
CHUNK_DELAY = 0.2  # a stream of ~8 s: still open when the drain begins, after the preStop's delay


class Pod:
    """The rendered pod's two containers as local processes, paths and addresses mapped."""

    def __init__(self, files: dict[str, str], root: Path) -> None:
        self.root = root
        docs = {name: yaml.safe_load(text) for name, text in files.items()}
        self.template = docs["deployment.yaml"]["spec"]["template"]
        spec = self.template["spec"]
        self.spec = spec
        self.containers = {c["name"]: c for c in spec["containers"]}
        self.sockets = root / "sockets"  # the emptyDir both containers mount
        self.sockets.mkdir()
        mounts = {"envoy-config": root / "envoy", "gateway-config": root / "config"}
        for volume in spec["volumes"]:
            name = volume["name"]
            if "configMap" in volume:
                data = next(
                    d["data"] for d in docs.values() if d["metadata"]["name"] == volume["configMap"]["name"]
                )  # fmt: skip
                mounts[name].mkdir()
                for key, text in data.items():
                    (mounts[name] / key).write_text(self.map(text))
        self.mount_paths = {
            m["mountPath"]: str(mounts.get(m["name"], self.sockets))
            for c in spec["containers"]
            for m in c["volumeMounts"]
            if m["name"] != "tmp"
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def map(self, text: str) -> str:
        """Pod paths to this test's directories; the pod's wildcard listeners to loopback."""
        return text.replace(SOCKET_DIR, str(self.root / "sockets")).replace("0.0.0.0", "127.0.0.1")

    def argv(self, words: list[str]) -> list[str]:
        out = []
        for word in words:
            for pod_path, local in self.mount_paths.items():
                if word.startswith(pod_path):
                    word = local + word[len(pod_path) :]
            out.append(self.map(word))
        return out

    def start(self, secrets: dict[str, str]) -> None:
        sidecar = self.containers["sidecar"]
        env = {"PATH": os.environ["PATH"], "TMPDIR": str(self.root)}
        for item in sidecar["env"]:
            env[item["name"]] = secrets[item["valueFrom"]["secretKeyRef"]["key"]]
        ai_gateway = [sys.executable, "-m", "extproc"]
        self.procs["sidecar"] = subprocess.Popen(
            [*ai_gateway, *self.argv(sidecar["args"])], env=env, start_new_session=True
        )
        envoy = self.containers["envoy"]
        assert envoy["command"] == ["envoy"] and "env" not in envoy
        # Its own --base-id: a container has its own shared memory, this machine does not.
        argv = [envoy_binary(), *self.argv(envoy["args"]), "--base-id", str(os.getpid() % 60000)]
        self.procs["envoy"] = subprocess.Popen(argv, env={}, start_new_session=True)

    def probe(self, container: str, kind: str) -> bool:
        probe = self.containers[container][kind]
        if "exec" in probe:
            command = self.argv(probe["exec"]["command"])
            return subprocess.run(command, check=False).returncode == 0
        port = self.port(probe["httpGet"]["port"])
        try:
            path = probe["httpGet"]["path"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def port(self, name: str) -> int:
        ports = {p["name"]: p["containerPort"] for p in self.containers["envoy"]["ports"]}
        return int(ports[name])

    def pre_stop(self) -> subprocess.Popen[bytes]:
        command = self.containers["sidecar"]["lifecycle"]["preStop"]["exec"]["command"]
        return subprocess.Popen([sys.executable, "-m", "extproc", *self.argv(command[1:])])

    def stop(self) -> dict[str, int]:
        """SIGTERM to every container (after preStop, as the kubelet does); exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(self.spec["terminationGracePeriodSeconds"])
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait()
        return codes


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=API_KEY, chunk_delay=CHUNK_DELAY) as server:
        yield server


@pytest.fixture
def pod(fake: FakeOpenAI) -> Iterator[Pod]:
    config: dict[str, Any] = {
        "listen": {"port": free_port()},
        "admin": {"port": free_port()},
        "http": {"drain_time": "15s"},
        "backends": {"oa": {"schema": "openai", "url": f"{fake.url}/v1", "api_key": "${OA_KEY}"}},
        "models": [{"name": "gpt-4o-mini", "backends": [{"backend": "oa"}]}],
    }
    root = Path(tempfile.mkdtemp(prefix="pod-"))
    the_pod = Pod(render_manifests(config, "test", env={}), root)
    try:
        the_pod.start({"OA_KEY": API_KEY})
        for _ in range(300):
            if all(the_pod.probe(c, "readinessProbe") for c in ("envoy", "sidecar")):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the pod never became ready")
        yield the_pod
    finally:
        the_pod.stop()
        shutil.rmtree(root, ignore_errors=True)


def _client(pod: Pod) -> OpenAI:
    return OpenAI(base_url=f"http://127.0.0.1:{pod.port('http')}/v1", api_key="-", max_retries=0)


def _stream(client: OpenAI) -> str:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": " ".join(["word"] * WORDS)}],
        stream=True,
    )
    return "".join((c.choices[0].delta.content or "") for c in stream if c.choices)


def test_pod_serves_with_the_secret_in_the_sidecar_only(pod: Pod, fake: FakeOpenAI) -> None:
    reply = _client(pod).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content == "Echo: hello"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"
    # Envoy's files and environment hold no secret; the probes pass; metrics are served.
    for path in (pod.root / "envoy").iterdir():
        assert API_KEY not in path.read_text()
    assert API_KEY not in Path(f"/proc/{pod.procs['envoy'].pid}/environ").read_bytes().decode()
    assert all(pod.probe(c, "livenessProbe") for c in ("envoy", "sidecar"))
    admin = f"http://127.0.0.1:{pod.port('admin')}"
    scraped = pod.template["metadata"]["annotations"]["prometheus.io/path"]
    with urllib.request.urlopen(f"{admin}{scraped}") as resp:
        assert b"ai_gateway_requests_total" in resp.read()


def test_pre_stop_drains_without_losing_a_stream(pod: Pod) -> None:
    client = _client(pod)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(_stream, client) for _ in range(4)]
        drain = pod.pre_stop()
        # Until the endpoints delay is over, new connections are still served.
        assert _client(pod).models.list().data
        results = [s.result() for s in streams]
    assert results == ["Echo: " + " ".join(["word"] * WORDS)] * 4
    assert drain.wait(60) == 0  # done once no request is open
    assert not pod.probe("envoy", "readinessProbe")  # out of the Service's endpoints
    with pytest.raises(openai.APIConnectionError):  # new connections are refused
        _client(pod).models.list()
    assert pod.stop() == {"sidecar": 0, "envoy": 0}
