"""Names Envoy's rendered config and the sidecar must agree on: one place, standard library only.

The renderer writes these into the bootstrap; the sidecar reads and writes them at run time.
A name changed on one side only would break the gateway silently, so neither side spells them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from urllib.parse import quote, unquote

# Dynamic metadata namespace of everything the gateway writes (and Envoy's readers fill in).
NAMESPACE = "io.envoy.ai_gateway"

# The route-matching header: set by the router stage, matched by the model routes, and removed
# by those routes before any request leaves Envoy (no x-ai-eg-* header reaches a provider).
MODEL_HEADER = "x-ai-eg-model"
INTERNAL_PREFIX = "x-ai-eg-"
# The model name in MODEL_HEADER: printable ASCII but "%" stays as it is (a configured name
# reads the same in the header, the route and Envoy's access log); anything else, non-ASCII
# included, is percent-encoded UTF-8: header values are bytes, written as latin-1.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def encode_model(name: str) -> str:
    """A model name as MODEL_HEADER carries it, and as routes match it."""
    return quote(name, safe=_HEADER_SAFE)


def decode_model(value: str) -> str:
    """The model name MODEL_HEADER carries (see :func:`encode_model`)."""
    return unquote(value)


COST_HEADER = "x-ai-eg-cost-usd"  # on a buffered answer of a priced model
BACKEND_HEADER = "x-ai-eg-backend"  # http.expose_backend
ATTEMPTS_HEADER = "x-ai-eg-attempts"  # http.expose_backend
ATTEMPT_HEADER = "x-envoy-attempt-count"  # Envoy's own, per upstream attempt

# The gRPC initial metadata naming the ext_proc stage of a stream, and its values.
STAGE_METADATA = "x-ai-eg-stage"
ROUTER_STAGE = "router"
UPSTREAM_STAGE = "upstream"
# The ext_proc request attribute that names the endpoint (hence the backend) Envoy picked.
UPSTREAM_HOST_METADATA = "xds.upstream_host_metadata"
# The client's address, asked of the router stage when uploads are counted per address.
SOURCE_ADDRESS = "source.address"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"

# `details` of the sidecar's immediate responses: Envoy's local-reply rewrite leaves them alone.
DETAILS = "ai_gateway"
ERROR_DETAILS = "ai_gateway_error"
STAT_PREFIX = "ai_gateway"


class Key(StrEnum):
    """Keys in :data:`NAMESPACE`."""

    # The router stage's decision, for every attempt of a request with several backends (the
    # upstream stage gets them through the filter's forwarding namespaces).
    MODEL = "model"  # the model route's name (also the record's request model)
    BODY_MODEL = "body_model"  # the body's own "model", "" when absent
    PATH = "path"  # the client's path (attempts rewrite :path in a header map they share)
    REQUEST_BYTES = "request_bytes"  # the client's body length, after any decompression
    STREAM = "stream"  # "usage": a stream whose client asked for usage, "plain": one that did not
    RATELIMIT = "ratelimit"  # the rate-limit buckets to debit, comma-joined
    # An attempt's record, as written by the sidecar or by Envoy's readers.
    BACKEND = "backend"
    RESPONSE_MODEL = "response_model"
    UPSTREAM_MODEL = "upstream_model"
    ATTEMPT = "attempt"
    COST_USD = "cost_usd"
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"
    TOTAL_TOKENS = "total_tokens"
    CACHED_INPUT_TOKENS = "cached_input_tokens"
    CACHE_WRITE_INPUT_TOKENS = "cache_write_input_tokens"
    GUARDRAIL_UNITS = "guardrail_units"
    INPUT_CHARACTERS = "input_characters"
    IMAGES = "images"
    AUDIO_SECONDS = "audio_seconds"
    REASONING_TOKENS = "reasoning_tokens"
    USAGE_SOURCE = "usage_source"  # "provider", or "estimated" by the gateway
    # accounting.mode envoy: the attempt's record comes from Envoy's access log.
    HANDED_OFF = "handed_off"
    OPERATION = "operation"
    EXTRA = "extra"
    TRACE = "trace"
    NOT_JSON = "not_json"  # a buffered answer's body that Envoy's JSON reader could not parse


# The API paths the gateway serves (what each POST endpoint is: extproc/endpoints.py).
CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
RESPONSES_PATH = "/v1/responses"
COMPLETIONS_PATH = "/v1/completions"
SPEECH_PATH = "/v1/audio/speech"
IMAGE_GENERATIONS_PATH = "/v1/images/generations"
IMAGE_EDITS_PATH = "/v1/images/edits"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
TRANSLATIONS_PATH = "/v1/audio/translations"
# What may follow RESPONSES_PATH + "/": a response id (and its cancel or input items), or the
# input-token count. Nothing else reaches a provider: no dot segment, no second id.
STORED_RESPONSE = re.compile(r"[A-Za-z0-9_-]{1,128}(/cancel|/input_items)?")
MESSAGES_PATH = "/v1/messages"  # Anthropic's Messages API
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"  # ... and its count of a request's input tokens
MODELS_PATH = "/v1/models"

# Where Envoy's readers (accounting.mode envoy) find each usage figure in an OpenAI answer, and
# the key they write it under: the renderer writes the rules, the access-log reader reads them.
USAGE_FIELDS = {
    Key.INPUT_TOKENS: "usage.prompt_tokens",
    Key.OUTPUT_TOKENS: "usage.completion_tokens",
    Key.TOTAL_TOKENS: "usage.total_tokens",
    Key.CACHED_INPUT_TOKENS: "usage.prompt_tokens_details.cached_tokens",
    Key.REASONING_TOKENS: "usage.completion_tokens_details.reasoning_tokens",
}


# The router's per-attempt log of attempts that got no answer (status 0), sent to the sidecar.
ATTEMPT_LOG = "ai_gateway_attempts"
# An attempt that failed on the way, per the error.type recorded for it: Envoy's response
# flags, by their short names (the access log's filters) and the gRPC entries' field names.
ATTEMPT_FAILURES = {
    "connect_failure": (["UF"], ("upstream_connection_failure",)),
    "timeout": (["UT"], ("upstream_request_timeout",)),
    "reset": (
        ["UR", "UC", "UPE"],
        ("upstream_remote_reset", "upstream_connection_termination", "upstream_protocol_error"),
    ),
}
# Custom tags of that log's entries: the attempted endpoint's backend (its host metadata), and
# the model and operation of the route (its metadata). The log sees the attempt's own stream
# info, not the request's dynamic metadata where the router's decision is.
BACKEND_TAG = "backend"
ATTEMPT_TAGS = (Key.MODEL, Key.OPERATION)
# Request headers those entries carry, besides those of telemetry.header_attributes.
ATTEMPT_HEADERS = [ATTEMPT_HEADER, "traceparent"]
