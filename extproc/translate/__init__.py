"""Translators: one per (client API, backend API) pair, pure bytes-in / bytes-out.

A :class:`Translator` is created for each upstream attempt by the upstream stage
(:mod:`extproc.upstream`) once Envoy has picked the backend. It never does I/O and never signs:
credentials are the job of :mod:`extproc.auth`, which runs on the :class:`UpstreamRequest` the
translator produced. The gRPC layer only moves bytes between Envoy and these objects.

A translator may also implement :class:`FanOut` when one client request can take several
provider calls; the upstream stage checks with ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import quote

import orjson

from extproc.config import ModelBackend
from extproc.endpoints import Operation
from extproc.errors import UPSTREAM, GatewayError, bad_request
from extproc.usage import Usage

BodyMode = Literal["none", "streamed", "buffered"]

# Translator.failure values (and the error code the client sees for them).
STREAM_TRUNCATED = "stream_truncated"  # a 2xx stream that ended before its last event
BAD_UPSTREAM_RESPONSE = "bad_upstream_response"  # a 2xx answer that is not what the API returns
UPSTREAM_ERROR = "upstream_error"  # an error the provider reported inside a 2xx stream
EVENT_TOO_LARGE = "event_too_large"  # a stream event over usage.MAX_EVENT_BYTES: stream ended


def bad_upstream_response(message: str) -> GatewayError:
    """The 502 a client gets in place of a provider's unreadable 2xx (buffered) answer."""
    return GatewayError(502, message, UPSTREAM, code=BAD_UPSTREAM_RESPONSE)


def json_object(body: bytes | None) -> dict[str, Any]:
    """The client's body as a JSON object, or the 400 that says why it is not one."""
    if not body:
        raise bad_request("Request body is empty; expected a JSON object.")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}.") from None
    if not isinstance(doc, dict):
        raise bad_request("Request body must be a JSON object.")
    return doc


def path_segment(model: str) -> str:
    """A model name as one segment of a provider's path, ``/`` included, percent-encoded.

    A name that is or holds a dot segment (``.``, ``..``, ``a/../b``) is refused: encoding
    leaves dots alone, and a server or proxy that decodes ``%2F`` before normalising the path
    would take it for a step up the provider's API.
    """
    if any(part in (".", "..") for part in model.split("/")):
        raise bad_request(
            "Invalid 'model': a name with a '.' or '..' path segment cannot be sent to this"
            " provider.",
            param="model",
            code="invalid_model",
        )
    return quote(model, safe="")


def dump_json(doc: Any) -> bytes:
    """A request body for the provider. orjson refuses to write deeper than it reads (254 levels
    against 1024), so a client's deep document that must be rewritten is refused here."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        raise bad_request("Request body is nested too deeply to be forwarded.") from None


@dataclass(slots=True)
class RequestContext:
    """What the upstream stage knows about one attempt before it sees the body."""

    endpoint: Operation
    route_model: str  # the model name the client asked for (what Envoy routed on)
    upstream_model: str  # the model (or deployment, or Bedrock model id) sent to the backend
    body_model: str | None  # the body's "model" as the router saw it; None when absent
    path: str  # the client's path, query included
    stream: bool = False  # the client asked for a stream
    include_usage: bool = False  # ... and for its usage chunk (stream_options.include_usage)
    # The route's entry for this backend: per-model settings (Bedrock's family, guardrail, cache points).
    settings: ModelBackend | None = None


@dataclass(slots=True)
class UpstreamRequest:
    """The request as it must leave Envoy for this backend."""

    path: str
    body: bytes | None = None  # None: the client's body is forwarded unchanged
    headers: dict[str, str] = field(default_factory=dict)  # set on the upstream request
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A complete upstream response to one :class:`UpstreamRequest` the sidecar sent itself."""

    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


@dataclass(slots=True)
class ResponseHead:
    """Header changes for the response: values to set, names to remove, optional new status."""

    set: dict[str, str] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    status: int | None = None


class Translator(Protocol):
    """One request/response exchange with one backend, for one attempt."""

    @property
    def needs_request_body(self) -> bool:
        """Whether :meth:`request` must see the body (translation, model rewrite, signing)."""

    def request(self, body: bytes | None) -> UpstreamRequest:
        """The upstream request. ``body`` is None when ``needs_request_body`` is false.

        Raises :class:`extproc.errors.GatewayError` for client input the backend cannot honour.
        """

    def response_body_mode(self, status: int, headers: Mapping[str, str]) -> BodyMode:
        """How the response body must reach :meth:`response_body`, given the upstream head."""

    def response_headers(self, status: int, headers: Mapping[str, str]) -> ResponseHead:
        """Changes to the response head (content type, status of translated errors...)."""

    def response_body(self, chunk: bytes, end_of_stream: bool) -> bytes:
        """The bytes to send the client for this chunk of the upstream body (may be empty).

        For a ``buffered`` body only (whose head has not reached the client yet), raises
        :class:`extproc.errors.GatewayError` when the provider's 2xx answer cannot be passed on
        (not what the provider's API returns): the client then gets that error, a 502, in place
        of the answer. A streamed body can only end with an error event (see :attr:`failure`).
        """

    @property
    def needs_response(self) -> bool:
        """Whether the response must be seen at all (False: Envoy passes it through)."""

    @property
    def usage(self) -> Usage | None:
        """The usage the response reported, once seen; None if it reported none (yet)."""

    @property
    def response_model(self) -> str | None:
        """The model the provider says served the request, if it said."""

    @property
    def complete(self) -> bool:
        """Whether the provider's answer was seen to its end (a stream's last event: ``[DONE]``,
        ``messageStop``), so a stream closed after it cut nothing."""

    @property
    def failure(self) -> str | None:
        """Why a 2xx answer failed, once the translator has told the client so: a short error
        type for telemetry (``stream_truncated``, ``bad_upstream_response``...); None while the
        answer is, as far as seen, a good one, and for provider errors (their status says it)."""

    def output_tokens(self, model: str) -> int:
        """Output tokens of what the answer said so far (text, reasoning, tool calls), counted
        by the gateway (:mod:`extproc.tokens`) for an answer that ended without usage."""


@runtime_checkable
class Unbuffered(Protocol):
    """Optional part of a :class:`Translator` whose buffered answers pass on unchanged: one too
    large to buffer can then be read as it passes (streamed), its usage from its ends."""

    def read_unbuffered(self) -> None:
        """From now on, :meth:`Translator.response_body` gets the body in chunks."""


@runtime_checkable
class FanOut(Protocol):
    """Optional part of a :class:`Translator`: a request that takes several provider calls.

    Some provider APIs take one item per call where the client's API takes a batch (Amazon Titan
    embeddings on Bedrock). Envoy forwards one upstream request per attempt, so the upstream
    stage sends the sub-requests itself (:mod:`extproc.fanout`), each signed by the backend's
    :class:`~extproc.auth.Auth`, and answers the client with the merge. The translator stays
    pure: it only splits and merges.
    """

    def fan_out(self, body: bytes) -> list[UpstreamRequest] | None:
        """The sub-requests that together answer ``body``, or None when one call does.

        Called before :meth:`Translator.request`, which then gets the same body when this
        returns None. Raises :class:`extproc.errors.GatewayError` as ``request`` does.
        """

    def merge(self, replies: Sequence[UpstreamReply]) -> tuple[int, bytes]:
        """The client's status and JSON body, from the replies to :meth:`fan_out`'s requests.

        ``replies`` are in request order: one per request, or, when one failed and the rest
        were not sent, those received, the failure among them. Any failure is what the client
        gets. Sets ``usage`` to the sum over the successful replies (the provider bills them
        even when the client gets an error).
        """
