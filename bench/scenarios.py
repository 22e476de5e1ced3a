"""The bench's scenarios: what each sends to which path, and what the upstream answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.api_payloads import (
    completions_request,
    completions_response,
    images_request,
    images_response,
    responses_request,
    responses_response,
    responses_stream_response,
)
from bench.payloads import (
    BEDROCK_MODEL,
    BEDROCK_PREFIX,
    CHAT_MODEL,
    CHAT_PATH,
    CHAT_PREFIX,
    COMPLETIONS_MODEL,
    COMPLETIONS_PATH,
    COMPLETIONS_PREFIX,
    EMBED_INPUTS,
    EMBED_MODEL,
    EMBED_PREFIX,
    EMBEDDINGS_PATH,
    HOLD_MODEL,
    HOLD_PREFIX,
    IMAGES_MODEL,
    IMAGES_PATH,
    IMAGES_PREFIX,
    PACED_MODEL,
    PACED_PREFIX,
    RESPONSES_MODEL,
    RESPONSES_PATH,
    RESPONSES_PREFIX,
    RESPONSES_STREAM_MODEL,
    RESPONSES_STREAM_PREFIX,
    STREAM_CHUNKS,
    STREAM_MODEL,
    STREAM_PREFIX,
    bedrock_path,
    chat_request,
    chat_response,
    converse_request,
    converse_response,
    embeddings_request,
    embeddings_response,
    stream_response,
)

Kind = Literal[
    "chat", "stream", "embeddings", "responses", "responses-stream", "completions", "images"
]
_PATHS: dict[Kind, str] = {
    "chat": CHAT_PATH,
    "stream": CHAT_PATH,
    "embeddings": EMBEDDINGS_PATH,
    "responses": RESPONSES_PATH,
    "responses-stream": RESPONSES_PATH,
    "completions": COMPLETIONS_PATH,
    "images": IMAGES_PATH,
}
Upstream = Literal["envoy", "paced", "hold"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One kind of request: what the client sends, and what it must get back."""

    key: str  # what --scenarios selects
    name: str  # what the report shows
    kind: Kind
    model: str
    upstream_prefix: str
    request: bytes  # the OpenAI request every system but bare Envoy (bedrock) gets
    response: bytes  # what the upstream answers
    content_type: str
    upstream: Upstream = "envoy"  # Envoy direct_response, or the Python paced upstream
    bedrock: bool = False  # the gateway translates it to Converse; peers do not run it
    bare_request: bytes | None = None  # bare Envoy's body when it is not ``request``

    @property
    def client_path(self) -> str:
        return "/v1" + _PATHS[self.kind]

    @property
    def upstream_path(self) -> str:
        if self.bedrock:
            return bedrock_path()
        return self.upstream_prefix + _PATHS[self.kind]

    @property
    def streaming(self) -> bool:
        return self.kind in ("stream", "responses-stream")

    @property
    def peers(self) -> bool:
        """LiteLLM and Portkey run it: the chat and embeddings pass-through scenarios (the
        Responses API is measured against bare Envoy and the floor only)."""
        return not self.bedrock and self.kind in ("chat", "stream", "embeddings")


SCENARIO_KEYS = (
    "chat",
    "stream",
    "embeddings",
    "bedrock",
    "paced",
    "responses",
    "rstream",
    "completions",
    "images",
)


def all_scenarios() -> list[Scenario]:
    """Every measured scenario, in report order."""
    stream = f"stream-{STREAM_CHUNKS}"
    return [
        Scenario(
            key="chat",
            name="chat",
            kind="chat",
            model=CHAT_MODEL,
            upstream_prefix=CHAT_PREFIX,
            request=chat_request(CHAT_MODEL, stream=False),
            response=chat_response(),
            content_type="application/json",
        ),
        Scenario(
            key="stream",
            name=stream,
            kind="stream",
            model=STREAM_MODEL,
            upstream_prefix=STREAM_PREFIX,
            request=chat_request(STREAM_MODEL, stream=True),
            response=stream_response(),
            content_type="text/event-stream",
        ),
        Scenario(
            key="embeddings",
            name=f"embeddings x{EMBED_INPUTS}",
            kind="embeddings",
            model=EMBED_MODEL,
            upstream_prefix=EMBED_PREFIX,
            request=embeddings_request(),
            response=embeddings_response(),
            content_type="application/json",
        ),
        Scenario(
            key="bedrock",
            name="chat -> bedrock",
            kind="chat",
            model=BEDROCK_MODEL,
            upstream_prefix=BEDROCK_PREFIX,
            request=chat_request(BEDROCK_MODEL, stream=False),
            response=converse_response(),
            content_type="application/json",
            bedrock=True,
            bare_request=converse_request(),
        ),
        Scenario(
            key="paced",
            name=f"{stream} paced",
            kind="stream",
            model=PACED_MODEL,
            upstream_prefix=PACED_PREFIX,
            request=chat_request(PACED_MODEL, stream=True),
            response=stream_response(),
            content_type="text/event-stream",
            upstream="paced",
        ),
        Scenario(
            key="responses",
            name="responses",
            kind="responses",
            model=RESPONSES_MODEL,
            upstream_prefix=RESPONSES_PREFIX,
            request=responses_request(RESPONSES_MODEL, stream=False),
            response=responses_response(),
            content_type="application/json",
        ),
        Scenario(
            key="rstream",
            name=f"responses stream-{STREAM_CHUNKS}",
            kind="responses-stream",
            model=RESPONSES_STREAM_MODEL,
            upstream_prefix=RESPONSES_STREAM_PREFIX,
            request=responses_request(RESPONSES_STREAM_MODEL, stream=True),
            response=responses_stream_response(),
            content_type="text/event-stream",
        ),
        Scenario(
            key="completions",
            name="completions",
            kind="completions",
            model=COMPLETIONS_MODEL,
            upstream_prefix=COMPLETIONS_PREFIX,
            request=completions_request(),
            response=completions_response(),
            content_type="application/json",
        ),
        Scenario(
            key="images",
            name="image generation",
            kind="images",
            model=IMAGES_MODEL,
            upstream_prefix=IMAGES_PREFIX,
            request=images_request(),
            response=images_response(),
            content_type="application/json",
        ),
    ]


def hold_scenario() -> Scenario:
    """The stream the 1,000-open-streams test holds open: a slow paced upstream."""
    return Scenario(
        key="hold",
        name="held streams",
        kind="stream",
        model=HOLD_MODEL,
        upstream_prefix=HOLD_PREFIX,
        request=chat_request(HOLD_MODEL, stream=True),
        response=stream_response(),
        content_type="text/event-stream",
        upstream="hold",
    )
