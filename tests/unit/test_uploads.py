"""Per-client bookkeeping of uploads in progress (extproc/uploads.py), without gRPC."""

from __future__ import annotations

import pytest

from extproc.config import HTTPLimits
from extproc.errors import GatewayError
from extproc.uploads import TOO_MANY_UPLOADS, Uploads, client_address, uploader

MIB = 1024 * 1024


def _uploads(count: int = 2, size: int = 10 * MIB, largest: int = 8 * MIB) -> Uploads:
    return Uploads(
        HTTPLimits(
            uploads_per_client=count, upload_bytes_per_client=size, max_request_bytes=largest
        )
    )


def test_over_the_count_is_a_429_naming_the_bound() -> None:
    uploads = _uploads(count=2)
    uploads.admit("a", "10")
    uploads.admit("a", "10")
    with pytest.raises(GatewayError) as refused:
        uploads.admit("a", "10")
    err = refused.value
    assert (err.status, err.code, err.type) == (429, TOO_MANY_UPLOADS, "rate_limit_error")
    assert "2 uploads" in err.message
    uploads.admit("b", "10")  # another client is not affected


def test_over_the_bytes_is_refused_and_an_ended_upload_frees_its_place() -> None:
    uploads = _uploads(count=10, size=10 * MIB)
    first = uploads.upload()
    first.begin("a", str(6 * MIB))
    with pytest.raises(GatewayError):
        uploads.upload().begin("a", str(5 * MIB))
    assert uploads.in_progress("a") == (1, 6 * MIB)  # the refused one never counted
    first.end()
    first.end()  # idempotent: the body arrived, then the stream ended
    assert uploads.in_progress("a") == (0, 0)
    uploads.upload().begin("a", str(5 * MIB))
    assert uploads.in_progress("a") == (1, 5 * MIB)


@pytest.mark.parametrize("header", [None, "", "chunked", "-1", str(100 * MIB)])
def test_an_unknown_or_oversized_length_counts_as_the_largest_body(header: str | None) -> None:
    uploads = _uploads(size=20 * MIB, largest=8 * MIB)
    uploads.admit("a", header)
    assert uploads.in_progress("a") == (1, 8 * MIB)


def test_zero_turns_a_bound_off() -> None:
    uploads = _uploads(count=0, size=0)
    assert not uploads.enabled
    for _ in range(100):
        uploads.upload().begin("a", str(8 * MIB))
    assert uploads.in_progress("a") == (0, 0)


@pytest.mark.parametrize(
    ("address", "ip"),
    [("10.1.2.3:5678", "10.1.2.3"), ("[::1]:80", "::1"), ("", ""), ("pipe", "pipe")],
)
def test_client_address_drops_the_port(address: str, ip: str) -> None:
    assert client_address(address) == ip


def test_keys_and_addresses_never_share_a_count() -> None:
    assert uploader("10.0.0.1", "") != uploader(None, "10.0.0.1:80")
