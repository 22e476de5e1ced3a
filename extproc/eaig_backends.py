"""Our backends from Envoy AI Gateway's AIServiceBackends (``ai-gateway import``).

Each AIServiceBackend becomes a backend: its schema, the URL of the Envoy Gateway ``Backend`` it
points at (https when a BackendTLSPolicy targets it or the port is 443), and its
BackendSecurityPolicy's credentials as ``${VAR}`` references named after the Secret that holds
them. No Secret is ever read. Whatever has no equivalent goes to :attr:`Report.lost`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from extproc import eaig_resources as r
from extproc.wire import INTERNAL_PREFIX

# Headers a backend's static `headers:` may not set (config._BackendBase): the gateway's own.
_RESERVED = {"host", "content-length", "authorization", "api-key"}


@dataclass
class Report:
    lost: list[str] = field(default_factory=list)  # "<Kind ns/name>: <field path>: <why>"
    notes: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)  # VAR -> where its Secret is
    comments: dict[str, list[str]] = field(default_factory=dict)  # backend -> comment lines

    def lose(self, res: r.Resource, path: str, why: str) -> None:
        self.lost.append(f"{res.ref}: {path}: {why}")


@dataclass(frozen=True)
class Doc:
    """A resource and its kind's spec."""

    res: r.Resource
    spec: Any  # the kind's spec model (eaig_resources.SPECS)


Key = tuple[str, str]  # (namespace, name)


def key(doc: Doc) -> Key:
    return doc.res.metadata.namespace, doc.res.metadata.name


def _variable(secret: r.ObjectRef, namespace: str, secret_key: str, report: Report) -> str:
    """The ``${VAR}`` for a Secret's value: its name in capitals, one variable per Secret."""
    where = f"Secret {secret.namespace or namespace}/{secret.name}, key {secret_key!r}"
    base = re.sub(r"[^A-Za-z0-9]+", "_", secret.name).strip("_").upper() or "SECRET"
    base = f"_{base}" if base[0].isdigit() else base
    name, n = base, 1
    while report.variables.get(name, where) != where:
        n += 1
        name = f"{base}_{n}"
    report.variables[name] = where
    return "${" + name + "}"


class Backends:
    """Our backends from AIServiceBackends, their policies and Envoy Gateway Backends."""

    def __init__(self, docs: list[Doc], report: Report) -> None:
        self.report = report
        self.docs: dict[str, dict[Key, Doc]] = {kind: {} for kind in r.SPECS}
        for doc in docs:
            if self.docs[doc.res.kind].setdefault(key(doc), doc) is not doc:
                report.lose(doc.res, "metadata.name", "given twice: the first one is used")
        self.policies = self._targets("BackendSecurityPolicy", "AIServiceBackend")
        self.tls = self._targets("BackendTLSPolicy", "Backend")
        self.backends: dict[str, dict[str, Any]] = {}
        self.names: dict[Key, str] = {}
        self.fallback: set[str] = set()

    def _targets(self, kind: str, target_kind: str) -> dict[Key, Doc]:
        out: dict[Key, Doc] = {}
        for doc in self.docs[kind].values():
            ns = doc.res.metadata.namespace
            for i, ref in enumerate(doc.spec.target_refs):
                if ref.kind not in (None, target_kind):
                    self.report.lose(doc.res, f"spec.targetRefs[{i}]", f"targets a {ref.kind}")
                elif (ns, ref.name) in out:
                    self.report.lose(
                        doc.res, f"spec.targetRefs[{i}]", f"{out[ns, ref.name].res.ref} came first"
                    )
                else:
                    out[ns, ref.name] = doc
        if kind == "BackendSecurityPolicy":
            for sb in self.docs["AIServiceBackend"].values():
                ref = sb.spec.backend_security_policy_ref
                found = self.docs[kind].get((sb.res.metadata.namespace, ref.name)) if ref else None
                if found is not None:
                    out.setdefault(key(sb), found)
        return out

    def build(self) -> None:
        bare = [name for _, name in self.docs["AIServiceBackend"]]
        for (ns, bare_name), sb in self.docs["AIServiceBackend"].items():
            # Named as in Kubernetes; with the namespace when two namespaces share a name.
            name = bare_name if bare.count(bare_name) == 1 else f"{ns}-{bare_name}"
            self.report.comments.setdefault(name, []).insert(0, f"from {sb.res.ref}")
            body = self._backend(sb, name)
            if body is not None:
                self._headers(sb, body)
                self.backends[name] = body
                self.names[ns, bare_name] = name

    # --- backends --------------------------------------------------------------------------

    def _backend(self, sb: Doc, name: str) -> dict[str, Any] | None:
        schema, res = sb.spec.schema_, sb.res
        policy = self.policies.get(key(sb))
        ptype = policy.spec.type if policy else None
        if sb.spec.body_mutation is not None:
            self.report.lose(res, "spec.bodyMutation", "request bodies are not rewritten here")
        base, tls = self._url(sb, name)
        if schema.name == "AWSBedrock":
            return self._bedrock(sb, name, policy, base, tls)
        if schema.name not in ("OpenAI", "AzureOpenAI"):
            self.report.lose(res, "spec.schema.name", f"{schema.name} is not served here yet")
            return None
        if base is None:
            return None
        prefix = schema.prefix
        if schema.name == "OpenAI" and prefix is None:
            # v1alpha1 read an OpenAI schema's version as its prefix; v1beta1 ignores it.
            old = res.api_version.endswith("v1alpha1")
            prefix = schema.version if old and schema.version else "v1"
        azure = schema.name == "AzureOpenAI" or (
            ptype in ("AzureAPIKey", "AzureCredentials")
            and (prefix or "").strip("/") == "openai/v1"
        )
        body: dict[str, Any] = {"schema": "azure_openai" if azure else "openai"}
        if azure:
            body["url"] = base
            if schema.name == "OpenAI":
                body["surface"] = "v1"
            elif schema.version:
                body["api_version"] = schema.version
            if schema.name == "AzureOpenAI" and schema.prefix:
                self.report.lose(res, "spec.schema.prefix", "Azure OpenAI paths are fixed")
        else:
            body["url"] = base + ("/" + prefix.strip("/") if prefix.strip("/") else "")
        if tls:
            body["tls"] = tls
        if not self._credentials(sb, policy, body, azure):
            return None
        return body

    def _headers(self, sb: Doc, body: dict[str, Any]) -> None:
        """headerMutation.set as the backend's static headers; the rest has no equivalent."""
        mutation, path = sb.spec.header_mutation, "spec.headerMutation"
        if mutation is None:
            return
        for i, header in enumerate(mutation.set):
            name, value = header.get("name", ""), header.get("value", "")
            if name.lower() in _RESERVED or name.lower().startswith((":", INTERNAL_PREFIX)):
                self.report.lose(sb.res, f"{path}.set[{i}]", f"{name} is the gateway's to set")
            else:
                body.setdefault("headers", {})[name] = value
        if mutation.remove:
            self.report.lose(
                sb.res,
                f"{path}.remove",
                "no equivalent: client headers other than credentials are forwarded",
            )

    def _credentials(self, sb: Doc, policy: Doc | None, body: dict[str, Any], azure: bool) -> bool:
        if policy is None:
            if azure:
                self.report.lose(sb.res, "spec", "no BackendSecurityPolicy: Azure needs a key")
            return not azure
        spec, ns, pres = policy.spec, policy.res.metadata.namespace, policy.res
        secret = spec.api_key or spec.anthropic_api_key or spec.azure_api_key
        if secret is not None and (azure or spec.azure_api_key is None):
            body["api_key"] = _variable(secret.secret_ref, ns, "apiKey", self.report)
            return True
        if azure and spec.azure_credentials is not None:
            return self._entra(policy, spec.azure_credentials, body)
        self.report.lose(pres, "spec.type", f"{spec.type} cannot authenticate a {body['schema']}")
        return False

    def _entra(self, policy: Doc, cred: r.AzureCredentials, body: dict[str, Any]) -> bool:
        path = "spec.azureCredentials"
        for name, value in (
            ("oidcExchangeToken", cred.oidc_exchange_token),
            ("useManagedIdentity", cred.use_managed_identity),
        ):
            if value:
                self.report.lose(policy.res, f"{path}.{name}", "only client secrets are supported")
        if cred.client_secret_ref is None or cred.client_id is None:
            self.report.lose(policy.res, path, "Entra ID needs clientID and clientSecretRef here")
            return False
        secret = _variable(
            cred.client_secret_ref, policy.res.metadata.namespace, "client-secret", self.report
        )
        body["entra"] = {
            "tenant_id": cred.tenant_id,
            "client_id": cred.client_id,
            "client_secret": secret,
        }
        return True

    def _bedrock(
        self, sb: Doc, name: str, policy: Doc | None, base: str | None, tls: dict[str, str]
    ) -> dict[str, Any] | None:
        aws = policy.spec.aws_credentials if policy else None
        if policy is not None and aws is None:
            self.report.lose(policy.res, "spec.type", f"{policy.spec.type} cannot sign for AWS")
            return None
        found = re.fullmatch(r"https://bedrock-runtime\.([a-z0-9-]+)\.amazonaws\.com", base or "")
        region = aws.region if aws else (found.group(1) if found else None)
        if region is None:
            self.report.lose(sb.res, "spec", "no AWS region: no AWSCredentials policy names one")
            return None
        body: dict[str, Any] = {"schema": "aws_bedrock", "region": region}
        if base and base != f"https://bedrock-runtime.{region}.amazonaws.com":
            body["url"] = base
        if tls:
            body["tls"] = tls
        if aws is not None and policy is not None and aws.oidc_exchange_token is not None:
            self.report.lose(
                policy.res,
                "spec.awsCredentials.oidcExchangeToken",
                "no OIDC exchange here: the standard AWS chain is used (web identity works)",
            )
        if aws is not None and aws.credentials_file is not None and policy is not None:
            if aws.credentials_file.profile != "default":
                body["profile"] = aws.credentials_file.profile
            secret = aws.credentials_file.secret_ref
            self.report.comments.setdefault(name, []).append(
                f"credentials: Secret {secret.namespace or policy.res.metadata.namespace}/"
                f"{secret.name}, key 'credentials', is an AWS credentials file: mount it and"
                " set AWS_SHARED_CREDENTIALS_FILE to its path"
            )
        return body

    def _url(self, sb: Doc, name: str) -> tuple[str | None, dict[str, str]]:
        ref, res = sb.spec.backend_ref, sb.res
        ns = ref.namespace or res.metadata.namespace
        if ref.kind not in (None, "Backend"):
            self.report.lose(res, "spec.backendRef", f"a {ref.kind}: give its URL by hand")
            return None, {}
        found = self.docs["Backend"].get((ns, ref.name))
        if found is None:
            self.report.lose(res, "spec.backendRef", f"Backend {ns}/{ref.name} is not an input")
            return None, {}
        be, spec = found.res, found.spec
        if spec.fallback:
            self.fallback.add(name)
        for i, proto in enumerate(spec.app_protocols):
            self.report.lose(be, f"spec.appProtocols[{i}]", f"{proto}: the protocol is chosen here")
        if spec.type != "Endpoints" or not spec.endpoints:
            self.report.lose(be, "spec.endpoints", "no FQDN or IP endpoint")
            return None, {}
        for i in range(1, len(spec.endpoints)):
            self.report.lose(be, f"spec.endpoints[{i}]", "a backend has one URL: first one used")
        first = spec.endpoints[0]
        for field_, value in (
            ("unix", first.unix),
            ("hostname", first.hostname),
            ("zone", first.zone),
        ):
            if value:
                self.report.lose(be, f"spec.endpoints[0].{field_}", "no equivalent")
        if first.fqdn is not None:
            host, port_ = first.fqdn.hostname, first.fqdn.port
        elif first.ip is not None:
            host, port_ = first.ip.address, first.ip.port
            host = f"[{host}]" if ":" in host else host
        else:
            return None, {}
        policy = self.tls.get((ns, ref.name))
        checks = [(be, "spec.tls", spec.tls)]
        if policy is not None:
            checks.append((policy.res, "spec.validation", policy.spec.validation))
        https = port_ == 443 or any(c[2] is not None for c in checks)
        for owner, path, check in checks:
            if check is not None and check.ca_certificate_refs:
                self.report.lose(owner, f"{path}.caCertificateRefs", "write the CA to tls.ca_file")
            if check is not None and check.insecure_skip_verify:
                self.report.lose(owner, f"{path}.insecureSkipVerify", "verification is always on")
        tls: dict[str, str] = {}
        if policy is not None:
            sni = policy.spec.validation.hostname
            if sni and sni != host:
                tls["sni"] = sni
            if policy.spec.validation.subject_alt_names:
                self.report.lose(
                    policy.res, "spec.validation.subjectAltNames", "the SNI is checked"
                )
        scheme = "https" if https else "http"
        port = "" if port_ == (443 if https else 80) else f":{port_}"
        return f"{scheme}://{host}{port}", tls
