"""Bedrock inputs through real Envoy + sidecar with the official SDK: a model given as an ARN
with its family declared, service tiers, PDF documents, a guardrail, image URLs fetched from a
local HTTPS host (loopback listed explicitly) and refused ones."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import trustme
from openai import OpenAI

from tests.fakes.bedrock import FakeBedrock
from tests.fakes.bedrock_checks import BLOCKED, BLOCKED_MESSAGE
from tests.fakes.images import PNG, ImageHost
from tests.fakes.openai import vector
from tests.harness import Gateway

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TITAN_ARN = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123def456"
PDF = base64.b64encode(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n").decode()
GUARDRAIL = {"id": "gr1abc", "version": "1", "trace": "enabled"}


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        fake.deployments[TITAN_ARN] = "amazon.titan-embed-text-v2:0"
        yield fake


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def images(ca: trustme.CA) -> Iterator[ImageHost]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    with ImageHost(ssl_context=context) as host:
        yield host


@pytest.fixture(scope="module")
def gateway(
    bedrock: FakeBedrock,
    images: ImageHost,
    ca: trustme.CA,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    backend = {
        **bedrock.backend(),
        "access_key_id": "${AWS_KEY}",
        "secret_access_key": "${AWS_SECRET}",
    }
    fetch = {"allow": ["localhost"], "max_bytes": 10_000, "timeout": "5s", "ca_file": str(ca_file)}
    one = {"retry": {"attempts": 1}}
    config = {
        "backends": {
            "bedrock": backend,
            # Loopback only because it is listed; the strict one has the same host rule without it.
            "fetching": {**backend, "fetch_image_urls": {**fetch, "allow_networks": ["127.0.0.0/8", "::1/128"]}},
            "strict": {**backend, "fetch_image_urls": fetch},
            "hasty": {**backend, "fetch_image_urls": {**fetch, "timeout": "300ms", "allow_networks": ["127.0.0.0/8", "::1/128"]}},
        },
        "models": [
            {"name": "fetching", "backends": [{"backend": "fetching", "model": CLAUDE}], **one},
            {"name": "strict", "backends": [{"backend": "strict", "model": CLAUDE}], **one},
            {"name": "hasty", "backends": [{"backend": "hasty", "model": CLAUDE}], **one},
            {"name": "claude", "backends": [{"backend": "bedrock", "model": CLAUDE}], **one},
            {"name": "guarded", "backends": [{"backend": "bedrock", "model": CLAUDE, "guardrail": GUARDRAIL}],
             "pricing": GUARDED_PRICES, **one},
            {"name": "titan-pt", "backends": [{"backend": "bedrock", "model": TITAN_ARN, "family": "titan"}], **one},
        ],
    }  # fmt: skip
    env = {"AWS_KEY": bedrock.access_key, "AWS_SECRET": bedrock.secret_key}
    with Gateway(config, env=env) as gw:
        yield gw


GUARDED_PRICES = {"input": 3.0, "output": 15.0, "guardrail": 0.15}


@pytest.fixture
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="client", max_retries=0)


def test_embeddings_on_a_provisioned_throughput_arn(client: OpenAI, bedrock: FakeBedrock) -> None:
    one = client.embeddings.create(model="titan-pt", input="hello", encoding_format="float")
    assert one.data[0].embedding == pytest.approx(vector("hello", 1024))
    assert bedrock.requests[-1].raw_path == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fabc123def456"
        "/invoke"
    )
    batch = client.embeddings.create(model="titan-pt", input=["a", "b"], dimensions=256)
    assert [len(d.embedding) for d in batch.data] == [256, 256]


def test_a_pdf_reaches_converse_as_a_document(client: OpenAI, bedrock: FakeBedrock) -> None:
    reply = client.chat.completions.create(
        model="claude",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "summarise"},
                    {
                        "type": "file",
                        "file": {
                            "file_data": f"data:application/pdf;base64,{PDF}",
                            "filename": "Q3_report.pdf",
                        },
                    },
                ],
            }
        ],
    )
    assert reply.choices[0].message.content == "You said: summarise"
    document = bedrock.requests[-1].json()["messages"][0]["content"][1]["document"]
    assert document == {"format": "pdf", "name": "Q3 report", "source": {"bytes": PDF}}


def test_a_mislabelled_or_uploaded_file_is_a_400_naming_it(client: OpenAI) -> None:
    file: Any
    for file, param in (
        ({"file_data": f"data:application/pdf;base64,{base64.b64encode(b'hi').decode()}"}, "file_data"),
        ({"file_id": "file-abc123"}, "file_id"),
    ):  # fmt: skip
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(
                model="claude",
                messages=[{"role": "user", "content": [{"type": "file", "file": file}]}],
            )
        assert raised.value.body["param"] == f"messages[0].content[0].file.{param}"


def test_service_tier_is_sent_and_echoed(client: OpenAI, bedrock: FakeBedrock) -> None:
    reply = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], service_tier="flex"
    )
    assert bedrock.requests[-1].json()["serviceTier"] == {"type": "flex"}
    assert reply.service_tier == "flex"
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "hi"}],
            service_tier="priority",
            stream=True,
        )
    )
    assert {chunk.service_tier for chunk in chunks} == {"priority"}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "hi"}],
            service_tier="standard",
        )
    assert raised.value.body["param"] == "service_tier"


def test_a_guardrail_intervention_is_a_content_filter(client: OpenAI, bedrock: FakeBedrock) -> None:
    passed = client.chat.completions.create(
        model="guarded", messages=[{"role": "user", "content": "hi"}]
    )
    assert passed.choices[0].finish_reason == "stop"
    assert bedrock.requests[-1].json()["guardrailConfig"] == {
        "guardrailIdentifier": "gr1abc", "guardrailVersion": "1", "trace": "enabled"}  # fmt: skip
    blocked = client.chat.completions.create(
        model="guarded", messages=[{"role": "user", "content": f"tell me {BLOCKED}"}]
    )
    assert blocked.choices[0].finish_reason == "content_filter"
    assert blocked.choices[0].message.content == BLOCKED_MESSAGE
    chunks = list(
        client.chat.completions.create(
            model="guarded",
            messages=[{"role": "user", "content": f"tell me {BLOCKED}"}],
            stream=True,
        )
    )
    assert bedrock.requests[-1].json()["guardrailConfig"]["streamProcessingMode"] == "sync"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == BLOCKED_MESSAGE
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"


def _look(client: OpenAI, model: str, url: str) -> str | None:
    reply = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    return reply.choices[0].message.content


def test_an_allowed_image_url_is_fetched_and_sent_as_bytes(
    client: OpenAI, bedrock: FakeBedrock, images: ImageHost
) -> None:
    url = f"https://localhost:{images.port}/cat.png"
    assert _look(client, "fetching", url) == "You said: what is this"
    image = bedrock.requests[-1].json()["messages"][0]["content"][1]["image"]
    assert image == {"format": "png", "source": {"bytes": base64.b64encode(PNG).decode()}}
    assert images.requests[-1].path == "/cat.png"


@pytest.mark.parametrize(
    ("model", "host", "path", "says"),
    [
        ("fetching", "evil.example", "/cat.png", "'evil.example' is not in this backend's fetch_image_urls.allow"),
        ("strict", "localhost", "/cat.png", "non-public address not in this backend's fetch_image_urls.allow_networks"),
        ("claude", "localhost", "/cat.png", "fetch_image_urls is off"),
    ],
)  # fmt: skip
def test_a_refused_image_url_is_a_400_naming_the_rule_and_never_fetched(
    client: OpenAI, images: ImageHost, model: str, host: str, path: str, says: str
) -> None:
    seen = len(images.requests)
    with pytest.raises(openai.BadRequestError) as raised:
        _look(client, model, f"https://{host}:{images.port}{path}")
    assert says in raised.value.message
    assert raised.value.body["param"] == "messages[0].content[1].image_url.url"
    assert len(images.requests) == seen


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/big.png", "larger than fetch_image_urls.max_bytes (10000)"),
        ("/text.png", "not PNG, JPEG, GIF or WebP"),
        ("/moved.png", "answered 302 (redirects are not followed)"),
    ],
)
def test_an_unusable_image_is_a_400(
    client: OpenAI, images: ImageHost, path: str, says: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        _look(client, "fetching", f"https://localhost:{images.port}{path}")
    assert says in raised.value.message


def test_several_images_are_fetched_and_a_slow_one_times_out(
    client: OpenAI, bedrock: FakeBedrock, images: ImageHost
) -> None:
    url = f"https://localhost:{images.port}/cat.png"
    client.chat.completions.create(
        model="fetching",
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "and"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}],
    )  # fmt: skip
    blocks = bedrock.requests[-1].json()["messages"][0]["content"]
    assert [next(iter(block)) for block in blocks] == ["image", "text", "image"]
    with pytest.raises(openai.BadRequestError) as raised:
        _look(client, "hasty", f"https://localhost:{images.port}/slow.png")
    assert "not downloaded within fetch_image_urls.timeout (0.3s)" in raised.value.message


def test_guardrail_units_are_recorded_and_priced(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="guarded", messages=[{"role": "user", "content": "hi"}]
    )
    usage = raw.parse().usage
    assert usage is not None
    # The fake's trace: the prompt and the answer, one text unit each, for the topic and the
    # content policies (billed) and the word filter (reported, not billed).
    units = 4
    expected = (
        usage.prompt_tokens * GUARDED_PRICES["input"]
        + usage.completion_tokens * GUARDED_PRICES["output"]
    ) / 1e6 + units * GUARDED_PRICES["guardrail"] / 1000
    assert float(raw.headers["x-ai-eg-cost-usd"]) == pytest.approx(expected, abs=1e-6)
