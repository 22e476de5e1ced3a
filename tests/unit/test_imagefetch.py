"""Image URL fetching: the host and address rules, the image signatures, and what is refused
before any I/O."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from extproc.bedrockmodels import ImageFetch
from extproc.errors import GatewayError
from extproc.imagefetch import (
    MAX_IMAGES,
    _addresses,
    _Image,
    _image_urls,
    address_allowed,
    host_allowed,
    image_type,
)
from tests.fakes.images import PNG

POLICY = ImageFetch(allow=["images.example.com", "*.cdn.example.net"])
LOOPBACK = ImageFetch(allow=["localhost"], allow_networks=["127.0.0.0/8", "::1/128"])  # type: ignore[list-item]


def test_host_rules() -> None:
    assert host_allowed("images.example.com", POLICY.allow)
    assert host_allowed("IMAGES.example.com.", POLICY.allow)
    assert host_allowed("a.b.cdn.example.net", POLICY.allow)
    for host in ("example.com", "evil-images.example.com", "cdn.example.net", "xcdn.example.net"):
        assert not host_allowed(host, POLICY.allow), host


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
        "100.64.0.1", "224.0.0.1", "255.255.255.255", "::1", "fe80::1%eth0", "fc00::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not address_allowed(address, POLICY)


def test_public_addresses_and_listed_networks_pass() -> None:
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"):
        assert address_allowed(address, POLICY)
    assert address_allowed("127.0.0.1", LOOPBACK) and address_allowed("::1", LOOPBACK)
    assert address_allowed("::ffff:127.0.0.1", LOOPBACK)
    assert not address_allowed("10.0.0.1", LOOPBACK)


def test_image_signatures() -> None:
    assert image_type(PNG) == "image/png"
    assert image_type(b"\xff\xd8\xff\xe0....") == "image/jpeg"
    assert image_type(b"GIF89a....") == image_type(b"GIF87a") == "image/gif"
    assert image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert image_type(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert image_type(b"<html>") is None


def _doc(*urls: str) -> dict[str, Any]:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, *parts]}]}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://images.example.com/a.png", "Only https"),
        ("https://evil.example.org/a.png", "'evil.example.org' is not in"),
        ("https://user:pw@images.example.com/a.png", "user info"),
        ("https://images.example.com:99999/a.png", "invalid port"),
    ],
)
def test_urls_are_refused_by_rule_before_any_io(url: str, says: str) -> None:
    with pytest.raises(GatewayError) as raised:
        _image_urls(_doc(url), POLICY)
    assert raised.value.status == 400 and raised.value.code == "image_url_refused"
    assert raised.value.param == "messages[0].content[1].image_url.url"
    assert says in raised.value.message


def test_allowed_urls_are_found_and_counted() -> None:
    found = _image_urls(
        _doc("https://images.example.com/a.png", "data:image/png;base64,AA"), POLICY
    )
    assert [(i.host, i.port, i.param) for i in found] == [
        ("images.example.com", 443, "messages[0].content[1].image_url.url")
    ]
    with pytest.raises(GatewayError, match=f"At most {MAX_IMAGES}"):
        _image_urls(_doc(*["https://images.example.com/a.png"] * (MAX_IMAGES + 1)), POLICY)


def test_a_host_resolving_to_loopback_is_refused_unless_listed() -> None:
    image = _Image({}, "p", "localhost", 443)
    with pytest.raises(GatewayError) as raised:
        asyncio.run(_addresses(image, ImageFetch(allow=["localhost"])))
    assert "non-public address" in raised.value.message and "allow_networks" in raised.value.message
    pinned = asyncio.run(_addresses(image, LOOPBACK))
    assert pinned and all(result["hostname"] == "localhost" for result in pinned)
    assert {result["host"] for result in pinned} <= {"127.0.0.1", "::1"}


def test_the_config_bounds_max_bytes() -> None:
    with pytest.raises(ValueError):
        ImageFetch(allow=["x"], max_bytes=10_000_000)
    assert orjson.dumps(LOOPBACK.model_dump(mode="json"))
