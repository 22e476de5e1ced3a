"""EventStreamDecoder (extproc/eventstream.py): arbitrary bytes and real frames, any chunking.

Invariants: only :class:`EventStreamError` is ever raised; frames built by the encoder decode
to what was encoded whatever the chunking; a frame with one flipped bit never decodes.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from uuid import UUID

import atheris
from _common import argv, guard

with atheris.instrument_imports():
    from extproc.eventstream import (
        EventStreamDecoder,
        EventStreamError,
        HeaderValue,
        Int8,
        Int16,
        Int64,
        Message,
        encode_message,
    )


def _chunks(fdp: atheris.FuzzedDataProvider, data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        step = fdp.ConsumeIntInRange(1, max(1, len(data) - pos))
        out.append(data[pos : pos + step])
        pos += step
    return out


def _decode(parts: list[bytes]) -> list[Message]:
    decoder = EventStreamDecoder()
    messages: list[Message] = []
    for part in parts:
        messages += decoder.feed(part)
    return messages


def _value(fdp: atheris.FuzzedDataProvider) -> HeaderValue:
    kind = fdp.ConsumeIntInRange(0, 8)
    if kind == 0:
        return bool(fdp.ConsumeBool())
    if kind == 1:
        return Int8(fdp.ConsumeIntInRange(-128, 127))
    if kind == 2:
        return Int16(fdp.ConsumeIntInRange(-(2**15), 2**15 - 1))
    if kind == 3:
        return int(fdp.ConsumeIntInRange(-(2**31), 2**31 - 1))
    if kind == 4:
        return Int64(fdp.ConsumeIntInRange(-(2**63), 2**63 - 1))
    if kind == 5:
        return bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
    if kind == 6:
        return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64)))
    if kind == 7:
        millis = fdp.ConsumeIntInRange(-(2**40), 2**40)
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    return UUID(bytes=fdp.ConsumeBytes(16).ljust(16, b"\0"))


def check(data: bytes) -> None:
    # data[0] even: data[2:] is a raw stream fed in chunks of data[1] + 1 bytes; odd: the rest
    # draws frames for the round trip.
    head = data[:2].ljust(2, b"\0")
    if head[0] % 2 == 0:
        raw = data[2:]
        size = head[1] + 1
        with contextlib.suppress(EventStreamError):
            _decode([raw[i : i + size] for i in range(0, len(raw), size)])
        return
    fdp = atheris.FuzzedDataProvider(data[1:])
    expected: list[Message] = []
    frames = b""
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        headers: dict[str, HeaderValue] = {}
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            name = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(1, 12))
            if 0 < len(name.encode()) < 256:
                headers[name] = _value(fdp)
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
        frames += encode_message(headers, payload)
        expected.append(Message(headers, payload))
    flip = fdp.ConsumeIntInRange(0, len(frames) * 8)
    got = _decode(_chunks(fdp, frames))
    if got != expected:
        raise AssertionError(f"round trip changed the messages: {expected!r} -> {got!r}")
    if flip < len(frames) * 8:
        corrupted = bytearray(frames)
        corrupted[flip // 8] ^= 1 << (flip % 8)
        try:
            decoded = _decode(_chunks(fdp, bytes(corrupted)))
        except EventStreamError:
            return
        if len(decoded) >= len(expected) or decoded != expected[: len(decoded)]:
            raise AssertionError("a corrupted frame was decoded")


def main() -> None:
    atheris.Setup(argv(), guard("eventstream", check))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
