"""Shared by the atheris targets: repo on the path, the crash policy, known bugs.

A target's ``check`` raises for what must never happen (an exception other than the ones the
code under test documents, or a broken invariant). libFuzzer then writes the input to
``fuzz/crashes/<target>/`` and stops. Bugs already reported (each with a strict-xfail test in
``tests/``) are listed in :data:`KNOWN`: an input that hits one is saved once per signature as
``known-*`` in the same directory and the run goes on, so a long run keeps exploring.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.vocabulary import WORDS, bug_signature  # noqa: E402 - needs the repo on the path

# signature (exception type @ innermost extproc frame) -> the test that pins it down.
KNOWN: dict[str, str] = {}  # none open: every bug the runs and properties found is fixed

_seen: set[str] = set()


def argv() -> list[str]:
    """``sys.argv`` for libFuzzer. A merge re-runs ``argv[0]`` in child processes, which must
    then be executable: ``run.sh merge`` points ``FUZZ_ARGV0`` at a wrapper script."""
    return [os.environ.get("FUZZ_ARGV0", sys.argv[0]), *sys.argv[1:]]


def guard(target: str, check: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``check`` with known bugs recorded instead of raised."""
    crashes = FUZZ / "crashes" / target

    def run(data: bytes) -> None:
        try:
            check(data)
        except Exception as exc:
            sig = bug_signature(exc)
            if sig not in KNOWN:
                raise
            if sig not in _seen and os.environ.get("FUZZ_KEEP_KNOWN", "1") == "1":
                _seen.add(sig)
                crashes.mkdir(parents=True, exist_ok=True)
                name = sig.replace("@", "-").replace(":", "-")
                digest = hashlib.sha1(data).hexdigest()[:12]  # noqa: S324 - a file name
                path = crashes / f"known-{name}-{digest}"
                if not any(crashes.glob(f"known-{name}-*")):
                    path.write_bytes(data)

    return run


def json_value(fdp: Any, depth: int = 0) -> object:
    """A JSON document drawn from ``fdp`` (an atheris FuzzedDataProvider)."""
    consume_int = fdp.ConsumeIntInRange
    kind = consume_int(0, 9 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return consume_int(-(2**63), 2**63 - 1) if fdp.ConsumeBool() else consume_int(-2, 300)
    if kind == 3:
        value = fdp.ConsumeRegularFloat()
        return value if value == value and abs(value) != float("inf") else 0.5
    if kind in (4, 5):
        if fdp.ConsumeBool():
            return WORDS[consume_int(0, len(WORDS) - 1)]
        return fdp.ConsumeUnicodeNoSurrogates(consume_int(0, 24))
    if kind in (6, 7):
        return [json_value(fdp, depth + 1) for _ in range(consume_int(0, 4))]
    out: dict[str, object] = {}
    for _ in range(consume_int(0, 6)):
        key = WORDS[consume_int(0, len(WORDS) - 1)]
        out[key] = json_value(fdp, depth + 1)
    return out


def json_object(fdp: Any) -> bytes:
    """A JSON object document, as bytes; sometimes (1 in 8) raw bytes instead."""
    import orjson

    if fdp.ConsumeIntInRange(0, 7) == 0:
        return bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512)))
    doc = json_value(fdp)
    if not isinstance(doc, dict):
        doc = {"messages": doc}
    return orjson.dumps(doc)


def chunks(data: bytes, width: int = 2) -> list[bytes]:
    """An input read as a stream cut into pieces: ``data[0]`` says how many cuts (up to 8),
    then ``width`` bytes per cut (big-endian offsets, taken modulo the stream's length), then
    the stream. The pieces join back to the stream."""
    count = data[0] % 9 if data else 0
    head, stream = data[1 : 1 + width * count], data[1 + width * count :]
    cuts = [int.from_bytes(head[i : i + width], "big") for i in range(0, len(head), width)]
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]
