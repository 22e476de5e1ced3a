"""The gRPC layer's message builders, against the plain protobuf way of building the same."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from extproc.server import _mutation, _set_metadata
from extproc.wire import NAMESPACE


def test_metadata_is_what_struct_update_makes() -> None:
    values: dict[str, Any] = {
        "backend": "openai",
        "response_model": None,
        "attempt": 2,
        "cost_usd": 0.000125,
        "flag": True,
        "nested": {"a": [1, "b"]},
    }
    built = struct_pb2.Struct()
    _set_metadata(built, {"model": "m"})
    _set_metadata(built, values)  # a second call adds to the namespace, as update does
    expected = struct_pb2.Struct()
    expected.update({NAMESPACE: {"model": "m", **values}})
    assert built == expected


def test_mutation_is_what_the_plain_constructor_makes() -> None:
    headers = {":authority": "api.example.com", "x-ai-eg-model": "m", "x-latin": "caf\xe9"}
    expected = pb.HeaderMutation(
        set_headers=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=k, raw_value=v.encode("latin-1")),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
            for k, v in headers.items()
        ],
        remove_headers=["api-key", "x-api-key"],
    )
    assert _mutation(headers, ("api-key", "x-api-key")) == expected
