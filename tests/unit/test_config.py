from __future__ import annotations

from pathlib import Path

import pytest

from extproc.bedrockmodels import named_family
from extproc.config import (
    WILDCARD_MODEL,
    ConfigError,
    OpenAIBackend,
    default_config,
    load_config,
    parse_config,
)

EXAMPLE = {
    "backends": {
        "openai": {"schema": "openai", "api_key": "${OPENAI_API_KEY}"},
        "groq": {
            "schema": "openai",
            "url": "https://api.groq.com/openai/v1",
            "api_key": "${GROQ_API_KEY}",
        },
        "local": {"schema": "openai", "url": "http://127.0.0.1:8000/v1"},
    },
    "models": [
        {
            "name": "gpt-4o-mini",
            "owned_by": "openai",
            "backends": [
                {"backend": "openai"},
                {"backend": "groq", "model": "llama-3.1-8b-instant", "priority": 1},
            ],
        }
    ],
}
ENV = {"OPENAI_API_KEY": "sk-test", "GROQ_API_KEY": "gsk-test"}


def test_example_config_parses_with_env_substitution() -> None:
    config = parse_config(EXAMPLE, ENV)
    groq = config.backends["groq"]
    assert isinstance(groq, OpenAIBackend)
    assert groq.api_key is not None and groq.api_key.get_secret_value() == "gsk-test"
    assert groq.endpoint() == ("https", "api.groq.com", 443, "/openai/v1")
    assert config.backends["local"].endpoint() == ("http", "127.0.0.1", 8000, "/v1")
    model = config.model("gpt-4o-mini")
    assert model is not None and model.backends[1].model == "llama-3.1-8b-instant"


def test_secrets_never_appear_in_repr() -> None:
    config = parse_config(EXAMPLE, ENV)
    assert "sk-test" not in repr(config) and "gsk-test" not in str(config.model_dump())


def test_unknown_backend_error_names_the_key_path() -> None:
    bad = {
        **EXAMPLE,
        "models": [*EXAMPLE["models"], {"name": "x", "backends": [{"backend": "opnai"}]}],
    }
    with pytest.raises(
        ConfigError, match=r"models\[1\]\.backends\[0\]\.backend: unknown backend 'opnai'"
    ):
        parse_config(bad, ENV)


def test_cache_points_are_for_bedrock_backends_only() -> None:
    bedrock = {"schema": "aws_bedrock", "region": "us-east-1"}
    entry = {
        "backend": "bedrock",
        "model": "anthropic.claude-v2",
        "cache_points": ["system", "tools"],
    }
    ok = {"backends": {"bedrock": bedrock}, "models": [{"name": "c", "backends": [entry]}]}
    route = parse_config(ok, {}).models[0]
    assert route.backends[0].cache_points == ["system", "tools"]
    assert parse_config(EXAMPLE, ENV).models[0].backends[0].cache_points == []
    bad = {
        **EXAMPLE,
        "models": [{"name": "x", "backends": [{"backend": "openai", "cache_points": ["system"]}]}],
    }
    with pytest.raises(
        ConfigError, match=r"models\[0\]\.backends\[0\]\.cache_points: only for aws_bedrock"
    ):
        parse_config(bad, ENV)
    with pytest.raises(ConfigError, match="cache_points"):
        parse_config(
            {**ok, "models": [{"name": "c", "backends": [{**entry, "cache_points": ["user"]}]}]}, {}
        )


def test_missing_env_var_is_named() -> None:
    with pytest.raises(
        ConfigError, match=r"backends\.groq\.api_key: environment variable GROQ_API_KEY"
    ):
        parse_config(EXAMPLE, {"OPENAI_API_KEY": "x"})


def test_literal_secret_is_refused() -> None:
    data = {"backends": {"o": {"schema": "openai", "api_key": "sk-literal"}}}
    with pytest.raises(ConfigError, match=r"backends\.o\.api_key: secrets must come from"):
        parse_config(data, {})


def test_api_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-from-file\n")
    config = parse_config({"backends": {"o": {"schema": "openai", "api_key_file": str(key)}}}, {})
    backend = config.backends["o"]
    assert isinstance(backend, OpenAIBackend) and backend.api_key is not None
    assert backend.api_key.get_secret_value() == "sk-from-file"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"backends": {"o": {"schema": "nope"}}}, r"backends\.o"),
        ({"backends": {"o": {"schema": "openai", "url": "ftp://x"}}}, r"backends\.o\.url"),
        ({"listen": {"port": 99999}}, r"listen\.port"),
        ({"models": [{"name": "m", "backends": []}]}, r"models\[0\]\.backends"),
        ({"timeouts": {"request": "ten"}}, r"timeouts\.request: .*invalid duration"),
        ({"bogus": 1}, r"bogus"),
    ],
)
def test_invalid_configs(data: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(data, {})


def test_durations() -> None:
    config = parse_config({"timeouts": {"request": "2m", "idle": "1500ms", "connect": 3}}, {})
    assert (config.timeouts.request, config.timeouts.idle, config.timeouts.connect) == (120, 1.5, 3)


def test_default_config_from_environment() -> None:
    assert default_config({}).models == []
    config = default_config({"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://h:1/v1"})
    (model,) = config.models
    assert model.name == WILDCARD_MODEL
    assert config.backends["openai"].url == "http://h:1/v1"


def test_default_config_fallback_order() -> None:
    env = {
        "OPENAI_API_KEY": "sk-x",
        "AZURE_OPENAI_API_KEY": "az",
        "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_REGION": "eu-west-1",
    }
    (model,) = default_config(env).models
    assert [(b.backend, b.priority) for b in model.backends] == [
        ("openai", 0),
        ("azure", 1),
        ("bedrock", 2),
    ]
    assert default_config({"AWS_REGION": "eu-west-1"}).models == []


def test_load_config_reports_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("backends: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path, {})


# --- Bedrock model families and guardrails --------------------------------------------------------

ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"


def _bedrock(**entry: object) -> dict[str, object]:
    return {
        "backends": {
            "bedrock": {"schema": "aws_bedrock", "region": "us-east-1"},
            "openai": {"schema": "openai", "url": "http://127.0.0.1:1/v1"},
        },
        "models": [{"name": "m", "backends": [{"backend": "bedrock", **entry}]}],
    }


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "claude"),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude"),
        ("amazon.titan-embed-text-v2:0", "titan"),
        ("eu.amazon.nova-micro-v1:0", "nova"),
        ("meta.llama3-1-8b-instruct-v1:0", "llama"),
        ("mistral.mistral-large-2407-v1:0", "mistral"),
        ("cohere.embed-v4:0", "cohere"),
        ("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v1", "titan"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-1b-v1:0",
            "llama",
        ),
    ],
)
def test_bedrock_model_ids_name_their_family(model_id: str, family: str) -> None:
    assert named_family(model_id) == family
    parse_config(_bedrock(model=model_id), {})


def test_a_bedrock_id_naming_no_family_is_a_load_error_naming_the_model() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(_bedrock(model=ARN), {})
    assert "models[0].backends[0].model" in str(raised.value)
    assert ARN in str(raised.value) and "family" in str(raised.value)
    with pytest.raises(ConfigError, match="names no known model family"):
        parse_config(
            {**_bedrock(), "models": [{"name": "my-model", "backends": [{"backend": "bedrock"}]}]},
            {},
        )
    config = parse_config(_bedrock(model=ARN, family="titan"), {})
    assert config.models[0].backends[0].family == "titan"


def test_family_errors() -> None:
    with pytest.raises(ConfigError, match="is a claude model"):
        parse_config(_bedrock(model="anthropic.claude-v2", family="titan"), {})
    with pytest.raises(ConfigError, match="family"):
        parse_config(_bedrock(model=ARN, family="gpt"), {})
    data = _bedrock()
    data["models"] = [{"name": "m", "backends": [{"backend": "openai", "family": "claude"}]}]
    with pytest.raises(ConfigError, match="family: only for aws_bedrock backends"):
        parse_config(data, {})
    # The catch-all route sends the client's model name: checked per request.
    parse_config(
        {**_bedrock(), "models": [{"name": WILDCARD_MODEL, "backends": [{"backend": "bedrock"}]}]},
        {},
    )


def test_guardrail_settings() -> None:
    guardrail = {"id": "gr1abc", "version": "DRAFT"}
    entry = parse_config(_bedrock(model="amazon.nova-micro-v1:0", guardrail=guardrail), {})
    read = entry.models[0].backends[0].guardrail
    assert read is not None and (read.trace, read.stream_processing_mode) == ("disabled", "sync")
    for bad in ({"id": "Bad Id", "version": "1"}, {"id": "g", "version": "01"},
                {"id": "g", "version": "1", "trace": "on"}):  # fmt: skip
        with pytest.raises(ConfigError, match="guardrail"):
            parse_config(_bedrock(model="amazon.nova-micro-v1:0", guardrail=bad), {})
    data = _bedrock()
    data["models"] = [{"name": "m", "backends": [{"backend": "openai", "guardrail": guardrail}]}]
    with pytest.raises(ConfigError, match="guardrail: only for aws_bedrock backends"):
        parse_config(data, {})
