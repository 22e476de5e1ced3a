"""One reply of a stage to Envoy, as plain values: the gRPC layer makes the protobuf of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from extproc.errors import GatewayError
from extproc.router import Respond
from extproc.translate import BodyMode


@dataclass(slots=True)
class Step:
    """One reply to Envoy: header and body changes, the next body modes, an error or an answer."""

    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None
    # Overrides of the processing mode, only honoured on header replies.
    request_body: BodyMode | None = None
    response_headers: bool | None = None
    response_body: BodyMode | None = None
    error: GatewayError | None = None
    respond: Respond | None = None  # the client's answer, made here (a fan-out's merge)
    metadata: dict[str, Any] | None = None  # Envoy dynamic metadata, in wire.NAMESPACE
    done: bool = False  # nothing more is expected on this stream

    def then(self, later: Step) -> Step:
        """This step and ``later``, the next phase's, as one reply (the router stage answers a
        request's headers and body at once): an error or an answer in ``later`` is the reply;
        else each of its fields adds to this step's or overrides it. Every field is merged
        here (tests/unit/test_step.py checks that none is left out)."""
        if later.error is not None or later.respond is not None:
            return later
        self.set_headers.update(later.set_headers)
        if later.remove_headers:
            # A new list: this step's may be the stage's own (UpstreamStage.owned_headers).
            self.remove_headers = [*self.remove_headers, *later.remove_headers]
        if later.body is not None:
            self.body = later.body
        if later.request_body is not None:
            self.request_body = later.request_body
        if later.response_headers is not None:
            self.response_headers = later.response_headers
        if later.response_body is not None:
            self.response_body = later.response_body
        if later.metadata:
            self.metadata = {**(self.metadata or {}), **later.metadata}
        self.done = self.done or later.done
        return self
