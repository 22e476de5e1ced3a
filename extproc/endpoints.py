"""The APIs the gateway serves, each described once: standard library and :mod:`extproc.wire`
only, since the renderer reads it as well as the sidecar.

An entry says what every stage needs to know of an API without a branch per endpoint: its
paths, its operation name (``gen_ai.operation.name``, and the key under which each backend
schema registers a translator in :mod:`extproc.backends`), how its body is read and where the
model is, where Envoy's readers find the usage of its answers, and the error shape its clients
expect. Adding an endpoint is one entry here plus its translators (docs/architecture.md, "Add
an endpoint").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from extproc import wire

Operation = Literal["chat", "embeddings", "messages"]
# "json": a JSON object whose "model" names the model; an x-ai-eg-model header, if the client
# sent one, wins over it (router.Router._route).
BodyFormat = Literal["json"]
# "openai": {"error": {"message", "type", "param", "code"}} (extproc/errors.py).
ErrorShape = Literal["openai"]


@dataclass(frozen=True, slots=True)
class API:
    operation: Operation
    paths: tuple[str, ...]  # served with POST
    body: BodyFormat
    errors: ErrorShape
    # Where Envoy's readers find the usage of an answer (wire.Key -> JSON path), so that with
    # accounting.mode envoy an answer passed on unchanged can be left to them; None: never (its
    # answers are read by the sidecar, and Envoy's readers are off on its paths).
    envoy_usage: Mapping[wire.Key, str] | None
    output_tokens: bool  # its answers have output tokens (telemetry's token counts)


CHAT = API(
    operation="chat",
    paths=(wire.CHAT_PATH,),
    body="json",
    errors="openai",
    envoy_usage=wire.USAGE_FIELDS,
    output_tokens=True,
)
EMBEDDINGS = API(
    operation="embeddings",
    paths=(wire.EMBEDDINGS_PATH,),
    body="json",
    errors="openai",
    # Envoy's JSON parser reads a large embeddings answer ten times slower than the sidecar.
    envoy_usage=None,
    output_tokens=False,
)

# Anthropic's Messages API, for Anthropic clients (its backends: extproc/backends.py). The
# gateway's own errors on it are still OpenAI's shape (README, "Anthropic").
MESSAGES = API(
    operation="messages",
    paths=(wire.MESSAGES_PATH,),
    body="json",
    errors="openai",
    # Anthropic's usage is not where Envoy's readers look (wire.USAGE_FIELDS).
    envoy_usage=None,
    output_tokens=True,
)

APIS: tuple[API, ...] = (CHAT, EMBEDDINGS, MESSAGES)
BY_PATH: dict[str, API] = {path: api for api in APIS for path in api.paths}
BY_OPERATION: dict[str, API] = {api.operation: api for api in APIS}
