"""The control plane (rendering Envoy's config, the CLI, the supervisor) never loads the data
plane: `ai-gateway render` / `check` stay fast and cannot break on a data-plane dependency, and
the names both sides share have one home, extproc/wire.py."""

from __future__ import annotations

import subprocess
import sys

import orjson

CONTROL_PLANE = (
    "extproc.render",
    "extproc.cli",
    "extproc.supervisor",
    "extproc.kubernetes",
    "extproc.podstop",
)
# Libraries and modules only the sidecar's workers need.
DATA_PLANE = (
    "grpc",
    "envoy",
    "opentelemetry",
    "aiohttp",
    "botocore",
    "tiktoken",
    "cryptography",
    "extproc.server",
    "extproc.router",
    "extproc.upstream",
    "extproc.accesslog",
    "extproc.telemetry",
    "extproc.translate",
    "extproc.auth",
)


def test_the_control_plane_loads_no_data_plane_module() -> None:
    # A fresh interpreter: this process has imported everything already.
    code = (
        "import sys, json\n"
        + "".join(f"import {m}\n" for m in CONTROL_PLANE)
        + "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = orjson.loads(out.stdout)
    reached = [m for m in loaded if any(m == d or m.startswith(d + ".") for d in DATA_PLANE)]
    assert reached == [], reached
