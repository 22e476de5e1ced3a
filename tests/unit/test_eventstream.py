"""The event-stream codec: round trips in arbitrary splits, CRC checks, botocore as an oracle."""

from __future__ import annotations

import itertools
import struct
import zlib
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

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
from tests.fakes.bedrock import RECORDING

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

header_values: st.SearchStrategy[HeaderValue] = st.one_of(
    st.booleans(),
    st.integers(-(2**7), 2**7 - 1).map(Int8),
    st.integers(-(2**15), 2**15 - 1).map(Int16),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.binary(max_size=64),
    st.text(max_size=64),
    # Timestamps travel as milliseconds: generate only what survives the trip.
    st.integers(-(10**12), 10**13).map(lambda ms: _EPOCH + timedelta(milliseconds=ms)),
    st.uuids(),
)
messages = st.builds(
    Message,
    st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda n: len(n.encode()) < 256),
        header_values,
        max_size=6,
    ),
    st.binary(max_size=300),
)


def feed_in_pieces(data: bytes, cuts: list[int]) -> tuple[list[Message], EventStreamDecoder]:
    decoder = EventStreamDecoder()
    decoded: list[Message] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        decoded += decoder.feed(data[start:end])
    return decoded, decoder


@given(st.lists(messages, max_size=5), st.lists(st.integers(min_value=0), max_size=30))
def test_round_trip_across_any_split(originals: list[Message], cuts: list[int]) -> None:
    data = b"".join(encode_message(m.headers, m.payload) for m in originals)
    decoded, decoder = feed_in_pieces(data, cuts)
    assert decoded == originals
    assert decoder.pending == 0


@given(messages, st.data())
def test_any_single_byte_corruption_is_detected(original: Message, data: st.DataObject) -> None:
    frame = bytearray(encode_message(original.headers, original.payload))
    position = data.draw(st.integers(0, len(frame) - 1))
    frame[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(bytes(frame))


def test_recorded_bedrock_stream_one_byte_at_a_time_matches_botocore() -> None:
    data = RECORDING.read_bytes()
    oracle = EventStreamBuffer()
    oracle.add_data(data)
    expected = [(m.headers, m.payload) for m in oracle]
    decoder = EventStreamDecoder()
    decoded = [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])]
    assert [(m.headers, m.payload) for m in decoded] == expected
    assert len(decoded) == 25
    assert decoder.pending == 0


def test_botocore_decodes_what_we_encode() -> None:
    headers: dict[str, HeaderValue] = {
        "true": True,
        "false": False,
        "byte": Int8(-5),
        "short": Int16(-300),
        "integer": 70000,
        "long": Int64(2**40),
        "bytes": b"\x00\xff",
        "string": "h\u00e9llo",
        "timestamp": datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=UTC),
        "uuid": UUID("12345678-1234-5678-1234-567812345678"),
    }
    oracle = EventStreamBuffer()
    oracle.add_data(encode_message(headers, b"{}"))
    (message,) = list(oracle)
    assert message.payload == b"{}"
    assert message.headers == {
        "true": True,
        "false": False,
        "byte": -5,
        "short": -300,
        "integer": 70000,
        "long": 2**40,
        "bytes": b"\x00\xff",
        "string": "h\u00e9llo",
        "timestamp": 1714566615123,
        "uuid": UUID("12345678-1234-5678-1234-567812345678").bytes,
    }


def test_a_partial_message_stays_pending() -> None:
    frame = encode_message({":event-type": "messageStart"}, b'{"role":"assistant"}')
    decoder = EventStreamDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending == len(frame) - 1
    assert [m.payload for m in decoder.feed(frame[-1:])] == [b'{"role":"assistant"}']


def _frame(raw_headers: bytes, payload: bytes = b"", total: int | None = None) -> bytes:
    """A frame with valid CRCs around arbitrary (possibly invalid) content."""
    length = len(raw_headers) + len(payload) + 16 if total is None else total
    lengths = struct.pack(">II", length, len(raw_headers))
    body = lengths + struct.pack(">I", zlib.crc32(lengths)) + raw_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize(
    "raw_headers",
    [
        b"\x01a\x0a",  # unknown value type 10
        b"\x01a\x07\x00\x09abc",  # string shorter than its length
        b"\x05ab",  # name shorter than its length
        b"\x01a\x09\x00\x01",  # truncated uuid
        b"\x01a\x07\x00\x02\xff\xfe",  # string that is not UTF-8
    ],
)
def test_malformed_headers_are_rejected(raw_headers: bytes) -> None:
    with pytest.raises(EventStreamError, match="header"):
        EventStreamDecoder().feed(_frame(raw_headers))


@pytest.mark.parametrize("total", [15, 64 * 1024 * 1024])
def test_impossible_lengths_fail_at_the_prelude(total: int) -> None:
    # Only the prelude is fed: a huge length must fail now, not wait for 64 MiB.
    with pytest.raises(EventStreamError, match="length"):
        EventStreamDecoder().feed(_frame(b"", total=total)[:12])


def test_headers_length_beyond_the_message_is_rejected() -> None:
    lengths = struct.pack(">II", 20, 10)
    with pytest.raises(EventStreamError, match="headers length"):
        EventStreamDecoder().feed(lengths + struct.pack(">I", zlib.crc32(lengths)))


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"a": Int8(200)}, "does not fit"),
        ({"a": datetime(2024, 1, 1)}, "time zone"),
        ({"": "x"}, "name"),
        ({"a": "x" * 70000}, "too long"),
    ],
)
def test_encoder_refuses_what_cannot_be_encoded(
    headers: dict[str, HeaderValue], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        encode_message(headers, b"")
