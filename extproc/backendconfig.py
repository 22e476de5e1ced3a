"""The backends' part of the configuration: one model per provider API (``schema``).

Each model declares what the rest of the gateway must know about its provider without a branch
per schema: its ``gen_ai.provider.name`` (``provider``), the environment variables its standard
credential chain reads (``credential_variables``: never in Envoy's environment), and its
secrets, which are every ``SecretStr`` field (:meth:`secrets`; a YAML value under one of their
names must come from the environment or a file, see :data:`SECRET_FIELDS`). Where the runtime
needs the schema's translators and auth, :mod:`extproc.backends` dispatches on these classes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from extproc.bedrockmodels import ImageFetch
from extproc.configbase import ConfigModel, Duration
from extproc.wire import INTERNAL_PREFIX

DEFAULT_AZURE_API_VERSION = "2024-10-21"


class TLS(ConfigModel):
    ca_file: str | None = None
    sni: str | None = None


def _internal(header: str) -> bool:
    """A pseudo-header or one of the gateway's own: never the config's to set or pass."""
    return header.startswith(":") or header.lower().startswith(INTERNAL_PREFIX)


def _read_secret_file(path: str) -> SecretStr:
    return SecretStr(Path(path).read_text().strip())


class _BackendBase(ConfigModel):
    # Declared by every schema's model (tests/unit/test_registry.py checks each one does).
    provider: ClassVar[str]  # gen_ai.provider.name
    # Variables the provider's standard credential chain reads, whatever the config says.
    credential_variables: ClassVar[frozenset[str]]
    # Whether it answers OpenAI's GET /v1/models, which a catch-all route lists (catalog.py).
    lists_models: ClassVar[bool] = False

    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    timeout: Duration | None = None
    tls: TLS = TLS()
    # Client headers this backend gets although the gateway never forwards them otherwise
    # (router.NEVER_FORWARDED: e.g. openai-organization for a backend billed per project).
    forward_headers: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port][/prefix], got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError("url must not carry a query or fragment (use `query:`)")
        return url.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        reserved = {"host", "content-length", "authorization", "api-key"}
        bad = sorted(h for h in headers if h.lower() in reserved or _internal(h))
        if bad:
            raise ValueError(f"headers may not set {', '.join(bad)}")
        return {k.lower(): v for k, v in headers.items()}

    @field_validator("forward_headers")
    @classmethod
    def _check_forward_headers(cls, names: list[str]) -> list[str]:
        # The client's gateway credential is never a provider's business.
        reserved = {"authorization", "api-key", "x-api-key"}
        bad = sorted(h for h in names if h.lower() in reserved or _internal(h))
        if bad:
            raise ValueError(f"forward_headers may not name {', '.join(bad)}")
        return [h.lower() for h in names]

    def endpoint(self) -> tuple[str, str, int, str]:
        """(scheme, host, port, path prefix) of the upstream."""
        parts = urlsplit(self.base_url())
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        return scheme, host, port, parts.path.rstrip("/")

    def base_url(self) -> str:
        if self.url is None:
            raise ValueError("backend has no url")
        return self.url

    def secrets(self) -> list[SecretStr]:
        """Every credential this backend holds (the sidecar's business, never Envoy's)."""
        return list(_secret_values(self))

    def authority(self) -> str:
        """The Host header the provider gets: the host, with the port when it is not default."""
        scheme, host, port, _ = self.endpoint()
        return host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"


class OpenAIBackend(_BackendBase):
    """Any OpenAI-compatible API: OpenAI, Groq, Together, Mistral, vLLM, Ollama..."""

    provider = "openai"
    credential_variables = frozenset({"OPENAI_API_KEY"})
    lists_models = True

    schema_: Literal["openai"] = Field(alias="schema")
    url: str | None = "https://api.openai.com/v1"
    api_key: SecretStr | None = None
    api_key_file: str | None = None

    @model_validator(mode="after")
    def _key_file(self) -> OpenAIBackend:
        if self.api_key_file and self.api_key is None:
            object.__setattr__(self, "api_key", _read_secret_file(self.api_key_file))
        return self


class EntraID(ConfigModel):
    tenant_id: str
    client_id: str
    client_secret: SecretStr | None = None
    client_secret_file: str | None = None
    authority: str = "https://login.microsoftonline.com"
    scope: str = "https://cognitiveservices.azure.com/.default"

    @model_validator(mode="after")
    def _secret_file(self) -> EntraID:
        if self.client_secret_file and self.client_secret is None:
            object.__setattr__(self, "client_secret", _read_secret_file(self.client_secret_file))
        if self.client_secret is None:
            raise ValueError(
                "entra needs client_secret (from the environment) or client_secret_file"
            )
        return self


class AzureOpenAIBackend(_BackendBase):
    provider = "azure.openai"
    credential_variables = frozenset({"AZURE_OPENAI_API_KEY", "AZURE_CLIENT_SECRET"})

    schema_: Literal["azure_openai"] = Field(alias="schema")
    api_version: str = DEFAULT_AZURE_API_VERSION
    # "deployments": /openai/deployments/{deployment}/...?api-version=V; "v1": /openai/v1/...
    surface: Literal["deployments", "v1"] = "deployments"
    api_key: SecretStr | None = None
    api_key_file: str | None = None
    entra: EntraID | None = None

    @model_validator(mode="after")
    def _auth(self) -> AzureOpenAIBackend:
        if self.url is None:
            raise ValueError("azure_openai needs url: https://<resource>.openai.azure.com")
        if self.api_key_file and self.api_key is None:
            object.__setattr__(self, "api_key", _read_secret_file(self.api_key_file))
        if (self.api_key is None) == (self.entra is None):
            raise ValueError("azure_openai needs exactly one of api_key / api_key_file or entra")
        return self


class AWSBedrockBackend(_BackendBase):
    provider = "aws.bedrock"
    credential_variables = frozenset(
        {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    )

    schema_: Literal["aws_bedrock"] = Field(alias="schema")
    region: str
    # Explicit keys are optional: without them the standard AWS credential chain is used.
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    profile: str | None = None
    fetch_image_urls: ImageFetch | None = None  # off: an image URL is a 400

    def base_url(self) -> str:
        return self.url or f"https://bedrock-runtime.{self.region}.amazonaws.com"

    @model_validator(mode="after")
    def _keys(self) -> AWSBedrockBackend:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        return self


Backend = Annotated[
    OpenAIBackend | AzureOpenAIBackend | AWSBedrockBackend, Field(discriminator="schema_")
]

# The schemas' models, and what the config loader and the CLI derive from them.
BACKEND_TYPES: tuple[type[_BackendBase], ...] = get_args(get_args(Backend)[0])
SCHEMAS = {get_args(cls.model_fields["schema_"].annotation)[0]: cls for cls in BACKEND_TYPES}
CREDENTIAL_VARIABLES = frozenset().union(*(cls.credential_variables for cls in BACKEND_TYPES))


def _secret_values(model: BaseModel) -> Iterator[SecretStr]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            yield value
        elif isinstance(value, BaseModel):
            yield from _secret_values(value)


def _secret_fields(model: type[BaseModel]) -> set[str]:
    out = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        kinds = get_args(annotation) if isinstance(annotation, UnionType) else (annotation,)
        if SecretStr in kinds:
            out.add(name)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                out |= _secret_fields(kind)
    return out


# Keys whose YAML value must be a ${VAR} reference (or come from a *_file key), never a literal.
SECRET_FIELDS = frozenset().union(*(_secret_fields(cls) for cls in BACKEND_TYPES))

# Any of these says the AWS credential chain has something to find.
_AWS_CREDENTIAL_HINTS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)


def env_backends(env: Mapping[str, str]) -> dict[str, Any]:
    """The backends of ``ai-gateway run`` without ``-c``: every provider found in the
    environment, in fallback order: OpenAI (or any OpenAI-compatible server at
    ``OPENAI_BASE_URL``), then Azure OpenAI, then AWS Bedrock. Values the config loader
    substitutes (``${VAR}``), so a secret is never a literal here either."""
    backends: dict[str, Any] = {}
    if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
        backend: dict[str, Any] = {"schema": "openai"}
        if env.get("OPENAI_BASE_URL"):
            backend["url"] = "${OPENAI_BASE_URL}"
        if env.get("OPENAI_API_KEY"):
            backend["api_key"] = "${OPENAI_API_KEY}"
        backends["openai"] = backend
    if env.get("AZURE_OPENAI_API_KEY") and env.get("AZURE_OPENAI_ENDPOINT"):
        backends["azure"] = {
            "schema": "azure_openai",
            "url": "${AZURE_OPENAI_ENDPOINT}",
            "api_key": "${AZURE_OPENAI_API_KEY}",
            "api_version": env.get("OPENAI_API_VERSION", DEFAULT_AZURE_API_VERSION),
        }
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region and any(env.get(k) for k in _AWS_CREDENTIAL_HINTS):
        # Credentials themselves come from the standard AWS chain at run time.
        backends["bedrock"] = {"schema": "aws_bedrock", "region": region}
    return backends
