"""What each backend schema and each served API declare once, and what is derived from it."""

from __future__ import annotations

from extproc.backendconfig import BACKEND_TYPES, CREDENTIAL_VARIABLES, SCHEMAS, SECRET_FIELDS
from extproc.cli import envoy_environment
from extproc.config import ModelIndex, parse_config

AZURE_ENTRA = {
    "schema": "azure_openai",
    "url": "https://r.openai.azure.com",
    "entra": {"tenant_id": "t", "client_id": "c", "client_secret": "${ENTRA_SECRET}"},
}
BACKENDS = {
    "openai": {"schema": "openai", "api_key": "${KEY_A}"},
    "azure": {"schema": "azure_openai", "url": "https://a.openai.azure.com", "api_key": "${KEY_B}"},
    "entra": AZURE_ENTRA,
    "bedrock": {
        "schema": "aws_bedrock",
        "region": "us-east-1",
        "access_key_id": "${AWS_ID}",
        "secret_access_key": "${AWS_SECRET}",
        "session_token": "${AWS_TOKEN}",
    },
}
ENV = {
    "KEY_A": "sk-a",
    "KEY_B": "az-b",
    "ENTRA_SECRET": "entra-c",
    "AWS_ID": "AKIDEXAMPLE",
    "AWS_SECRET": "aws-secret",
    "AWS_TOKEN": "aws-token",
}


def test_every_schema_declares_its_provider_and_credential_variables() -> None:
    assert set(SCHEMAS) == {"openai", "azure_openai", "aws_bedrock"}
    for cls in BACKEND_TYPES:
        assert cls.provider and isinstance(cls.credential_variables, frozenset), cls
    assert {cls.provider for cls in BACKEND_TYPES} == {"openai", "azure.openai", "aws.bedrock"}


def test_the_secret_keys_and_credential_variables_are_derived_from_the_models() -> None:
    # The sets the loader and the CLI spelled out before the registry, now derived.
    assert {"api_key", "client_secret", "access_key_id", "secret_access_key", "session_token"} == (
        SECRET_FIELDS
    )
    assert {
        "OPENAI_API_KEY",
        "AZURE_OPENAI_API_KEY",
        "AZURE_CLIENT_SECRET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    } == CREDENTIAL_VARIABLES


def test_envoy_gets_no_secret_of_any_schema() -> None:
    config = parse_config({"backends": BACKENDS}, ENV)
    env = {**ENV, "OPENAI_API_KEY": "sk-std", "AWS_SESSION_TOKEN": "t", "HOME": "/home/x"}
    assert envoy_environment(config, env) == {"HOME": "/home/x"}


def test_a_model_lookup_after_model_copy_sees_the_copy() -> None:
    backends = {"b": {"schema": "openai"}}
    config = parse_config(
        {"backends": backends, "models": [{"name": "a", "backends": [{"backend": "b"}]}]}
    )
    assert config.model("a") is not None and ModelIndex(config.models).route("a") is not None
    other = parse_config(
        {"backends": backends, "models": [{"name": "z", "backends": [{"backend": "b"}]}]}
    )
    copy = config.model_copy(update={"models": other.models})
    assert copy.model("a") is None and copy.model("z") is other.models[0]
    index = ModelIndex(copy.models)
    assert index.route("a") is None and index.route("z") is other.models[0]
