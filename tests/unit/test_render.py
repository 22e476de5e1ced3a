"""The Envoy bootstrap: accepted by the real Envoy, kept in step with its source."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from extproc.certs import tls_config, write_certs
from extproc.config import GatewayConfig, load_config, parse_config
from extproc.render import cluster_name, render, render_yaml
from extproc.supervisor import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "envoy" / "gateway.example.yaml"


def _envoy_validate(bootstrap: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "envoy.yaml"
    path.write_text(bootstrap)
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_rendered_example_is_up_to_date() -> None:
    config = load_config(EXAMPLE, env={}, secrets=False)
    expected = render_yaml(config, sidecar_host="sidecar", source="envoy/gateway.example.yaml")
    current = (ROOT / "envoy" / "envoy.yaml").read_text()
    assert current == expected, "envoy/envoy.yaml is stale: run `make render`"


@pytest.mark.parametrize("accounting", ["sidecar", "envoy"])
def test_envoy_accepts_rendered_configs(tmp_path: Path, accounting: str) -> None:
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    config = parse_config(
        {
            "backends": {
                "tls": {"schema": "openai", "url": "https://example.com/v1", "tls": {"ca_file": str(ca)}},
                "plain": {"schema": "openai", "url": "http://127.0.0.1:9/v1", "timeout": "120s"},
            },
            "models": [
                {"name": "a/b:c", "backends": [{"backend": "tls", "weight": 3}, {"backend": "plain", "priority": 1}],
                 "retry": {"attempts": 3, "on": ["5xx", "429"], "per_try_timeout": "30s"}},
                {"name": "*", "backends": [{"backend": "plain"}]},
            ],
            "sidecar": {"socket_dir": "/tmp/x", "workers": 3},
            "accounting": {"mode": accounting},
        },
        {},
    )  # fmt: skip
    result = _envoy_validate(render_yaml(config), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_accounting_adds_the_usage_readers_and_the_record_log() -> None:
    def names(mode: str) -> tuple[list[str], list[str]]:
        config = parse_config({"accounting": {"mode": mode}}, {})
        listener = render(config)["static_resources"]["listeners"][1]
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        return [f["name"] for f in hcm["http_filters"]], [a["name"] for a in hcm["access_log"]]

    filters, logs = names("envoy")
    # Before the router stage: on the way back they see what the client gets (the compressor,
    # first, compresses only what they have read).
    assert filters == [
        "envoy.filters.http.compressor",
        "envoy.filters.http.json_to_metadata",
        "envoy.filters.http.sse_to_metadata",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]
    assert logs == ["envoy.access_loggers.stdout", "envoy.access_loggers.http_grpc"]
    assert names("sidecar") == ([filters[0], *filters[3:]], logs[:1])


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/responses", "/v1/messages"])
def test_requests_whose_usage_envoy_cannot_read_run_without_the_usage_readers(path: str) -> None:
    # Envoy builds a request's filter chain from the route it matches on arrival, before the
    # router stage names the model: that route is one of those before the catch-all, for the
    # path.
    config = parse_config({"accounting": {"mode": "envoy"}}, {})
    listener = render(config)["static_resources"]["listeners"][1]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    (route,) = [r for r in routes[:-1] if r["match"] == {"path": path}]
    disabled = {k for k, v in route["typed_per_filter_config"].items() if v["disabled"]}
    assert disabled == {"envoy.filters.http.json_to_metadata", "envoy.filters.http.sse_to_metadata"}


def _find(doc: dict[str, Any], name: str) -> dict[str, Any]:
    clusters: list[dict[str, Any]] = doc["static_resources"]["clusters"]
    (cluster,) = [c for c in clusters if c["name"] == name]
    return cluster


def test_cluster_per_model_with_backend_metadata_priority_and_weight() -> None:
    config = load_config(EXAMPLE, env={}, secrets=False)
    doc = render(config)
    cluster = _find(doc, cluster_name("gpt-4o-mini"))
    p0, p1 = cluster["load_assignment"]["endpoints"]
    assert (p0["priority"], p1["priority"]) == (0, 1)
    endpoint = p1["lb_endpoints"][0]
    assert endpoint["metadata"]["filter_metadata"]["io.envoy.ai_gateway"] == {"backend": "groq"}
    assert endpoint["endpoint"]["hostname"] == "api.groq.com"
    tls = {
        m["name"]: m["transport_socket"]["typed_config"]["sni"]
        for m in cluster["transport_socket_matches"]
    }
    assert tls == {"openai": "api.openai.com", "groq": "api.groq.com"}
    sidecar = _find(doc, "ai_gateway_extproc")
    assert len(sidecar["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2
    assert sidecar["circuit_breakers"]["thresholds"][0]["max_requests"] >= 100_000


def test_no_secret_in_rendered_config() -> None:
    env = {"OPENAI_API_KEY": "sk-canary-1", "GROQ_API_KEY": "gsk-canary-2"}
    text = render_yaml(load_config(EXAMPLE, env=env))
    assert "canary" not in text


def test_long_streams_are_not_cut_by_default_timeouts() -> None:
    doc = render(load_config(EXAMPLE, env={}, secrets=False))
    (listener,) = [x for x in doc["static_resources"]["listeners"] if x["name"] == "ai_gateway"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        assert float(route["route"]["timeout"].rstrip("s")) >= 300
    (router,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc"]
    assert router["typed_config"]["failure_mode_allow"] is False


def test_compose_file_matches_the_compose_spec() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
         "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["envoy"]["image"].startswith("envoyproxy/envoy:v1.40")


@pytest.mark.parametrize("command", ["render", "check"])
def test_cli_commands(command: str, tmp_path: Path) -> None:
    # Envoy's validation opens the certificate files the example names (as compose mounts them).
    write_certs(tmp_path / "tls", ["sidecar"])
    env = {**os.environ, "AI_GATEWAY_TLS_DIR": str(tmp_path / "tls")}
    argv = [sys.executable, "-m", "extproc", command, "-c", str(EXAMPLE)]
    argv += ["--no-secrets"] if command == "check" else ["-o", str(tmp_path / "out.yaml")]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60, env=env)
    assert result.returncode == 0, result.stderr


def test_check_names_a_missing_certificate(tmp_path: Path) -> None:
    env = {**os.environ, "AI_GATEWAY_TLS_DIR": str(tmp_path / "nowhere")}
    result = subprocess.run(
        [sys.executable, "-m", "extproc", "check", "-c", str(EXAMPLE), "--no-secrets"],
        capture_output=True, text=True, check=False, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert str(tmp_path / "nowhere" / "ca.pem") in result.stderr


def _sidecar_tls_clusters(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [_find(doc, "ai_gateway_extproc"), _find(doc, "ai_gateway_metrics")]


def test_sidecar_link_is_mutual_tls_when_configured(tmp_path: Path) -> None:
    tls = tls_config(tmp_path, server_name="sidecar.internal")
    config = parse_config({"sidecar": {"tls": tls.model_dump(), "workers": 2}}, {})
    doc = render(config, sidecar_host="sidecar")
    for cluster, alpn in zip(_sidecar_tls_clusters(doc), ["h2", "http/1.1"], strict=True):
        context = cluster["transport_socket"]["typed_config"]
        assert context["sni"] == "sidecar.internal"
        common = context["common_tls_context"]
        assert common["alpn_protocols"] == [alpn]
        assert common["tls_certificates"] == [
            {
                "certificate_chain": {"filename": tls.envoy_cert_file},
                "private_key": {"filename": tls.envoy_key_file},
            }
        ]
        validation = common["validation_context"]
        assert validation["trusted_ca"] == {"filename": tls.ca_file}
        assert {m["matcher"]["exact"] for m in validation["match_typed_subject_alt_names"]} == {
            "sidecar.internal"
        }
    # The sidecar's own pair is not Envoy's business: the rendered file never names it.
    text = render_yaml(config, sidecar_host="sidecar")
    assert tls.key_file not in text and tls.cert_file not in text


def test_no_key_material_in_the_checked_in_bootstrap() -> None:
    text = (ROOT / "envoy" / "envoy.yaml").read_text()
    assert "-----BEGIN" not in text and "inline_bytes" not in text
    assert "/etc/ai-gateway/tls/envoy-key.pem" in text  # a file name, read by Envoy


def test_unix_sockets_need_no_tls(tmp_path: Path) -> None:
    tls = tls_config(tmp_path).model_dump()
    config = parse_config({"sidecar": {"tls": tls, "socket_dir": "/run/gw"}}, {})
    for cluster in _sidecar_tls_clusters(render(config)):
        assert "transport_socket" not in cluster


def test_plaintext_tcp_is_refused_unless_allowed(tmp_path: Path) -> None:
    error = parse_config({"sidecar": {"host": "10.0.0.5"}}, {}).sidecar.plaintext_error()
    assert error and "sidecar.tls" in error and "sidecar.allow_plaintext" in error
    assert "10.0.0.5:1063" in error
    assert GatewayConfig().sidecar.plaintext_error()  # loopback too: any local process
    for sidecar in (
        {"allow_plaintext": True},
        {"socket_dir": "/run/gw"},
        {"tls": tls_config(tmp_path).model_dump()},
    ):
        assert parse_config({"sidecar": sidecar}, {}).sidecar.plaintext_error() is None


def test_envoy_accepts_the_mutual_tls_bootstrap(tmp_path: Path) -> None:
    write_certs(tmp_path / "tls", ["sidecar"])
    tls = tls_config(tmp_path / "tls").model_dump()
    config = parse_config({"sidecar": {"tls": tls}, "accounting": {"mode": "envoy"}}, {})
    result = _envoy_validate(render_yaml(config), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_reports_config_errors_with_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "backends: {o: {schema: openai}}\nmodels: [{name: m, backends: [{backend: opnai}]}]\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "extproc", "check", "-c", str(bad)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "models[0].backends[0].backend: unknown backend 'opnai'" in result.stderr


def test_no_listener_shares_its_port() -> None:
    """Envoy's Linux default (SO_REUSEPORT) would let a second gateway bind beside this one."""
    listeners = render(parse_config({}))["static_resources"]["listeners"]
    assert [listener["enable_reuse_port"] for listener in listeners] == [False, False]
