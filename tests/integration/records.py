"""A request's attempt records as the OTLP receiver got them (one span per attempt), and the
traced requests that find them: the trace id a test sends is the one its records carry."""

from __future__ import annotations

import http.client
import os
import time
from typing import Any

import orjson
import pytest
from openai import OpenAI

from tests.fakes.otlp import OTLPReceiver
from tests.harness import Gateway


def traceparent() -> tuple[str, str]:
    """A new trace id, and the ``traceparent`` header that starts it."""
    trace_id = os.urandom(16).hex()
    return trace_id, f"00-{trace_id}-{os.urandom(8).hex()}-01"


def traced(client: OpenAI) -> tuple[OpenAI, str]:
    """``client`` sending a new trace's ``traceparent``, and that trace id."""
    trace_id, header = traceparent()
    return client.with_options(default_headers={"traceparent": header}), trace_id


def attempt_spans(
    otlp: OTLPReceiver, trace_id: str, attempts: int = 1, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """The attributes of the trace's attempt spans, in the order they arrived (not always the
    attempts' order); exactly ``attempts`` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = [s for s in list(otlp.spans) if s["trace_id"] == trace_id]
        if len(spans) >= attempts:
            time.sleep(0.3)  # a record too many would arrive with the others
            spans = [s for s in list(otlp.spans) if s["trace_id"] == trace_id]
            assert len(spans) == attempts, spans
            return [dict(s["attributes"]) for s in spans]
        time.sleep(0.1)
    pytest.fail("no record of the request arrived")


def open_stream(
    gw: Gateway, path: str, body: dict[str, Any], trace_header: str
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """POST ``body`` as JSON and return once the answer's head is read (status 200 checked):
    the test reads as much of the stream as it wants, then closes the connection."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    headers = {"content-type": "application/json", "traceparent": trace_header}
    conn.request("POST", path, orjson.dumps(body), headers)
    response = conn.getresponse()
    assert response.status == 200
    return conn, response


def leave_mid_stream(
    gw: Gateway, path: str, body: dict[str, Any], trace_header: str, marker: bytes, events: int = 3
) -> None:
    """Stream ``body`` and leave, closing the connection, after ``events`` lines that start
    with ``marker`` (``data: `` for chat's events, ``event: response.output_text.delta``...)."""
    conn, response = open_stream(gw, path, body, trace_header)
    seen = 0
    while seen < events:
        line = response.readline()
        assert line, "the stream ended early"
        seen += line.startswith(marker)
    conn.sock.close()
    conn.close()
