"""The gateway configuration: one model read by both the Envoy renderer and the sidecar.

The YAML file is parsed, ``${ENV}`` references are substituted in string values, and the result
is validated with pydantic. Secrets (API keys, client secrets) may only come from the
environment or from files, never as literals in the file, so a config can be committed and
shown in review without leaking anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from extproc.backendconfig import (
    BACKEND_TYPES,
    SCHEMAS,
    SECRET_FIELDS,
    env_backends,
)
from extproc.backendconfig import DEFAULT_AZURE_API_VERSION as DEFAULT_AZURE_API_VERSION
from extproc.backendconfig import TLS as TLS
from extproc.backendconfig import AnthropicBackend as AnthropicBackend
from extproc.backendconfig import AWSBedrockBackend as AWSBedrockBackend
from extproc.backendconfig import AzureOpenAIBackend as AzureOpenAIBackend
from extproc.backendconfig import Backend as Backend
from extproc.backendconfig import EntraID as EntraID
from extproc.backendconfig import OpenAIBackend as OpenAIBackend
from extproc.bedrockmodels import Family, Guardrail, named_family, unknown_family
from extproc.clients import ClientKey, client_errors
from extproc.configbase import ConfigError as ConfigError
from extproc.configbase import ConfigModel, Duration
from extproc.limits import LimitRule, rule_errors
from extproc.limitstore import StoreSpec
from extproc.sidecarconfig import Sidecar as Sidecar
from extproc.sidecarconfig import SidecarTLS as SidecarTLS

# A fixed epoch for ``/v1/models`` ``created``: stable across restarts and replicas.
DEFAULT_MODEL_CREATED = 1735689600  # 2025-01-01T00:00:00Z


class Address(ConfigModel):
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)


class Admin(ConfigModel):
    """The admin port: ``/metrics`` (the sidecar's Prometheus metrics) and Envoy's read-only
    ``/ready``, ``/stats`` and ``/stats/prometheus``. Envoy's own admin interface, which can
    also change state, only listens on a Unix socket (``envoy_socket``).
    """

    host: str = "127.0.0.1"
    port: int = Field(default=1064, ge=0, le=65535)
    envoy_socket: str = "/tmp/ai-gateway-envoy-admin.sock"


class HTTPLimits(ConfigModel):
    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Envoy's per-connection buffer (client and provider side): how much of an answer it holds
    # for a client that reads slowly before it stops reading from the provider, and the most
    # it reads in one go. Request bodies are still buffered up to max_request_bytes (a route
    # setting), buffered answers too (the sidecar's buffering stage).
    stream_buffer_bytes: int = Field(default=1024 * 1024, ge=16 * 1024)
    # Per client (gateway key, else client address) and sidecar worker: uploads whose body
    # Envoy is still receiving, and the bytes they announced (content-length; a chunked body
    # counts as max_request_bytes). Over either: 429 too_many_uploads at the headers. 0 = none.
    # The defaults leave room for bursts of ordinary requests (each counts from its headers to
    # its body's arrival) and admit three unfinished 31 MiB uploads per worker.
    uploads_per_client: int = Field(default=128, ge=0)
    upload_bytes_per_client: int = Field(default=96 * 1024 * 1024, ge=0)
    # What parsing one JSON body may build (extproc/parsework.py): objects and arrays, and
    # values (array elements and object members). Measured worst cases under the defaults:
    # see docs/architecture.md, "Bounds".
    max_json_containers: int = Field(default=100_000, ge=16)
    max_json_items: int = Field(default=1_000_000, ge=16)
    max_connections: int = Field(default=50_000, ge=1)
    # On SIGTERM: new connections are refused at once, open requests (streams included) get
    # this long to finish before Envoy stops.
    drain_time: Duration = 30.0
    # Answers of at least this many bytes (JSON only, never a stream) are gzip-compressed for
    # clients that accept it; 0 turns compression off. Providers are always asked for
    # uncompressed answers, which the sidecar reads (see extproc/encoding.py).
    compress_min_bytes: int = Field(default=4096, ge=0)
    # Debugging aid: responses name the backend that served them and the attempts it took
    # (x-ai-eg-backend, x-ai-eg-attempts). Off by default: it tells clients about the topology.
    expose_backend: bool = False


class Timeouts(ConfigModel):
    request: Duration = 600.0
    idle: Duration = 300.0
    connect: Duration = 10.0
    # How long a client may take to send its request headers, and its whole request: a client
    # dripping bytes (slowloris) resets the idle timer, these bound it. Answered with a 408.
    headers: Duration = 10.0
    upload: Duration = 60.0


class Pricing(ConfigModel):
    """USD per 1M tokens; the audio and image endpoints' own units as named."""

    input: float = Field(default=0.0, ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    output: float = Field(default=0.0, ge=0)
    reasoning: float | None = Field(default=None, ge=0)
    guardrail: float = Field(default=0.0, ge=0)  # USD per 1,000 guardrail text units
    per_request: float = Field(default=0.0, ge=0)
    per_million_characters: float = Field(default=0.0, ge=0)  # speech: the input's characters
    per_image: float = Field(default=0.0, ge=0)  # image generation: each image made
    per_audio_minute: float = Field(default=0.0, ge=0)  # transcription, translation


class ModelBackend(ConfigModel):
    backend: str
    model: str | None = Field(default=None, description="model name sent upstream")
    priority: int = Field(default=0, ge=0, le=127)
    weight: int = Field(default=1, ge=1, le=128)
    pricing: Pricing | None = None
    # Bedrock: cache points the gateway adds after the system prompt and / or the tools.
    cache_points: list[Literal["system", "tools"]] = Field(default_factory=list)
    # Bedrock only (extproc/bedrockmodels.py): the family of a model id that names none (an
    # ARN), and a guardrail on every Converse call.
    family: Family | None = None
    guardrail: Guardrail | None = None


class Backoff(ConfigModel):
    base: Duration = 0.1
    max: Duration = 2.0


class Retry(ConfigModel):
    """Envoy's retry policy for a model: attempts across its backends."""

    attempts: int | None = Field(default=None, ge=1, le=10, description="total tries")
    on: list[str] = Field(default_factory=lambda: ["connect-failure", "reset", "5xx", "429"])
    per_try_timeout: Duration | None = None
    backoff: Backoff = Backoff()

    @field_validator("on")
    @classmethod
    def _check_on(cls, values: list[str]) -> list[str]:
        allowed = {
            "connect-failure",
            "reset",
            "5xx",
            "gateway-error",
            "refused-stream",
            "retriable-4xx",
            "reset-before-request",
            "http3-post-connect-failure",
        }
        for v in values:
            if v not in allowed and not (v.isdigit() and 400 <= int(v) <= 599):
                raise ValueError(
                    f"unknown retry condition {v!r} (use {sorted(allowed)} or a status)"
                )
        return values


class Outlier(ConfigModel):
    consecutive_failures: int = Field(default=5, ge=1)
    eject_for: Duration = 30.0
    interval: Duration = 5.0
    max_ejection_percent: int = Field(default=100, ge=0, le=100)


class ModelRoute(ConfigModel):
    name: str = Field(min_length=1)
    owned_by: str = "system"
    created: int = DEFAULT_MODEL_CREATED
    backends: list[ModelBackend] = Field(min_length=1)
    timeout: Duration | None = None
    pricing: Pricing | None = None
    retry: Retry = Retry()
    outlier: Outlier = Outlier()
    # Catch-all route only: how often each worker reads the OpenAI-compatible backends' own
    # GET /v1/models for the gateway's list (extproc.catalog); 0 reads once, at start.
    refresh_models: Duration = 300.0

    @model_validator(mode="after")
    def _unique_backends(self) -> ModelRoute:
        names = [b.backend for b in self.backends]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"backend listed twice: {', '.join(sorted(dup))}")
        return self

    def single_backend(self) -> str | None:
        """The backend of a model that has only one: Envoy never has to choose, so the router
        stage can translate, sign and account the request itself, without an upstream stage."""
        return self.backends[0].backend if len(self.backends) == 1 else None

    def backend_entry(self, backend: str) -> ModelBackend | None:
        for entry in self.backends:
            if entry.backend == backend:
                return entry
        return None


class TelemetryConfig(ConfigModel):
    # Request header -> metric/span attribute, e.g. {x-tenant-id: tenant}. Every distinct value
    # is a new time series: only name headers with a bounded set of values.
    header_attributes: dict[str, str] = Field(default_factory=dict)
    # Header -> the only values its attribute takes; any other value is "other".
    header_values: dict[str, list[str]] = Field(default_factory=dict)
    # Label bounds (see extproc/labels.py): a client controls these strings, and every distinct
    # value is a time series kept until the gateway stops.
    # Header values and model names not in the config are cut there.
    max_value_length: int = Field(default=100, ge=1, le=1024)
    max_header_values: int = Field(default=100, ge=1, le=10_000)  # per attribute, then "other"
    max_models: int = Field(default=100, ge=0, le=10_000)  # names not in the config, then "other"
    # Distinct label sets with a client-controlled value: the bound on the product of the above.
    max_label_sets: int = Field(default=500, ge=1, le=100_000)

    @field_validator("header_attributes")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for attr in value.values():
            if not re.fullmatch(r"[a-z_][a-z0-9_.]*", attr):
                raise ValueError(
                    f"attribute name {attr!r}: use lower-case letters, digits, _ and ."
                )
        return {k.lower(): v for k, v in value.items()}

    @field_validator("header_values")
    @classmethod
    def _lower(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {k.lower(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _known_headers(self) -> TelemetryConfig:
        unknown = sorted(set(self.header_values) - set(self.header_attributes))
        if unknown:
            raise ValueError(f"header_values for headers not in header_attributes: {unknown}")
        return self


class Accounting(ConfigModel):
    # Who reads the answers of OpenAI-compatible and Azure backends that the gateway passes on
    # unchanged. "sidecar": the sidecar, which can also replace a provider's broken answer with
    # an error. "envoy": Envoy's own filters read the usage and the sidecar gets each record
    # through Envoy's access-log service: half the messages per request, no response held.
    # What "envoy" gives up is listed in the README (Accounting modes).
    mode: Literal["sidecar", "envoy"] = "sidecar"
    # How long Envoy may hold access-log records before sending them to the sidecar.
    flush_interval: Duration = Field(default=0.2, gt=0, le=10)

    @property
    def by_envoy(self) -> bool:
        return self.mode == "envoy"


class ResponsesSettings(ConfigModel):
    # The model whose backend a stored-response request (GET /v1/responses/{id}...) goes to
    # when it names none in x-ai-eg-model (or, for input_tokens, in its body).
    default_model: str | None = None


class GatewayConfig(ConfigModel):
    listen: Address = Address(port=1975)
    admin: Admin = Admin()
    sidecar: Sidecar = Sidecar()
    http: HTTPLimits = HTTPLimits()
    timeouts: Timeouts = Timeouts()
    telemetry: TelemetryConfig = TelemetryConfig()
    accounting: Accounting = Accounting()
    responses: ResponsesSettings = ResponsesSettings()
    backends: dict[str, Backend] = Field(default_factory=dict)
    models: list[ModelRoute] = Field(default_factory=list)
    clients: list[ClientKey] = Field(default_factory=list)  # empty: no gateway keys
    limits: list[LimitRule] = Field(default_factory=list)
    ratelimit_store: StoreSpec = "memory"
    ratelimit_fail_open: bool = False

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        errors: list[str] = []
        seen: set[str] = set()
        for i, model in enumerate(self.models):
            if model.name in seen:
                errors.append(f"models[{i}].name: duplicate model {model.name!r}")
            seen.add(model.name)
            for j, entry in enumerate(model.backends):
                if entry.backend not in self.backends:
                    known = ", ".join(sorted(self.backends)) or "none defined"
                    errors.append(
                        f"models[{i}].backends[{j}].backend: unknown backend {entry.backend!r}"
                        f" (known: {known})"
                    )
                else:
                    backend = self.backends[entry.backend]
                    errors += [
                        f"models[{i}].backends[{j}].{problem}"
                        for problem in _bedrock_errors(model.name, entry, backend)
                    ]
        default = self.responses.default_model
        if default is not None and default not in seen and WILDCARD_MODEL not in seen:
            errors.append(f"responses.default_model: unknown model {default!r}")
        errors += client_errors(self.clients)
        errors += rule_errors(self.limits, {c.name for c in self.clients})
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def worker_count(self) -> int:
        """Sidecar workers; one when rate limits count in process memory, or they would count
        separately in each worker and admit up to N times the limit."""
        if self.limits and self.ratelimit_store == "memory":
            return 1
        return self.sidecar.worker_count()

    def model(self, name: str) -> ModelRoute | None:
        """The route named ``name``; a scan, for start-up. Per request, use a
        :class:`ModelIndex` (kept by its user: a config changed with ``model_copy`` is a new
        object, and an index cached inside the old one would be copied with it, stale)."""
        return next((m for m in self.models if m.name == name), None)


def _bedrock_errors(route: str, entry: ModelBackend, backend: Backend) -> list[str]:
    """What is wrong with the Bedrock settings of one backend entry of route ``route``."""
    if not isinstance(backend, AWSBedrockBackend):
        return [
            f"{key}: only for aws_bedrock backends"
            for key in ("cache_points", "family", "guardrail")
            if getattr(entry, key)
        ]
    model_id = entry.model or route
    if model_id == WILDCARD_MODEL:
        return []  # the client's model name: checked per request
    named = named_family(model_id)
    if entry.family is None and named is None:
        return [f"model: {unknown_family(model_id)}"]
    if entry.family is not None and named not in (None, entry.family):
        return [f"family: {entry.family!r}, but Bedrock model {model_id!r} is a {named} model"]
    return []


class ModelIndex:
    """The model routes by name, for the stages that look one up per request."""

    def __init__(self, models: Sequence[ModelRoute]) -> None:
        self._by_name = {m.name: m for m in models}
        self._wildcard = self._by_name.get(WILDCARD_MODEL)

    def route(self, name: str) -> ModelRoute | None:
        """The route named ``name``, else the catch-all route, if any."""
        return self._by_name.get(name) or self._wildcard


# --- loading ---------------------------------------------------------------------------------

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Discriminated-union tags pydantic puts in an error's location: the schemas and their models.
_UNION_TAGS = frozenset(SCHEMAS) | {cls.__name__ for cls in BACKEND_TYPES}


def substitute(
    value: Any, env: Mapping[str, str], path: str, errors: list[str], secrets: bool, secret: bool
) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            is_secret = k in SECRET_FIELDS
            if is_secret and isinstance(v, str) and not ENV_REF.fullmatch(v.strip()):
                errors.append(
                    f"{sub}: secrets must come from the environment (${{VAR}}) or a *_file key,"
                    " not a literal"
                )
                continue
            out[k] = substitute(v, env, sub, errors, secrets, is_secret)
        return out
    if isinstance(value, list):
        return [
            substitute(v, env, f"{path}[{i}]", errors, secrets, secret) for i, v in enumerate(value)
        ]
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            if secret and not secrets:
                return f"<unset {name}>"
            errors.append(f"{path}: environment variable {name} is not set")
            return ""

        return ENV_REF.sub(repl, value)
    return value


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out.replace("schema_", "schema")


def parse_config(
    data: Any, env: Mapping[str, str] | None = None, secrets: bool = True
) -> GatewayConfig:
    """Validate a parsed YAML document; errors name the key path of each problem.

    With ``secrets=False`` (rendering Envoy's config, which never contains one) an unset
    environment variable behind a secret is not an error.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a mapping")
    errors: list[str] = []
    data = substitute(data, os.environ if env is None else env, "", errors, secrets, False)
    if errors:
        raise ConfigError("\n".join(errors))
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = _loc(err["loc"]) or "config"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, secrets: bool = True
) -> GatewayConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    return parse_config(data, env, secrets)


def default_config(env: Mapping[str, str] | None = None) -> GatewayConfig:
    """The embedded config of ``ai-gateway run`` without ``-c``, built from the environment.

    Every provider found in the environment becomes a backend of one catch-all route (model
    ``"*"``: the client's model name is sent upstream), in fallback order: OpenAI (or any
    OpenAI-compatible server at ``OPENAI_BASE_URL``), then Azure OpenAI, then AWS Bedrock
    (the client's model name is then a Bedrock model id), then Anthropic.
    """
    backends = env_backends(os.environ if env is None else env)
    entries = [{"backend": name, "priority": i} for i, name in enumerate(backends)]
    models = [{"name": WILDCARD_MODEL, "backends": entries}] if backends else []
    return parse_config({"backends": backends, "models": models}, env)


# A route named "*" serves any model name not listed elsewhere, sending the client's own model
# name upstream. It exists for the zero-config `ai-gateway run`.
WILDCARD_MODEL = "*"
