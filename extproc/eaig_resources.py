"""Envoy AI Gateway's resources, as ``ai-gateway import`` reads them.

Typed after the published API reference (aigateway.envoyproxy.io, ``api/v1alpha1`` and
``api/v1beta1``) and Envoy Gateway's ``Backend``, only as far as the importer needs. Fields not
declared here are kept (``extra="allow"``) so that :func:`unknown_fields` can name each one:
an importer that silently skipped a field would carry a config over wrong without saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Spec(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class Metadata(BaseModel):
    # Labels, annotations, uid...: Kubernetes bookkeeping, nothing to carry over.
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1)
    namespace: str = "default"


class ObjectRef(_Spec):
    """A Gateway API object reference (SecretObjectReference, BackendObjectReference...)."""

    name: str = Field(min_length=1)
    namespace: str | None = None
    group: str | None = None
    kind: str | None = None
    port: int | None = None
    section_name: str | None = Field(default=None, alias="sectionName")


# --- AIGatewayRoute --------------------------------------------------------------------------


class HeaderMatch(_Spec):
    name: str = Field(min_length=1)
    value: str = Field(min_length=1)
    type: Literal["Exact", "RegularExpression"] = "Exact"


class RouteMatch(_Spec):
    headers: list[HeaderMatch] = Field(default_factory=list)


class HeaderMutation(_Spec):
    set: list[dict[str, str]] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class RouteBackendRef(_Spec):
    name: str = Field(min_length=1)
    namespace: str | None = None
    group: str | None = None
    kind: str | None = None
    model_name_override: str | None = Field(default=None, alias="modelNameOverride")
    weight: int | None = Field(default=None, ge=0)
    priority: int | None = Field(default=None, ge=0)
    header_mutation: HeaderMutation | None = Field(default=None, alias="headerMutation")
    body_mutation: dict[str, object] | None = Field(default=None, alias="bodyMutation")


class RouteTimeouts(_Spec):
    request: str | None = None
    backend_request: str | None = Field(default=None, alias="backendRequest")


class RouteRule(_Spec):
    matches: list[RouteMatch] = Field(default_factory=list)
    backend_refs: list[RouteBackendRef] = Field(default_factory=list, alias="backendRefs")
    timeouts: RouteTimeouts | None = None
    models_owned_by: str | None = Field(default=None, alias="modelsOwnedBy")
    models_created_at: datetime | None = Field(default=None, alias="modelsCreatedAt")


class RequestCost(_Spec):
    metadata_key: str = Field(alias="metadataKey")
    # CachedWriteInputToken (v1alpha1) was renamed CacheCreationInputToken (v1beta1).
    type: Literal[
        "InputToken",
        "CachedInputToken",
        "CachedWriteInputToken",
        "CacheCreationInputToken",
        "OutputToken",
        "ReasoningToken",
        "TotalToken",
        "CEL",
    ] = "OutputToken"
    cel: str | None = None


class RouteSpec(_Spec):
    parent_refs: list[ObjectRef] = Field(default_factory=list, alias="parentRefs")
    hostnames: list[str] = Field(default_factory=list)
    rules: list[RouteRule]
    filter_config: dict[str, object] | None = Field(default=None, alias="filterConfig")
    llm_request_costs: list[RequestCost] = Field(default_factory=list, alias="llmRequestCosts")


# --- AIServiceBackend ------------------------------------------------------------------------

APISchemaName = Literal[
    "OpenAI",
    "Cohere",
    "AWSBedrock",
    "AzureOpenAI",
    "GCPVertexAI",
    "GCPAnthropic",
    "Anthropic",
    "AWSAnthropic",
]


class APISchema(_Spec):
    name: APISchemaName
    version: str | None = None
    prefix: str | None = None


class ServiceBackendSpec(_Spec):
    schema_: APISchema = Field(alias="schema")
    backend_ref: ObjectRef = Field(alias="backendRef")
    # Deprecated in v1alpha1 (policies name their targets now), still read.
    backend_security_policy_ref: ObjectRef | None = Field(
        default=None, alias="backendSecurityPolicyRef"
    )
    header_mutation: HeaderMutation | None = Field(default=None, alias="headerMutation")
    body_mutation: dict[str, object] | None = Field(default=None, alias="bodyMutation")


# --- BackendSecurityPolicy -------------------------------------------------------------------


class SecretKey(_Spec):
    secret_ref: ObjectRef = Field(alias="secretRef")


class AWSCredentialsFile(SecretKey):
    profile: str = "default"


class AWSCredentials(_Spec):
    region: str = Field(min_length=1)
    credentials_file: AWSCredentialsFile | None = Field(default=None, alias="credentialsFile")
    oidc_exchange_token: dict[str, object] | None = Field(default=None, alias="oidcExchangeToken")


class AzureCredentials(_Spec):
    client_id: str | None = Field(default=None, alias="clientID")
    tenant_id: str = Field(alias="tenantID")
    client_secret_ref: ObjectRef | None = Field(default=None, alias="clientSecretRef")
    oidc_exchange_token: dict[str, object] | None = Field(default=None, alias="oidcExchangeToken")
    use_managed_identity: bool | None = Field(default=None, alias="useManagedIdentity")


class GCPCredentials(_Spec):
    project_name: str = Field(alias="projectName")
    region: str
    credentials_file: SecretKey | None = Field(default=None, alias="credentialsFile")
    workload_identity_federation_config: dict[str, object] | None = Field(
        default=None, alias="workloadIdentityFederationConfig"
    )


PolicyType = Literal[
    "APIKey",
    "AWSCredentials",
    "AzureAPIKey",
    "AzureCredentials",
    "GCPCredentials",
    "AnthropicAPIKey",
]


class SecurityPolicySpec(_Spec):
    target_refs: list[ObjectRef] = Field(default_factory=list, alias="targetRefs")
    type: PolicyType
    api_key: SecretKey | None = Field(default=None, alias="apiKey")
    aws_credentials: AWSCredentials | None = Field(default=None, alias="awsCredentials")
    azure_api_key: SecretKey | None = Field(default=None, alias="azureAPIKey")
    azure_credentials: AzureCredentials | None = Field(default=None, alias="azureCredentials")
    gcp_credentials: GCPCredentials | None = Field(default=None, alias="gcpCredentials")
    anthropic_api_key: SecretKey | None = Field(default=None, alias="anthropicAPIKey")


# --- Envoy Gateway Backend, Gateway API BackendTLSPolicy -------------------------------------


class SocketAddress(_Spec):
    port: int = Field(ge=0, le=65535)


class FQDNEndpoint(SocketAddress):
    hostname: str = Field(min_length=1)


class IPEndpoint(SocketAddress):
    address: str = Field(min_length=3)


class Endpoint(_Spec):
    fqdn: FQDNEndpoint | None = None
    ip: IPEndpoint | None = None
    unix: dict[str, object] | None = None
    hostname: str | None = None
    zone: str | None = None


class BackendTLS(_Spec):
    ca_certificate_refs: list[ObjectRef] = Field(default_factory=list, alias="caCertificateRefs")
    well_known_ca_certificates: str | None = Field(default=None, alias="wellKnownCACertificates")
    insecure_skip_verify: bool | None = Field(default=None, alias="insecureSkipVerify")


class BackendSpec(_Spec):
    type: Literal["Endpoints", "DynamicResolver"] = "Endpoints"
    endpoints: list[Endpoint] = Field(default_factory=list)
    app_protocols: list[str] = Field(default_factory=list, alias="appProtocols")
    fallback: bool | None = None
    tls: BackendTLS | None = None


class TLSValidation(BackendTLS):
    hostname: str | None = None
    subject_alt_names: list[dict[str, object]] = Field(
        default_factory=list, alias="subjectAltNames"
    )


class TLSPolicySpec(_Spec):
    target_refs: list[ObjectRef] = Field(alias="targetRefs")
    validation: TLSValidation


# --- the documents ---------------------------------------------------------------------------

SPECS: dict[str, type[_Spec]] = {
    "AIGatewayRoute": RouteSpec,
    "AIServiceBackend": ServiceBackendSpec,
    "BackendSecurityPolicy": SecurityPolicySpec,
    "Backend": BackendSpec,
    "BackendTLSPolicy": TLSPolicySpec,
}


class Resource(BaseModel):
    """One document: ``spec`` is validated by kind (:data:`SPECS`) by the caller."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: Metadata

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.metadata.namespace}/{self.metadata.name}"


def unknown_fields(model: BaseModel, path: str) -> Iterator[str]:
    """The path of every field the typed model does not declare, depth first."""
    for key in model.model_extra or {}:
        yield f"{path}.{key}" if path else key
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        sub = f"{path}.{info.alias or name}" if path else (info.alias or name)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                yield from unknown_fields(item, f"{sub}[{i}]" if isinstance(value, list) else sub)
