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

Operation = Literal[
    "chat",
    "embeddings",
    "responses",
    "stored_responses",
    "text_completion",
    "messages",
    "count_tokens",
    "speech",
    "image_generation",
    "image_edit",
    "transcription",
    "translation",
]
# "json": a JSON object whose "model" names the model; an x-ai-eg-model header, if the client
# sent one, wins over it (router.Router._route). "optional": no body, or one passed on unread
# but for its "model": the model from x-ai-eg-model, else the body's, else the config's
# responses.default_model. "multipart": a multipart/form-data form whose "model" field names the
# model (x-ai-eg-model wins over it), passed on unchanged (extproc/multipart.py).
BodyFormat = Literal["json", "optional", "multipart"]
# "openai": {"error": {"message", "type", "param", "code"}}; "anthropic": {"type": "error",
# "error": {"type", "message"}} (extproc/errors.py).
ErrorShape = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class API:
    operation: Operation
    paths: tuple[str, ...]  # served exactly
    body: BodyFormat
    errors: ErrorShape
    # Where Envoy's readers find the usage of an answer (wire.Key -> JSON path), so that with
    # accounting.mode envoy an answer passed on unchanged can be left to them; None: never (its
    # answers are read by the sidecar, and Envoy's readers are off on its paths).
    envoy_usage: Mapping[wire.Key, str] | None
    output_tokens: bool  # its answers have output tokens (telemetry's token counts)
    # A stream reports its usage only when asked (chat's stream_options.include_usage): the
    # gateway asks for it and hides it from a client that did not. False: a stream always
    # reports it (Responses' response.completed), nothing to ask.
    stream_usage_opt_in: bool = False
    # Served below these paths too: each path that matches ``below`` (wire.STORED_RESPONSE).
    prefixes: tuple[str, ...] = ()
    methods: tuple[str, ...] = ("POST",)
    # Its answers are charged from their usage. False: they relay what was charged before (a
    # stored response carries the usage it was billed for when it was made).
    metered: bool = True
    # The query parameters it defines, passed on; other paths' queries are dropped.
    query: frozenset[str] = frozenset()


CHAT = API(
    operation="chat",
    paths=(wire.CHAT_PATH,),
    body="json",
    errors="openai",
    envoy_usage=wire.USAGE_FIELDS,
    output_tokens=True,
    stream_usage_opt_in=True,
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

RESPONSES = API(
    operation="responses",
    paths=(wire.RESPONSES_PATH,),
    body="json",
    errors="openai",
    # A stream's usage is inside its last event's response object, which Envoy's SSE reader
    # cannot reach: the sidecar reads every Responses answer.
    envoy_usage=None,
    output_tokens=True,
)

# A stored response (retrieve, delete, cancel, its input items) and the input-token count: no
# model in the path, so the header, the body or the default chooses the backend that owns it.
STORED_RESPONSES = API(
    operation="stored_responses",
    paths=(),
    body="optional",
    errors="openai",
    envoy_usage=None,
    output_tokens=False,
    prefixes=(wire.RESPONSES_PATH + "/",),
    methods=("GET", "POST", "DELETE"),
    metered=False,
    query=frozenset(
        {"include", "include[]", "stream", "starting_after", "after", "limit", "order", "before"}
    ),
)

# The legacy text completions (vLLM, Ollama, llama.cpp): chat's usage object and stream framing,
# its usage chunk asked for the same way.
COMPLETIONS = API(
    operation="text_completion",
    paths=(wire.COMPLETIONS_PATH,),
    body="json",
    errors="openai",
    envoy_usage=wire.USAGE_FIELDS,
    output_tokens=True,
    stream_usage_opt_in=True,
)

# Anthropic's Messages API, for Anthropic clients (its backends: extproc/backends.py), who get
# the gateway's own errors in Anthropic's shape.
MESSAGES = API(
    operation="messages",
    paths=(wire.MESSAGES_PATH,),
    body="json",
    errors="anthropic",
    # Anthropic's usage is not where Envoy's readers look (wire.USAGE_FIELDS).
    envoy_usage=None,
    output_tokens=True,
)

# Anthropic's count of a Messages request's input tokens: free, so not metered.
COUNT_TOKENS = API(
    operation="count_tokens",
    paths=(wire.COUNT_TOKENS_PATH,),
    body="json",
    errors="anthropic",
    envoy_usage=None,
    output_tokens=False,
    metered=False,
)

# Audio and images (extproc/translate/media.py): no operation name in the GenAI semantic
# conventions, so the issue's. Not tokens alone, so never Envoy's to read.
SPEECH = API(
    operation="speech",
    paths=(wire.SPEECH_PATH,),
    body="json",
    errors="openai",
    envoy_usage=None,
    output_tokens=False,
)
IMAGE_GENERATION = API(
    operation="image_generation",
    paths=(wire.IMAGE_GENERATIONS_PATH,),
    body="json",
    errors="openai",
    envoy_usage=None,
    output_tokens=True,  # gpt-image reports its image tokens as output tokens
)

# A form with the images to edit (multipart), image generation's answer.
IMAGE_EDIT = API(
    operation="image_edit",
    paths=(wire.IMAGE_EDITS_PATH,),
    body="multipart",
    errors="openai",
    envoy_usage=None,
    output_tokens=True,
)
# Audio in (a multipart form with the file), text out: counted in the answer's audio seconds
# or tokens.
TRANSCRIPTION = API(
    operation="transcription",
    paths=(wire.TRANSCRIPTIONS_PATH,),
    body="multipart",
    errors="openai",
    envoy_usage=None,
    output_tokens=True,
)
TRANSLATION = API(
    operation="translation",
    paths=(wire.TRANSLATIONS_PATH,),
    body="multipart",
    errors="openai",
    envoy_usage=None,
    output_tokens=True,
)

APIS: tuple[API, ...] = (
    CHAT,
    EMBEDDINGS,
    RESPONSES,
    STORED_RESPONSES,
    COMPLETIONS,
    MESSAGES,
    COUNT_TOKENS,
    SPEECH,
    IMAGE_GENERATION,
    IMAGE_EDIT,
    TRANSCRIPTION,
    TRANSLATION,
)
BY_PATH: dict[str, API] = {path: api for api in APIS for path in api.paths}
_BY_PREFIX = [(prefix, api) for api in APIS for prefix in api.prefixes]


def api_for(path: str) -> API | None:
    """The API a path (without its query) belongs to: an exact path, or one below a prefix
    in the shape ``wire.STORED_RESPONSE`` allows."""
    api = BY_PATH.get(path)
    if api is not None:
        return api
    for prefix, below in _BY_PREFIX:
        if path.startswith(prefix) and wire.STORED_RESPONSE.fullmatch(path[len(prefix) :]):
            return below
    return None


BY_OPERATION: dict[str, API] = {api.operation: api for api in APIS}
