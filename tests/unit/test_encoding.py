"""extproc/encoding.py: decoding what must be read, bounded by the decoded size."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.encoding import Decoder, codings, decode_request, unsupported_request_coding
from extproc.errors import GatewayError


def test_codings_ignore_identity_and_case() -> None:
    assert codings(None) == [] and codings("identity") == []
    assert codings(" GZIP ") == ["gzip"] and codings("gzip, identity, br") == ["gzip", "br"]


def test_a_whole_body_is_bounded_in_all() -> None:
    body = gzip.compress(b"x" * 1000)
    assert Decoder("gzip", 1000).feed(body, end=True) == b"x" * 1000
    with pytest.raises(OverflowError):
        Decoder("gzip", 999).feed(body, end=True)


def test_a_stream_is_bounded_per_chunk_and_flushed_pieces_decode_at_once() -> None:
    z = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    decoder = Decoder("gzip", 100, whole=False)
    for _ in range(50):  # 5,000 bytes in all, never more than 100 at a time
        piece = z.compress(b"data: 1\n\n" * 10) + z.flush(zlib.Z_SYNC_FLUSH)
        assert decoder.feed(piece, end=False) == b"data: 1\n\n" * 10
    assert decoder.feed(z.flush(), end=True) == b""
    with pytest.raises(OverflowError):
        Decoder("gzip", 100, whole=False).feed(gzip.compress(b"y" * 101), end=False)


@pytest.mark.parametrize(
    "body", [b"not gzip at all", gzip.compress(b"cut short" * 100)[:-12]], ids=["garbage", "cut"]
)
def test_a_corrupt_or_cut_body_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        Decoder("gzip", 10_000).feed(body, end=True)


def test_deflate_is_zlib_wrapped() -> None:
    assert decode_request(zlib.compress(b"{}"), "deflate", 10) == b"{}"


def test_request_codings_the_gateway_cannot_read() -> None:
    assert unsupported_request_coding("gzip") is None
    assert unsupported_request_coding("") is None
    for coding in ("br", "zstd", "compress", "gzip, gzip"):
        refused = unsupported_request_coding(coding)
        assert refused is not None and refused.status == 415


@given(body=st.binary(max_size=512), coding=st.sampled_from(["gzip", "deflate"]))
def test_any_bytes_decode_or_are_a_client_error(body: bytes, coding: str) -> None:
    try:
        decode_request(body, coding, 4096)
    except GatewayError as err:
        assert err.status in (400, 413)
