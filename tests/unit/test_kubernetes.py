"""Kubernetes manifests: valid for Kubernetes 1.37 and Envoy, in step with the example, no
secret where it does not belong."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from extproc.cli import main
from extproc.config import ConfigError, parse_config
from extproc.kubernetes import SECRET_NAME, render_manifests
from extproc.render import sidecar_addresses
from extproc.supervisor import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "envoy" / "gateway.example.yaml"
CHECKED_IN = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.37.0"  # the schemas kubernetes-validate (pinned in pyproject.toml) bundles

CANARIES = {
    "OPENAI_KEY": "sk-canary-openai-0001",
    "AZURE_KEY": "canary-azure-0002",
    "ENTRA_SECRET": "canary-entra-0003",
    "AWS_ID": "AKIACANARY0004",
    "AWS_SECRET": "canary-aws-secret-0005",
    "REDIS_PASSWORD": "canary-redis-0006",
}


def _example() -> dict[str, str]:
    return render_manifests(
        yaml.safe_load(EXAMPLE.read_text()), "envoy/gateway.example.yaml", env={}
    )


def _full_config(**extra: Any) -> dict[str, Any]:
    """Every kind of secret, limits in a Redis behind a password."""
    return {
        "http": {"drain_time": "60s"},
        "backends": {
            "oa": {"schema": "openai", "url": "https://api.openai.com/v1", "api_key": "${OPENAI_KEY}"},
            "az": {"schema": "azure_openai", "url": "https://x.openai.azure.com", "api_key": "${AZURE_KEY}"},
            "entra": {
                "schema": "azure_openai", "url": "https://y.openai.azure.com",
                "entra": {"tenant_id": "t", "client_id": "c", "client_secret": "${ENTRA_SECRET}"},
            },
            "br": {
                "schema": "aws_bedrock", "region": "us-east-1",
                "access_key_id": "${AWS_ID}", "secret_access_key": "${AWS_SECRET}",
            },
            "local": {"schema": "openai", "url": "http://vllm.inference:8000/v1"},
        },
        "models": [
            {"name": m, "backends": [{"backend": m}]} for m in ("oa", "az", "entra", "local")
        ] + [{"name": "br", "backends": [{"backend": "br", "family": "nova"}]}],
        "clients": [{"name": "team", "key_sha256": "ab" * 32}],
        "limits": [{"match": {"client": "*"}, "requests": 10, "per": "minute"}],
        "ratelimit_store": "redis://:${REDIS_PASSWORD}@redis.cache:6380/0",
        **extra,
    }  # fmt: skip


def _docs(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load(text) for name, text in files.items()}


def _pod(files: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = _docs(files)["deployment.yaml"]["spec"]["template"]["spec"]
    return spec


def _containers(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in _pod(files)["containers"]}


def test_checked_in_example_is_up_to_date() -> None:
    expected = _example()
    current = {
        str(p.relative_to(CHECKED_IN)): p.read_text()
        for p in CHECKED_IN.rglob("*.yaml")
    }  # fmt: skip
    assert current == expected, "deploy/kubernetes/ is stale: run `make render`"


@pytest.mark.parametrize("which", ["example", "full"])
def test_manifests_are_valid_for_kubernetes(which: str) -> None:
    files = _example() if which == "example" else render_manifests(_full_config(), "t", env={})
    docs = _docs(files)
    monitor = docs.pop("prometheus-operator/servicemonitor.yaml")
    for doc in docs.values():
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    kinds = {doc["kind"] for doc in docs.values()}
    assert kinds == {
        "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "NetworkPolicy",
    }  # fmt: skip
    # A CRD of the Prometheus Operator, not in Kubernetes' schemas: it must find the Service's
    # admin port by name and select the pods' Service.
    service = docs["service.yaml"]
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics", "/stats/prometheus"}


def test_the_validator_rejects_a_wrong_manifest() -> None:
    doc = _docs(_example())["deployment.yaml"]
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "root"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize("which", ["example", "full", "envoy accounting"])
def test_envoy_accepts_the_configmap_bootstrap(which: str, tmp_path: Path) -> None:
    accounting = {"accounting": {"mode": "envoy"}} if which == "envoy accounting" else {}
    files = (
        _example()
        if which == "example"
        else render_manifests(_full_config(**accounting), "t", env={})
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(_docs(files)["configmap-envoy.yaml"]["data"]["envoy.yaml"])
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_sidecar_and_envoy_agree_on_the_sockets() -> None:
    files = render_manifests(_full_config(), "t", env={})
    docs = _docs(files)
    gateway = parse_config(
        yaml.safe_load(docs["configmap-gateway.yaml"]["data"]["gateway.yaml"]), env=CANARIES
    )
    assert gateway.sidecar.plaintext_error() is None  # `serve` takes it
    bootstrap = docs["configmap-envoy.yaml"]["data"]["envoy.yaml"]
    for address in [*sidecar_addresses(gateway), f"unix:{gateway.admin.envoy_socket}"]:
        assert f"path: {address.removeprefix('unix:')}" in bootstrap
    mounts = {
        name: {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        for name, c in _containers(files).items()
    }
    assert mounts["envoy"]["sockets"] == mounts["sidecar"]["sockets"] == gateway.sidecar.socket_dir
    assert {"emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}, "name": "sockets"} in _pod(files)[
        "volumes"
    ]
    # The probe names every socket the sidecar makes.
    probe = " ".join(_containers(files)["sidecar"]["readinessProbe"]["exec"]["command"])
    assert all(a.removeprefix("unix:") in probe for a in sidecar_addresses(gateway))


def test_secrets_reach_the_sidecar_environment_only() -> None:
    files = render_manifests(_full_config(), "t", env=CANARIES)
    for name, text in files.items():
        for value in CANARIES.values():
            assert value not in text, f"{name} holds a secret"
    containers = _containers(files)
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in containers["sidecar"]["env"]}
    assert env == {v: {"name": SECRET_NAME, "key": v} for v in CANARIES}
    envoy = containers["envoy"]
    assert "env" not in envoy and "envFrom" not in envoy
    assert {m["name"] for m in envoy["volumeMounts"]} == {"envoy-config", "sockets"}
    gateway_yaml = _docs(files)["configmap-gateway.yaml"]["data"]["gateway.yaml"]
    assert "${OPENAI_KEY}" in gateway_yaml and "${REDIS_PASSWORD}" in gateway_yaml


def test_probes_drain_and_grace_follow_the_drain_time() -> None:
    containers = _containers(render_manifests(_full_config(), "t", env={}))
    envoy, sidecar = containers["envoy"], containers["sidecar"]
    assert envoy["readinessProbe"]["httpGet"] == {"port": "admin", "path": "/ready"}
    assert "livenessProbe" in envoy and "livenessProbe" in sidecar
    assert "--drain-time-s" in envoy["args"] and "60" in envoy["args"]
    # Envoy sleeps while the sidecar's preStop drains it: endpoints delay + drain time.
    assert envoy["lifecycle"]["preStop"]["sleep"]["seconds"] == 5 + 60
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"][:2] == ["ai-gateway", "drain"]
    pod = _pod(render_manifests(_full_config(), "t", env={}))
    # preStop, then the workers' own drain and telemetry flush, then a margin.
    assert pod["terminationGracePeriodSeconds"] == 5 + 60 + 10 + 5
    # Envoy's access log holds records up to a flush interval: the drain waits for two.
    envoy_mode = _full_config(accounting={"mode": "envoy", "flush_interval": "1s"})
    delayed = _containers(render_manifests(envoy_mode, "t", env={}))["envoy"]
    assert delayed["lifecycle"]["preStop"]["sleep"]["seconds"] == 5 + 60 + 2
    assert _pod(render_manifests(envoy_mode, "t", env={}))["terminationGracePeriodSeconds"] == 82
    short = _pod(render_manifests(_full_config(http={"drain_time": "5s"}), "t", env={}))
    assert short["terminationGracePeriodSeconds"] == 5 + 5 + 10 + 5
    for c in (envoy, sidecar):
        security = c["securityContext"]
        assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert c["resources"]["requests"] and c["resources"]["limits"]


def test_manifests_point_at_the_redis() -> None:
    docs = _docs(render_manifests(_full_config(), "t", env={}))
    gateway = yaml.safe_load(docs["configmap-gateway.yaml"]["data"]["gateway.yaml"])
    assert gateway["ratelimit_store"] == "redis://:${REDIS_PASSWORD}@redis.cache:6380/0"
    egress = docs["networkpolicy.yaml"]["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 6380}]} in egress
    ports = {p["port"] for rule in egress for p in rule["ports"]}
    assert {443, 8000, 53} <= ports
    # Limits shared through Redis: several workers per pod, several pods.
    assert gateway["sidecar"]["workers"] == 2
    assert docs["hpa.yaml"]["spec"]["maxReplicas"] == 6


def test_memory_store_with_limits_refuses_more_than_one_replica() -> None:
    config = _full_config(ratelimit_store="memory")
    with pytest.raises(ConfigError, match="limits would be counted per replica"):
        render_manifests(config, "t", replicas=2, env={})
    with pytest.raises(ConfigError, match="up to 3 replicas"):
        render_manifests(config, "t", replicas=1, max_replicas=3, env={})
    with pytest.raises(ConfigError, match="need 1 <= replicas <= max"):
        render_manifests(config, "t", replicas=2, max_replicas=1, env={})
    docs = _docs(render_manifests(config, "t", replicas=1, max_replicas=1, env={}))
    gateway = yaml.safe_load(docs["configmap-gateway.yaml"]["data"]["gateway.yaml"])
    assert gateway["sidecar"]["workers"] == 1  # one counter per pod, not one per worker
    # Without limits, the memory store holds nothing replicas would need to share.
    del config["limits"]
    assert render_manifests(config, "t", replicas=3, env={})


def test_secret_files_are_refused() -> None:
    config = _full_config()
    config["backends"]["oa"] = {"schema": "openai", "api_key_file": "/run/key"}
    with pytest.raises(ConfigError, match=r"backends\.oa\.api_key_file: .*api_key: \$\{VAR\}"):
        render_manifests(config, "t", env={})


def test_command_writes_the_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k8s"
    assert main(["render", "--kubernetes", "-c", str(EXAMPLE), "-o", str(out)]) == 0
    assert (out / "deployment.yaml").exists() and (out / "prometheus-operator").is_dir()
    # The example's TCP and TLS settings are the compose file's: said to be replaced.
    note = capsys.readouterr().err
    assert "sidecar.host, sidecar.port, sidecar.tls: replaced by the pod's Unix sockets" in note
    config = tmp_path / "memory.yaml"
    config.write_text(yaml.safe_dump(_full_config(ratelimit_store="memory")))
    assert main(["render", "--kubernetes", "-c", str(config), "-o", str(out)]) == 2
    assert "limits would be counted per replica" in capsys.readouterr().err
