"""Bedrock inputs through real Envoy + sidecar with the official SDK: a model given as an ARN
with its family declared, service tiers, PDF documents, a guardrail."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fakes.bedrock import FakeBedrock
from tests.fakes.bedrock_checks import BLOCKED, BLOCKED_MESSAGE
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
def gateway(bedrock: FakeBedrock) -> Iterator[Gateway]:
    one = {"retry": {"attempts": 1}}
    config = {
        "backends": {"bedrock": {**bedrock.backend(), "access_key_id": "${AWS_KEY}",
                                 "secret_access_key": "${AWS_SECRET}"}},
        "models": [
            {"name": "claude", "backends": [{"backend": "bedrock", "model": CLAUDE}], **one},
            {"name": "guarded", "backends": [{"backend": "bedrock", "model": CLAUDE, "guardrail": GUARDRAIL}], **one},
            {"name": "titan-pt", "backends": [{"backend": "bedrock", "model": TITAN_ARN, "family": "titan"}], **one},
        ],
    }  # fmt: skip
    env = {"AWS_KEY": bedrock.access_key, "AWS_SECRET": bedrock.secret_key}
    with Gateway(config, env=env) as gw:
        yield gw


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
