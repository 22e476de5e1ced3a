"""A fake AWS Bedrock runtime that checks every SigV4 signature like AWS does.

    with FakeBedrock() as fake:
        backend: {schema: aws_bedrock, url: fake.url, region: fake.region,
                  access_key_id: fake.access_key, secret_access_key: fake.secret_key}
        fake.requests[-1].raw_path   # /model/anthropic.claude-3-haiku-20240307-v1%3A0/converse
        fake.requests[-1].json()     # the Converse body the gateway sent

Every request's signature is recomputed with botocore from what arrived (method, raw path,
the headers named in ``SignedHeaders``, body) and the fake's credentials; a mismatch, an unknown
key, a wrong token, scope or clock gets AWS's 403 (``x-amzn-errortype`` header, ``{"message"}``
body). Bodies are checked for the Converse rules a real model enforces (alternating roles,
non-blank text, ``toolConfig`` whenever the history holds tool blocks...), so a translator bug
gets the 400 it would get from AWS.

Operations: ``POST /model/{id}/converse``, ``/converse-stream`` (real event-stream frames from
:mod:`extproc.eventstream`, each payload padded with ``p`` like Bedrock's, cut into random
chunks of 1..``max_chunk`` bytes written ``chunk_delay`` apart) and ``/invoke`` for Amazon Titan
Text Embeddings (``amazon.titan-embed-text-v1/v2``) and Cohere Embed (``cohere.embed-*``).

Answers, derived from the request so tests can predict them (one token per word):

- text: ``"You said: <text of the last user turn>"`` (``reply_text`` overrides it), or
  ``"Tool said: <results>"`` after tool results; cut to ``maxTokens`` words (``max_tokens``) or
  before a stop sequence (``stop_sequence``);
- a tool call (``stopReason: tool_use``, input :func:`~tests.fakes.openai.example` of its schema
  unless ``tool_input`` is set) when ``toolChoice`` is ``tool`` (that tool) or ``any`` (the
  first tool), or when the last user text holds ``[[tool]]`` / ``[[tool:NAME]]``;
- embeddings: :func:`~tests.fakes.openai.vector` of each text, at the model's size.

Scripted failures, by marker in the last user text (or any embeddings input):
``[[throttle]]`` 429 ThrottlingException, ``[[invalid]]`` 400 ValidationException,
``[[stream-error]]`` / ``[[stream-throttle]]`` a ``modelStreamErrorException`` /
``throttlingException`` frame after the first text delta, ``[[cached]]`` usage with
``cacheReadInputTokens``, ``[[blocked]]`` an intervention of the request's guardrail.
Thinking and cache points: :mod:`tests.fakes.bedrock_rules` (checks, reasoning blocks, a
simulated prompt cache); documents, guardrail configs and service tiers:
:mod:`tests.fakes.bedrock_checks` (a requested tier is reported back). ``deployments`` maps a
model id naming no model (an ARN) to the model it serves. By model id: :data:`THROTTLED_MODEL` always answers 429, and
:data:`RECORDED_MODEL` on ``converse-stream`` replays the recorded Claude stream of the
conformance corpus in random splits. :meth:`FakeServer.fail_next` injects raw faults.
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from extproc.eventstream import encode_message
from tests.fakes import bedrock_rules
from tests.fakes.bedrock_checks import (
    BLOCKED,
    BLOCKED_MESSAGE,
    check_document,
    check_guardrail,
    check_service_tier,
    guardrail_trace,
)
from tests.fakes.openai import count_tokens, example, vector
from tests.fakes.server import FakeServer, Reject, stream_chunks

Json = dict[str, Any]

CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance"
RECORDING = CONFORMANCE / "bedrock" / "converse-stream-claude-text-tooluse.eventstream"
RECORDED_MODEL = "anthropic.claude-recorded-v1:0"
THROTTLED_MODEL = "anthropic.claude-throttled-v1:0"

ACCESS_KEY = "AKIDFAKEBEDROCK"
SECRET_KEY = "fake/secret+key"  # '/' and '+' as in real secrets

THROTTLE = "[[throttle]]"
INVALID = "[[invalid]]"
STREAM_ERROR = "[[stream-error]]"
STREAM_THROTTLE = "[[stream-throttle]]"
CACHED = "[[cached]]"
_STREAM_FAILURES = {
    STREAM_ERROR: ("modelStreamErrorException", "The model stream failed."),
    STREAM_THROTTLE: ("throttlingException", "Too many tokens, please wait."),
}
CACHED_TOKENS = 100
_ROUTE = re.compile(r"/model/(.+)/(converse|converse-stream|invoke)")
_TOOL_MARKER = re.compile(r"\[\[tool(?::([A-Za-z0-9_-]+))?\]\]")

EVENT_STREAM = "application/vnd.amazon.eventstream"
_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check"
    " your AWS Secret Access Key and signing method. Consult the service documentation for"
    " details."
)
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;_.-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)
# AWS refuses a signature dated more than five minutes away from its clock.
MAX_CLOCK_SKEW = timedelta(minutes=5)
_CONVERSE_KEYS = {
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "guardrailConfig",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
    "outputConfig",
    "serviceTier",
}
_INFERENCE_KEYS = {"maxTokens", "temperature", "topP", "stopSequences"}
_COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
_BLOCK_KINDS = {
    "text",
    "image",
    "document",
    "video",
    "toolUse",
    "toolResult",
    "reasoningContent",
    "cachePoint",
}


def aws_error(status: int, kind: str, message: str) -> Reject:
    """An error as Bedrock sends it: the type in a header, ``{"message"}`` as the body."""
    return Reject(
        status,
        {"message": message},
        {"x-amzn-errortype": f"{kind}:{_ERROR_NAMESPACE}", "x-amzn-requestid": str(uuid.uuid4())},
    )


def _invalid(message: str) -> Reject:
    return aws_error(400, "ValidationException", message)


# --- SigV4 verification -------------------------------------------------------------------------


class _Recomputation(SigV4Auth):
    """botocore's SigV4 over exactly the headers the client listed, as AWS does.

    botocore's signer leaves some headers out (user-agent, ...) when *choosing* what to sign; a
    verifier must take the client's ``SignedHeaders`` as given.
    """

    def __init__(self, credentials: Any, service: str, region: str, signed: list[str]) -> None:
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> Any:
        headers = HTTPHeaders()
        for name in self._signed:
            headers[name] = request.headers.get(name, "")
        return headers


@dataclass(frozen=True, slots=True)
class SignatureError:
    kind: str  # the AWS error type, e.g. InvalidSignatureException
    message: str


def verify_sigv4(
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    region: str,
    service: str = "bedrock",
    now: datetime | None = None,
) -> SignatureError | None:
    """Why AWS would refuse this request's signature, or None when it is valid.

    ``headers`` have lower-case names; ``raw_path`` is the request target as sent (still
    percent-encoded, query included).
    """
    authorization = headers.get("authorization")
    if not authorization:
        return SignatureError("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTHORIZATION.fullmatch(authorization.strip())
    if match is None:
        return SignatureError(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders'.",
        )
    if match["key"] != access_key:
        return SignatureError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if headers.get("x-amz-security-token") != session_token:
        return SignatureError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if match["region"] != region:
        return SignatureError(
            "InvalidSignatureException", f"Credential should be scoped to a valid region: {region}."
        )
    if match["service"] != service:
        return SignatureError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{service}'.",
        )
    signed = match["signed"].split(";")
    required = ["host", "x-amz-date"] + (["x-amz-security-token"] if session_token else [])
    missing = [name for name in required if name not in signed]
    if missing:
        return SignatureError(
            "InvalidSignatureException", f"Signed headers must include {', '.join(missing)}."
        )
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return SignatureError("IncompleteSignatureException", "Invalid X-Amz-Date.")
    if amz_date[:8] != match["date"]:
        return SignatureError("InvalidSignatureException", "Date in Credential scope mismatch.")
    if abs((now or datetime.now(UTC)) - signed_at) > MAX_CLOCK_SKEW:
        return SignatureError("InvalidSignatureException", f"Signature expired: {amz_date}.")

    request = AWSRequest(
        method=method,
        url=f"https://{headers.get('host', '')}{raw_path}",
        data=body,
        headers={name: headers.get(name, "") for name in signed},
    )
    request.context["timestamp"] = amz_date
    credentials = Credentials(access_key, secret_key, session_token)
    signer = _Recomputation(credentials, service, region, signed)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != match["signature"]:
        return SignatureError("InvalidSignatureException", _SIGNATURE_MISMATCH)
    return None


# --- Converse -----------------------------------------------------------------------------------


def _check_text(text: Any, where: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise _invalid(f"The text field in the ContentBlock object at {where} is blank.")


def _check_block(block: Any, where: str, names: set[str]) -> None:
    if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in _BLOCK_KINDS:
        raise _invalid(f"Malformed input request: {where} must hold exactly one content block.")
    kind, value = next(iter(block.items()))
    if kind == "text":
        _check_text(value, where)
    elif kind == "image":
        if value.get("format") not in ("png", "jpeg", "gif", "webp"):
            raise _invalid(f"{where}.image.format: unsupported image format.")
        try:
            base64.b64decode(value["source"]["bytes"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise _invalid(f"{where}.image.source.bytes: invalid base64 image bytes.") from None
    elif kind == "document":
        check_document(value, where, names)
    elif kind == "toolUse":
        if not isinstance(value.get("input"), dict) or not value.get("toolUseId"):
            raise _invalid(f"{where}.toolUse needs a toolUseId and an object input.")
    elif kind == "toolResult":
        contents = value.get("content")
        if not value.get("toolUseId") or not isinstance(contents, list) or not contents:
            raise _invalid(f"{where}.toolResult needs a toolUseId and content.")
        for k, content in enumerate(contents):
            if "text" in content:
                _check_text(content["text"], f"{where}.toolResult.content.{k}")


def check_converse(body: Json, stream: bool = False) -> None:
    """Raise the 400 Bedrock gives a Converse body that breaks its rules."""
    try:
        _check_converse(body, stream)
    except bedrock_rules.Invalid as exc:
        raise _invalid(str(exc)) from None


def _check_converse(body: Json, stream: bool) -> None:
    extra = sorted(set(body) - _CONVERSE_KEYS)
    if extra:
        raise _invalid(f"Malformed input request: extraneous key [{extra[0]}] is not permitted.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("A conversation must start with a user message.")
    has_tool_blocks = False
    names: set[str] = set()  # of documents
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.get("role") != expected:
            raise _invalid(
                "A conversation must alternate between user and assistant roles and start"
                " with a user message."
            )
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise _invalid(f"messages.{i}.content must not be empty.")
        for j, block in enumerate(content):
            _check_block(block, f"messages.{i}.content.{j}", names)
            has_tool_blocks = has_tool_blocks or "toolUse" in block or "toolResult" in block
    for j, block in enumerate(body.get("system") or []):
        if "cachePoint" not in block:
            _check_text(block.get("text"), f"system.{j}")
    config = body.get("inferenceConfig") or {}
    if set(config) - _INFERENCE_KEYS:
        raise _invalid("Malformed input request: inferenceConfig has an extraneous key.")
    if not 0 <= config.get("temperature", 0) <= 1:
        raise _invalid("inferenceConfig.temperature: must be between 0 and 1.")
    tool_config = body.get("toolConfig")
    if has_tool_blocks and tool_config is None:
        raise _invalid(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    if tool_config is not None:
        _check_tool_config(tool_config)
    bedrock_rules.check_cache_points(body)
    bedrock_rules.check_thinking(body)
    if "guardrailConfig" in body:
        check_guardrail(body["guardrailConfig"], stream)
    if "serviceTier" in body:
        check_service_tier(body["serviceTier"])


def _check_tool_config(config: Json) -> None:
    tools = config.get("tools")
    if not isinstance(tools, list) or not tools:
        raise _invalid("toolConfig.tools must not be empty.")
    names = []
    for j, tool in enumerate(tools):
        if "cachePoint" in tool:
            continue
        spec = tool.get("toolSpec") or {}
        if not spec.get("name") or not isinstance(
            (spec.get("inputSchema") or {}).get("json"), dict
        ):
            raise _invalid(f"toolConfig.tools.{j}.toolSpec needs a name and inputSchema.json.")
        if "description" in spec and not str(spec["description"]).strip():
            raise _invalid(f"toolConfig.tools.{j}.toolSpec.description must not be empty.")
        names.append(spec["name"])
    choice = config.get("toolChoice")
    if choice is None:
        return
    if len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool"):
        raise _invalid("toolConfig.toolChoice must be exactly one of auto, any, tool.")
    if "tool" in choice and choice["tool"].get("name") not in names:
        raise _invalid("toolConfig.toolChoice.tool.name must name one of the tools.")


def _texts(blocks: Any) -> list[str]:
    """The text of text blocks and of tool results' text."""
    out: list[str] = []
    for block in blocks or []:
        if "text" in block:
            out.append(block["text"])
        elif "toolResult" in block:
            out += _texts(block["toolResult"]["content"])
    return out


@dataclass(frozen=True, slots=True)
class ConverseReply:
    blocks: list[Json]  # the assistant's content blocks
    stop_reason: str
    usage: Json
    extra: Json = field(default_factory=dict)  # serviceTier, trace: in the answer and metadata


def event_frame(event_type: str, payload: Json, padding: str = "") -> bytes:
    """One ConverseStream event. Bedrock pads every payload with a random-length ``p`` so that
    sizes leak nothing; pass ``padding`` to do the same."""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, orjson.dumps({**payload, "p": padding} if padding else payload))


def exception_frame(exception_type: str, message: str) -> bytes:
    """A mid-stream error as Bedrock sends it, e.g. ``throttlingException``."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, orjson.dumps({"message": message}))


# --- the server ---------------------------------------------------------------------------------


class FakeBedrock(FakeServer):
    """``POST /model/{modelId}/converse``, ``/converse-stream`` and ``/invoke``."""

    def __init__(
        self,
        *,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        session_token: str | None = None,
        region: str = "us-east-1",
        seed: int = 0,
        max_chunk: int = 48,
        chunk_delay: float = 0.0005,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(ssl_context=ssl_context)
        self.access_key = access_key
        self.secret_key = secret_key
        self.session_token = session_token
        self.region = region
        self.max_chunk = max_chunk
        self.chunk_delay = chunk_delay
        self.reply_text: str | None = None  # replaces the echo of a text answer
        self.tool_input: Json | None = None  # replaces the schema example of a tool call input
        # Model ids naming no model (provisioned-throughput ARNs...) -> the model they serve.
        self.deployments: dict[str, str] = {}
        self.prompt_cache = bedrock_rules.PromptCache()
        self._rng = Random(seed)

    def backend(self, url: str | None = None) -> dict[str, str]:
        """The gateway's backend config for this fake (``url``: another server in its place)."""
        return {
            "schema": "aws_bedrock",
            "url": url or self.url,
            "region": self.region,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }

    @property
    def authority(self) -> str:
        """What a client sends as ``Host`` / ``:authority``."""
        return f"127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        problem = verify_sigv4(
            request.method,
            request.raw_path,
            headers,
            body,
            access_key=self.access_key,
            secret_key=self.secret_key,
            session_token=self.session_token,
            region=self.region,
        )
        if problem is not None:
            raise aws_error(403, problem.kind, problem.message)
        route = _ROUTE.fullmatch(request.raw_path)
        if route is None:
            raise aws_error(404, "UnknownOperationException", "Unknown operation.")
        model_id, operation = unquote(route[1]), route[2]
        model_id = self.deployments.get(model_id, model_id)
        if model_id == THROTTLED_MODEL:
            raise aws_error(429, "ThrottlingException", "Too many requests, please wait.")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise aws_error(400, "SerializationException", "Invalid JSON body.") from None
        if not isinstance(doc, dict):
            raise aws_error(400, "SerializationException", "The body must be a JSON object.")
        if operation == "invoke":
            return self._invoke(model_id, doc)
        if "embed" in model_id:
            raise _invalid("This action doesn't support the model that you provided.")
        if operation == "converse-stream" and model_id == RECORDED_MODEL:
            return await self._stream(request, RECORDING.read_bytes())
        check_converse(doc, stream=operation == "converse-stream")
        last_text = " ".join(_texts(doc["messages"][-1]["content"]))
        self._raise_markers(last_text)
        reply = self.converse_reply(doc)
        if operation == "converse":
            return self._json(
                {
                    "output": {"message": {"role": "assistant", "content": reply.blocks}},
                    "stopReason": reply.stop_reason,
                    "usage": reply.usage,
                    "metrics": {"latencyMs": 1},
                    **reply.extra,
                }
            )
        return await self._stream(request, b"".join(self._frames(reply, last_text)))

    @staticmethod
    def _raise_markers(text: str) -> None:
        if THROTTLE in text:
            raise aws_error(429, "ThrottlingException", "Too many requests, please wait.")
        if INVALID in text:
            raise _invalid(f"Malformed input request: the prompt holds {INVALID}.")

    def _json(self, doc: Json, headers: Mapping[str, str] | None = None) -> web.Response:
        return web.Response(
            body=orjson.dumps(doc),
            content_type="application/json",
            headers={"x-amzn-requestid": str(uuid.uuid4()), **(headers or {})},
        )

    def converse_reply(self, body: Json) -> ConverseReply:
        """The assistant turn this fake answers ``body`` (a valid Converse request) with."""
        messages = body["messages"]
        last = messages[-1]["content"]
        last_text = " ".join(_texts(last))
        results = [b["toolResult"] for b in last if "toolResult" in b]
        prompt = (
            " ".join(_texts(body.get("system")))
            + " "
            + " ".join(" ".join(_texts(m["content"])) for m in messages)
        )
        tool = None if results else self._chosen_tool(body.get("toolConfig"), last_text)
        blocks: list[Json]
        if tool is not None:
            arguments = (
                self.tool_input
                if self.tool_input is not None
                else example(tool["inputSchema"]["json"])
            )
            use = {
                "toolUseId": f"tooluse_{uuid.uuid4().hex[:22]}",
                "name": tool["name"],
                "input": arguments,
            }
            blocks, stop_reason = [{"toolUse": use}], "tool_use"
            output = orjson.dumps(arguments).decode()
        else:
            if self.reply_text is not None:
                output = self.reply_text
            elif results:
                output = "Tool said: " + " ".join(_texts([{"toolResult": r} for r in results]))
            else:
                output = f"You said: {last_text}"
            output, stop_reason = self._limit(output, body.get("inferenceConfig") or {})
            blocks = [{"text": output}]
        thoughts = bedrock_rules.reasoning_blocks(body, last_text)
        output_tokens = count_tokens(output) + bedrock_rules.reasoning_tokens(thoughts)
        # Bedrock's inputTokens leaves out what was read from or written to the cache.
        read, written = self.prompt_cache.usage(body)
        usage = {
            "inputTokens": max(count_tokens(prompt) - read - written, 0),
            "outputTokens": output_tokens,
        }
        if CACHED in last_text:
            usage["cacheReadInputTokens"] = CACHED_TOKENS
            usage["cacheWriteInputTokens"] = 0
        elif read or written:
            usage["cacheReadInputTokens"] = read
            usage["cacheWriteInputTokens"] = written
        usage["totalTokens"] = sum(usage.values())
        extra: Json = {}
        guardrail = body.get("guardrailConfig")
        if guardrail is not None:
            blocked = BLOCKED in last_text
            if blocked:
                blocks, stop_reason = [{"text": BLOCKED_MESSAGE}], "guardrail_intervened"
                thoughts = []
                usage = {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0}
            answer = None if blocked else "".join(b.get("text", "") for b in blocks)
            trace = guardrail_trace(guardrail, last_text, answer)
            if trace is not None:
                extra["trace"] = trace
        if "serviceTier" in body:
            extra["serviceTier"] = body["serviceTier"]
        return ConverseReply([*thoughts, *blocks], stop_reason, usage, extra)

    @staticmethod
    def _chosen_tool(config: Json | None, last_text: str) -> Json | None:
        if not config:
            return None
        specs: list[Json] = [tool["toolSpec"] for tool in config["tools"] if "toolSpec" in tool]
        choice = config.get("toolChoice") or {}
        marker = _TOOL_MARKER.search(last_text)
        if "tool" in choice:
            wanted = choice["tool"]["name"]
        elif marker and marker[1]:
            wanted = marker[1]
        elif "any" in choice or marker:
            return specs[0]
        else:
            return None
        return next((spec for spec in specs if spec["name"] == wanted), specs[0])

    @staticmethod
    def _limit(text: str, config: Json) -> tuple[str, str]:
        for stop in config.get("stopSequences") or []:
            if stop in text:
                return text[: text.index(stop)], "stop_sequence"
        words = text.split()
        limit = config.get("maxTokens")
        if isinstance(limit, int) and len(words) > limit:
            return " ".join(words[:limit]), "max_tokens"
        return text, "end_turn"

    # --- ConverseStream ---

    def _event(self, event_type: str, payload: Json) -> bytes:
        return event_frame(
            event_type, payload, "abcdefghijklmnopqrstuvwxyz"[: self._rng.randint(1, 26)]
        )

    def _frames(self, reply: ConverseReply, last_text: str) -> list[bytes]:
        frames = [self._event("messageStart", {"role": "assistant"})]
        for index, block in enumerate(reply.blocks):
            if "text" in block:
                # Split before each word so the pieces join back to exactly the text.
                pieces = [{"text": p} for p in re.split(r"(?<=\s)(?=\S)", block["text"]) if p]
            elif "reasoningContent" in block:
                pieces = bedrock_rules.reasoning_deltas(block["reasoningContent"])
            else:
                use = block["toolUse"]
                start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
                frames.append(
                    self._event("contentBlockStart", {"contentBlockIndex": index, "start": start})
                )
                arguments = orjson.dumps(use["input"]).decode()
                pieces = [
                    {"toolUse": {"input": arguments[i : i + 8]}}
                    for i in range(0, len(arguments), 8)
                ]
            for delta in pieces:
                frames.append(
                    self._event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta})
                )
            frames.append(self._event("contentBlockStop", {"contentBlockIndex": index}))
        frames.append(self._event("messageStop", {"stopReason": reply.stop_reason}))
        frames.append(
            self._event(
                "metadata", {"usage": reply.usage, "metrics": {"latencyMs": 1}, **reply.extra}
            )
        )
        for marker, (exception_type, message) in _STREAM_FAILURES.items():
            if marker in last_text:
                return [*frames[:2], exception_frame(exception_type, message)]
        return frames

    def _split(self, data: bytes) -> list[bytes]:
        chunks = []
        pos = 0
        while pos < len(data):
            size = self._rng.randint(1, self.max_chunk)
            chunks.append(data[pos : pos + size])
            pos += size
        return chunks

    async def _stream(self, request: web.Request, data: bytes) -> web.StreamResponse:
        return await stream_chunks(
            request,
            self._split(data),
            content_type=EVENT_STREAM,
            delay=self.chunk_delay,
            headers={"x-amzn-requestid": str(uuid.uuid4())},
        )

    # --- InvokeModel (embeddings) ---

    def _invoke(self, model_id: str, body: Json) -> web.Response:
        if "amazon.titan-embed-text" in model_id:
            doc, tokens = self._titan(model_id, body)
        elif "cohere.embed" in model_id:
            doc, tokens = self._cohere(model_id, body)
        else:
            raise _invalid(f"The fake does not serve model {model_id}.")
        return self._json(doc, {"x-amzn-bedrock-input-token-count": str(tokens)})

    def _titan(self, model_id: str, body: Json) -> tuple[Json, int]:
        v2 = "-v2" in model_id
        allowed = (
            {"inputText", "dimensions", "normalize", "embeddingTypes"} if v2 else {"inputText"}
        )
        extra = sorted(set(body) - allowed)
        if extra:
            raise _invalid(f"Malformed input request: extraneous key [{extra[0]}] is not permitted")
        text = body.get("inputText")
        if not isinstance(text, str) or not text:
            raise _invalid("Malformed input request: #: required key [inputText] not found")
        self._raise_markers(text)
        dims = body.get("dimensions", 1024) if v2 else 1536
        if dims not in (256, 512, 1024, 1536):
            raise _invalid("Malformed input request: dimensions must be 256, 512 or 1024")
        values = vector(text, dims)
        tokens = count_tokens(text)
        doc: Json = {"embedding": values, "inputTextTokenCount": tokens}
        if v2:
            doc["embeddingsByType"] = {"float": values}
        return doc, tokens

    def _cohere(self, model_id: str, body: Json) -> tuple[Json, int]:
        v4 = "embed-v4" in model_id
        texts = body.get("texts")
        if not isinstance(texts, list) or not 0 < len(texts) <= 96:
            raise _invalid("Malformed input request: texts must hold 1 to 96 strings")
        if body.get("input_type") not in _COHERE_INPUT_TYPES:
            raise _invalid("Malformed input request: #: required key [input_type] not found")
        if "output_dimension" in body and not v4:
            raise _invalid("Malformed input request: extraneous key [output_dimension]")
        for text in texts:
            self._raise_markers(text)
        dims = body.get("output_dimension", 1536) if v4 else 1024
        vectors = [vector(text, dims) for text in texts]
        doc: Json = {"id": str(uuid.uuid4()), "texts": texts}
        if body.get("embedding_types"):
            doc.update(embeddings={"float": vectors}, response_type="embeddings_by_type")
        else:
            doc.update(embeddings=vectors, response_type="embeddings_floats")
        return doc, sum(count_tokens(text) for text in texts)
