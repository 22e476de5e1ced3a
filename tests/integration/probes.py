"""Looking at a running gateway from outside: its processes, its metrics, raw HTTP.

Shared by the reliability and security suites. Everything reads what a user could read: /proc
for the gateway's own processes, the admin port, the bytes on the wire.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from extproc.usage import Usage
from tests.harness import Gateway

_WORKER = re.compile(r"\bworker unix:\S*/(worker-\d+)\.sock")


def children(pid: int) -> dict[int, str]:
    """The direct children of ``pid``: their command lines."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found[int(entry)] = f.read().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def gateway_pid(gw: Gateway) -> int:
    proc = gw._proc
    assert proc is not None, "the gateway is not started"
    return proc.pid


def workers(gw: Gateway) -> dict[str, int]:
    """``worker-0`` -> pid, for the sidecar workers of ``ai-gateway run``."""
    out = {}
    for pid, cmdline in children(gateway_pid(gw)).items():
        match = _WORKER.search(cmdline)
        if match:
            out[match.group(1)] = pid
    return out


def envoy_pid(gw: Gateway) -> int:
    for pid, cmdline in children(gateway_pid(gw)).items():
        if os.path.basename(cmdline.split(" ", 1)[0]) == "envoy":
            return pid
    raise AssertionError("no envoy process")


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` now, or its peak so far with ``field="VmHWM"``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- admin port -------------------------------------------------------------------------------


def admin_text(gw: Gateway, path: str) -> str:
    with urllib.request.urlopen(f"{gw.admin_url}{path}", timeout=5) as response:
        return str(response.read().decode())


def envoy_stat(gw: Gateway, name: str) -> int:
    """One Envoy counter or gauge, read live."""
    query = urllib.parse.urlencode({"filter": f"^{re.escape(name)}$"})
    for line in admin_text(gw, f"/stats?{query}").splitlines():
        key, sep, value = line.rpartition(": ")
        if sep and key == name:
            return int(value)
    raise AssertionError(f"no Envoy stat {name}")


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(gw: Gateway, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric from the admin port over the samples matching ``labels``."""
    total = 0.0
    for line in admin_text(gw, "/metrics").splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group("name") != name:
            continue
        have = dict(_LABEL.findall(match.group("labels") or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group("value"))
    return total


def failed_requests(gw: Gateway, model: str) -> float:
    """Attempts for ``model`` recorded with an ``error_type``."""
    everything = metric(gw, "ai_gateway_requests_total", gen_ai_request_model=model)
    succeeded = metric(gw, "ai_gateway_requests_total", gen_ai_request_model=model, error_type="")
    return everything - succeeded


# --- raw HTTP ---------------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def request_bytes(
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: gateway\r\n".encode()
    head += b"content-type: application/json\r\n"
    head += b"content-length: %d\r\nconnection: close\r\n" % len(body)
    for name, value in headers or []:
        head += name + b": " + value + b"\r\n"
    return head + b"\r\n" + body


def parse_response(data: bytes) -> RawResponse:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"no complete response: {data[:200]!r}")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2 :]
        body = decoded
    return RawResponse(status, headers, body)


def raw(port: int, data: bytes, timeout: float = 10.0) -> RawResponse:
    """Send ``data`` as is on a new connection; the response, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may answer early and close: read what it said all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return parse_response(received)


def openai_error(body: bytes) -> dict[str, Any]:
    """The ``error`` object of an OpenAI-shaped error body (asserting the shape)."""
    doc = orjson.loads(body)
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    error = doc["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["type"], str) and error["type"], error
    return dict(error)


def tracebacks(gw: Gateway) -> list[str]:
    """The last line of every Python traceback the gateway's processes printed."""
    out, inside = [], False
    for line in list(gw.output):
        if line.startswith("Traceback (most recent call last)"):
            inside = True
        elif inside and not line.startswith((" ", "\t")):
            out.append(line.strip())
            inside = False
    return out


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def reported_usage(usage: Any) -> Usage:
    """The usage an SDK answer reported (it must report one), as the gateway's ``Usage``."""
    assert usage is not None
    return Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
