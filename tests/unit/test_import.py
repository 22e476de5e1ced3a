"""``ai-gateway import``: Envoy AI Gateway resources to our config (extproc/importer.py).

The fixtures (tests/fixtures/eaig/) were written from Envoy AI Gateway's published API
reference, one per kind the importer reads.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.cli import main
from extproc.config import ConfigError, GatewayConfig, parse_config
from extproc.eaig_backends import Report
from extproc.importer import import_resources, render

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eaig"
ALL = sorted(p.name for p in FIXTURES.glob("*.yaml"))


def _import(*names: str) -> tuple[dict[str, Any], Report, str]:
    sources = [(n, (FIXTURES / n).read_text()) for n in names]
    data, report = import_resources(sources)
    return data, report, render(data, report, list(names))


def _inline(text: str) -> tuple[dict[str, Any], Report]:
    return import_resources([("inline.yaml", text)])


def _load(text: str, report: Report) -> GatewayConfig:
    """The written file through our own loader, every variable set as a deployment would."""
    env = {var: f"value-of-{var}" for var in report.variables}
    return parse_config(yaml.safe_load(text), env=env)


def _secret_values(name: str) -> list[str]:
    """Every value (and every word of one) the fixture's Secrets hold."""
    found = []
    for doc in yaml.safe_load_all((FIXTURES / name).read_text()):
        if doc and doc.get("kind") == "Secret":
            values = list((doc.get("stringData") or {}).values())
            values += [base64.b64decode(v).decode() for v in (doc.get("data") or {}).values()]
            for value in values:
                found.append(value.strip())
                found += [w for w in value.replace("=", " ").split() if len(w) >= 8]
    return found


@pytest.mark.parametrize("name", ALL)
def test_every_fixture_loads_with_our_loader(name: str) -> None:
    _, report, text = _import(name)
    config = _load(text, report)
    assert config.backends, name
    # Also as `ai-gateway render` reads it, with no secret in the environment.
    parse_config(yaml.safe_load(text), env={}, secrets=False)


@pytest.mark.parametrize("name", ALL)
def test_no_secret_value_is_ever_written(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gateway.yaml"
    main(["import", str(FIXTURES / name), "-o", str(out), "--allow-partial"])
    written = out.read_text() + "".join(capsys.readouterr())
    for value in _secret_values(name):
        assert value not in written
    data = yaml.safe_load(out.read_text())
    for backend in data["backends"].values():
        for key in ("api_key", "client_secret", "access_key_id", "secret_access_key"):
            value = backend.get(key) or backend.get("entra", {}).get(key)
            assert value is None or (value.startswith("${") and value.endswith("}"))


def test_secret_fixtures_do_hold_values() -> None:
    # The test above would pass vacuously without them.
    assert _secret_values("openai.yaml") and _secret_values("bedrock.yaml")
    assert _secret_values("azure-entra.yaml")


def test_openai_api_key_ip_endpoint_priorities_weights_and_catch_all() -> None:
    data, report, text = _import("openai.yaml")
    assert report.lost == []
    assert data["backends"]["openai"] == {
        "schema": "openai",
        "url": "https://api.openai.com/v1",
        "api_key": "${OPENAI_API_KEY}",
    }
    assert data["backends"]["local-llm"] == {"schema": "openai", "url": "http://10.20.0.7:8000/v1"}
    assert report.variables == {"OPENAI_API_KEY": "Secret llm/openai-api-key, key 'apiKey'"}
    assert "#   OPENAI_API_KEY: Secret llm/openai-api-key" in text
    config = _load(text, report)
    assert [m.name for m in config.models] == ["gpt-4o-mini", "small", "*"]
    first, fallback = config.models[0].backends
    assert (first.backend, first.weight, first.priority, first.model) == ("openai", 3, 0, None)
    assert (fallback.backend, fallback.priority) == ("local-llm", 1)
    assert fallback.model == "qwen2.5-7b-instruct"
    assert config.models[1].backends == config.models[0].backends
    assert [b.backend for b in config.models[2].backends] == ["local-llm"]


def test_token_costs_map_to_the_usage_recorded_and_renamed_keys_are_noted() -> None:
    _, report, _ = _import("openai.yaml")
    notes = "\n".join(report.notes)
    assert "spec.llmRequestCosts[0]: InputToken is recorded" in notes
    assert "'input_tokens', not 'llm_input_token'" in notes
    assert "llmRequestCosts[1]" not in notes  # output_tokens: the same key as ours


def test_cel_and_cache_creation_costs_are_not_carried_over() -> None:
    data, report, _ = _import("costs.yaml")
    assert report.lost == [
        "AIGatewayRoute default/metered: spec.llmRequestCosts[3].type:"
        " CacheCreationInputToken is not counted here",
        "AIGatewayRoute default/metered: spec.llmRequestCosts[4].cel:"
        " CEL cost expressions have no equivalent",
    ]
    assert [m["name"] for m in data["models"]] == ["llama-3.1-8b"]
    assert data["backends"]["vllm"]["url"] == "http://vllm.inference.svc.cluster.local:8000/v1"


def test_bedrock_credentials_file_becomes_a_profile_and_a_comment() -> None:
    data, report, text = _import("bedrock.yaml")
    assert report.lost == []
    assert data["backends"]["bedrock"] == {
        "schema": "aws_bedrock",
        "region": "eu-west-1",
        "profile": "inference",
    }
    assert "Secret default/aws-inference-credentials, key 'credentials'" in text
    assert "AWS_SHARED_CREDENTIALS_FILE" in text
    config = _load(text, report)
    assert [(m.name, m.backends[0].model) for m in config.models] == [
        ("claude-sonnet", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ("nova-micro", "amazon.nova-micro-v1:0"),
    ]


def test_azure_api_key_on_both_surfaces() -> None:
    data, report, text = _import("azure-apikey.yaml")
    assert report.lost == []
    assert data["backends"]["azure-east"] == {
        "schema": "azure_openai",
        "url": "https://contoso-east.openai.azure.com",
        "api_version": "2025-01-01-preview",
        "api_key": "${AZURE_EAST_KEY}",
    }
    # The OpenAI schema under /openai/v1 with an Azure key is Azure's v1 surface.
    assert data["backends"]["azure-west"]["surface"] == "v1"
    assert data["backends"]["azure-west"]["api_key"] == "${AZURE_WEST_KEY}"
    (model,) = _load(text, report).models
    assert [(b.backend, b.weight, b.model) for b in model.backends] == [
        ("azure-east", 80, "gpt4o-prod"),
        ("azure-west", 20, "gpt4o-prod"),
    ]


def test_azure_entra_client_secret_timeouts_and_model_list_fields() -> None:
    data, report, text = _import("azure-entra.yaml")
    assert report.lost == []
    assert data["backends"]["azure-entra"]["entra"] == {
        "tenant_id": "99999999-8888-7777-6666-555555555555",
        "client_id": "00000000-1111-2222-3333-444444444444",
        "client_secret": "${ENTRA_APP_SECRET}",
    }
    assert (
        report.variables["ENTRA_APP_SECRET"]
        == "Secret team-a/entra-app-secret, key 'client-secret'"
    )
    (model,) = _load(text, report).models
    assert model.timeout == 150.0  # 2m30s
    assert model.retry.per_try_timeout == 45.0
    assert (model.owned_by, model.created) == ("contoso", 1740830400)


def test_gcp_schema_is_listed_and_the_rest_carries_over() -> None:
    data, report, _ = _import("gcp.yaml")
    assert report.lost == [
        "AIServiceBackend default/vertex: spec.schema.name: GCPVertexAI is not served here yet",
        "AIGatewayRoute default/gemini: spec.rules[0].backendRefs[0]: AIServiceBackend"
        " default/vertex: not carried over (see above)",
        "AIGatewayRoute default/gemini: spec.rules[0]: model 'gemini-2.0-flash': no usable backend",
    ]
    assert list(data["backends"]) == ["openai"]
    assert [m["name"] for m in data["models"]] == ["gpt-4o-mini"]


def test_anthropic_native_schema_lost_openai_compatible_kept_and_conditions_listed() -> None:
    data, report, _ = _import("anthropic.yaml")
    lost = "\n".join(report.lost)
    assert "AIServiceBackend default/anthropic-native: spec.schema.name: Anthropic" in lost
    assert "spec.rules[1].matches[1].headers: matches on x-tenant: not imported" in lost
    assert "spec.rules[1].matches[2].headers: RegularExpression model match" in lost
    assert data["backends"]["anthropic-compat"] == {
        "schema": "openai",
        "url": "https://api.anthropic.com/v1",
        "api_key": "${ANTHROPIC_API_KEY}",
    }
    assert data["models"] == [
        {
            "name": "claude-sonnet-4",
            "backends": [{"backend": "anthropic-compat", "model": "claude-sonnet-4-20250514"}],
        }
    ]


def test_cli_exits_non_zero_and_writes_nothing_unless_partial_is_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gateway.yaml"
    assert main(["import", str(FIXTURES / "gcp.yaml"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "not carried over: AIServiceBackend default/vertex: spec.schema.name" in err
    assert "--allow-partial" in err
    assert not out.exists()
    assert main(["import", str(FIXTURES / "gcp.yaml"), "-o", str(out), "--allow-partial"]) == 0
    assert "# Not carried over: AIServiceBackend default/vertex" in out.read_text()
    assert main(["import", str(FIXTURES / "openai.yaml"), str(FIXTURES / "bedrock.yaml")]) == 0
    merged = yaml.safe_load(capsys.readouterr().out)
    assert set(merged["backends"]) == {"openai", "local-llm", "bedrock"}


def test_cli_invalid_resource_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((FIXTURES / "openai.yaml").read_text().replace("weight: 3", "weight: heavy", 1))
    assert main(["import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "AIGatewayRoute llm/chat: spec.rules[0].backendRefs[0].weight" in err


BACKEND = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: svc}
spec:
  schema: {name: OpenAI, capabilities: {messagesTranslation: Responses}}
  backendRef: {name: be, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: route}
spec:
  rules:
    - matches: [{headers: [{name: X-AI-EG-Model, value: m}]}]
      backendRefs:
        - {name: svc, modelNameOverride: one}
        - {name: svc, modelNameOverride: two, priority: 1}
"""


def test_unknown_fields_are_named_and_a_backend_listed_twice_is_copied() -> None:
    data, report = _inline(
        BACKEND
        + """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be}
spec:
  endpoints:
    - fqdn: {hostname: llm.example.com, port: 8443}
    - fqdn: {hostname: llm2.example.com, port: 8443}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: be-tls}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: be}]
  validation: {wellKnownCACertificates: System, hostname: llm.internal.example}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec: {gatewayClassName: eg}
"""
    )
    assert report.lost == [
        "AIServiceBackend default/svc: spec.schema.capabilities: no equivalent field",
        "Gateway default/edge: kind: gateway.networking.k8s.io/v1 Gateway has no equivalent:"
        " not imported",
        "Backend default/be: spec.endpoints[1]: a backend has one URL: first one used",
    ]
    # A TLS policy makes it https, on its own port, verified against the policy's hostname.
    assert data["backends"]["svc"]["url"] == "https://llm.example.com:8443/v1"
    assert data["backends"]["svc"]["tls"] == {"sni": "llm.internal.example"}
    assert data["backends"]["svc-2"] == data["backends"]["svc"]
    assert data["models"][0]["backends"] == [
        {"backend": "svc", "model": "one"},
        {"backend": "svc-2", "model": "two", "priority": 1},
    ]
    parse_config(data, env={}, secrets=False)


def test_ipv6_endpoint_fallback_backend_and_missing_references() -> None:
    data, report = _inline(
        BACKEND.replace(", capabilities: {messagesTranslation: Responses}", "")
        + """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be}
spec:
  fallback: true
  endpoints: [{ip: {address: "fd00::7", port: 80}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: other}
spec:
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, value: ghost}]}]
      backendRefs: [{name: missing}]
"""
    )
    assert data["backends"]["svc"]["url"] == "http://[fd00::7]/v1"
    # A fallback Backend's refs without a priority go to the second tier.
    assert data["models"][0]["backends"][0] == {"backend": "svc", "model": "one", "priority": 1}
    assert report.lost == [
        "AIGatewayRoute default/other: spec.rules[0].backendRefs[0]: AIServiceBackend"
        " default/missing: not among the inputs",
        "AIGatewayRoute default/other: spec.rules[0]: model 'ghost': no usable backend",
    ]


def test_not_a_resource_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"inline.yaml: document 1: not a Kubernetes resource"):
        _inline("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"invalid YAML"):
        _inline("kind: [unclosed\n")


def test_backend_header_mutation_set_becomes_static_headers() -> None:
    data, report = _inline(
        BACKEND.replace(
            ", capabilities: {messagesTranslation: Responses}}",
            "}\n  headerMutation:\n    set: [{name: X-Team, value: search}, {name: Authorization,"
            " value: Bearer nope}]\n    remove: [x-debug]",
        )
        + """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be}
spec:
  endpoints: [{fqdn: {hostname: llm.example.com, port: 443}}]
"""
    )
    assert data["backends"]["svc"]["headers"] == {"X-Team": "search"}
    assert report.lost == [
        "AIServiceBackend default/svc: spec.headerMutation.set[1]: Authorization is the"
        " gateway's to set",
        "AIServiceBackend default/svc: spec.headerMutation.remove: no equivalent: client headers"
        " other than credentials are forwarded",
    ]
    parse_config(data, env={}, secrets=False)


def test_readme_example_is_what_the_importer_writes() -> None:
    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    section = readme[readme.index("## Coming from Envoy AI Gateway") :]
    shown = yaml.safe_load(section.split("```yaml\n")[1].split("```")[0])
    fixture = (FIXTURES / "openai.yaml").read_text()
    # The fixture, without the second model name, the weight and the catch-all rule.
    source = (
        fixture.replace("        - headers:\n            - type: Exact\n", "", 1)
        .replace("              name: x-ai-eg-model\n              value: small\n", "", 1)
        .replace("          weight: 3\n", "", 1)
        .replace("    - backendRefs:\n        - name: local-llm\n", "", 1)
    )
    data, report = _inline(source)
    assert data == shown
    line = "#   OPENAI_API_KEY: Secret llm/openai-api-key, key 'apiKey'"
    assert line in section
    assert line in render(data, report, ["eaig.yaml"])


def test_a_copy_never_takes_the_name_of_another_backend() -> None:
    other = BACKEND.split("---")[0].replace("name: svc}", "name: svc-2}").replace("be,", "be2,")
    data, _ = _inline(
        BACKEND.replace(", capabilities: {messagesTranslation: Responses}", "")
        + "---"
        + other
        + """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be}
spec: {endpoints: [{fqdn: {hostname: one.example.com, port: 443}}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be2}
spec: {endpoints: [{fqdn: {hostname: two.example.com, port: 443}}]}
"""
    )
    assert data["backends"]["svc-2"]["url"] == "https://two.example.com/v1"
    assert data["backends"]["svc-3"]["url"] == "https://one.example.com/v1"
    assert [e["backend"] for e in data["models"][0]["backends"]] == ["svc", "svc-3"]


def test_a_malformed_creation_time_is_an_input_error() -> None:
    text = (FIXTURES / "azure-entra.yaml").read_text().replace('"2025-03-01T12:00:00Z"', "soon")
    with pytest.raises(ConfigError, match=r"spec\.rules\[0\]\.modelsCreatedAt"):
        _inline(text)


def test_one_rule_matching_a_model_twice_makes_one_model() -> None:
    text = BACKEND.replace(", capabilities: {messagesTranslation: Responses}", "").replace(
        "    - matches: [{headers: [{name: X-AI-EG-Model, value: m}]}]",
        "    - matches: [{headers: [{name: x-ai-eg-model, value: m}]},"
        " {headers: [{name: x-ai-eg-model, value: m}]}]",
    )
    data, report = _inline(
        text
        + """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be}
spec: {endpoints: [{fqdn: {hostname: one.example.com, port: 443}}]}
"""
    )
    assert [m["name"] for m in data["models"]] == ["m"]
    assert report.lost == []
