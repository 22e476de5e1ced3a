"""Scripted ext_proc streams: messages played into ``ExternalProcessor.Process``, no network.

Each stream is driven the way Envoy drives one: a sequence of ``ProcessingRequest`` messages,
the stage named by the gRPC initial metadata; the replies are collected until the processor
ends the stream. Messages the processor did not read are reported too, since ending early is
part of what a stage decides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from extproc.server import ExternalProcessor
from extproc.wire import (
    EXT_PROC_FILTER,
    NAMESPACE,
    ROUTER_STAGE,
    STAGE_METADATA,
    UPSTREAM_HOST_METADATA,
    Key,
)


class FakeContext:
    """What ``Process`` reads of a ``grpc.aio.ServicerContext``: the stage and whether the
    stream is still open."""

    def __init__(self, stage: str, ended: bool) -> None:
        self._metadata = ((STAGE_METADATA, stage),)
        self.ended = ended

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def done(self) -> bool:
        return self.ended


@dataclass
class Played:
    replies: list[pb.ProcessingResponse]
    unread: int  # messages of the script the processor never read


async def play(
    processor: ExternalProcessor,
    script: Sequence[pb.ProcessingRequest],
    stage: str = ROUTER_STAGE,
    ended: bool = False,
) -> Played:
    """``ended``: the context says Envoy has ended the stream (as grpc's does once it has)."""
    read = 0

    async def messages() -> AsyncIterator[pb.ProcessingRequest]:
        nonlocal read
        for message in script:
            read += 1
            yield message

    context = cast(grpc.aio.ServicerContext, FakeContext(stage, ended))
    replies = [reply async for reply in processor.Process(messages(), context)]
    return Played(replies, len(script) - read)


def _header_map(headers: Mapping[str, str]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[
            base_pb2.HeaderValue(key=k, raw_value=v.encode("latin-1")) for k, v in headers.items()
        ]
    )


def request_headers(
    headers: Mapping[str, str],
    end_of_stream: bool = False,
    backend: str | None = None,
    route: Mapping[str, Any] | None = None,
) -> pb.ProcessingRequest:
    """``backend``: the upstream host's metadata names it, as Envoy sends it to the upstream
    stage; ``route``: the router's decision, forwarded in the request's dynamic metadata."""
    req = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=_header_map(headers), end_of_stream=end_of_stream)
    )
    if backend is not None:
        host = base_pb2.Metadata()
        host.filter_metadata[NAMESPACE].update({Key.BACKEND: backend})
        req.attributes[EXT_PROC_FILTER].fields[UPSTREAM_HOST_METADATA].string_value = str(host)
    if route is not None:
        req.metadata_context.filter_metadata[NAMESPACE].update(dict(route))
    return req


def request_body(body: bytes) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))


def response_headers(
    headers: Mapping[str, str], end_of_stream: bool = False
) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=_header_map(headers), end_of_stream=end_of_stream)
    )


def response_body(body: bytes, end_of_stream: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=body, end_of_stream=end_of_stream))


def set_headers(mutation: pb.HeaderMutation) -> dict[str, str]:
    return {o.header.key: o.header.raw_value.decode("latin-1") for o in mutation.set_headers}


def metadata(reply: pb.ProcessingResponse) -> dict[str, Any]:
    """The gateway's namespace of a reply's dynamic metadata, as plain values."""
    namespace = reply.dynamic_metadata.fields.get(NAMESPACE)
    if namespace is None:
        return {}
    return dict(_plain(namespace))


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return getattr(value, kind or "null_value")
