"""A sidecar worker told to stop (SIGTERM) finishes the streams it holds.

In `ai-gateway serve` (the compose deployment) the workers and Envoy get SIGTERM together, and
Envoy's drain keeps open requests going for `http.drain_time`: their ext_proc streams must
outlive the signal for as long.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx2
import orjson

from tests.fakes.openai import FakeOpenAI
from tests.harness import Gateway
from tests.integration.probes import wait_for, workers

WORDS = 14
DELAY = 0.5  # seconds between events: the stream lasts about 7 s, past any fixed short grace


def test_a_stopping_worker_finishes_its_open_stream() -> None:
    with FakeOpenAI(chunk_delay=DELAY) as fake:
        config = {
            "backends": {"oa": {"schema": "openai", "url": f"{fake.url}/v1"}},
            "models": [{"name": "m", "backends": [{"backend": "oa"}]}],
            "http": {"drain_time": "20s"},
        }
        with Gateway(config, workers=1) as gw:
            worker = workers(gw)["worker-0"]
            text = " ".join(f"w{i}" for i in range(WORDS))
            body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": text}]}
            first = threading.Event()
            out: dict[str, object] = {}

            def read() -> None:
                data = b""
                with httpx2.stream(
                    "POST", f"{gw.url}/v1/chat/completions", json=body, timeout=30
                ) as response:
                    for part in response.iter_raw():
                        first.set()
                        data += part
                out["status"], out["body"] = response.status_code, data

            reader = threading.Thread(target=read)
            reader.start()
            assert first.wait(10), "no first chunk"
            started = time.monotonic()
            os.kill(worker, signal.SIGTERM)
            reader.join(30)
            assert out.get("status") == 200
            data = out["body"]
            assert isinstance(data, bytes) and data.endswith(b"data: [DONE]\n\n"), data[-200:]
            assert time.monotonic() - started > 5  # the stream really outlived the signal
            content = "".join(
                (choice["delta"].get("content") or "")
                for event in data.split(b"\n\n")
                if event.startswith(b"data: {")
                for choice in orjson.loads(event[6:])["choices"]
            )
            assert content == f"Echo: {text}"  # every event arrived
            # The worker exits once its streams are done; the supervisor starts a new one.
            wait_for(lambda: workers(gw).get("worker-0") not in (None, worker), what="restart")
