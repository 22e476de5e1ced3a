"""Image URLs of a chat request, downloaded by the sidecar for a backend that takes images only as
bytes (Bedrock's Converse) and opted in (``fetch_image_urls``), before the request is translated.

The translators stay pure: this step rewrites each allowed ``https`` image URL into the ``data:``
URI of the downloaded image, and the translator reads that as if the client had sent it.

What a URL must pass, in this order; a refusal is a 400 naming the rule, and nothing of the
request is fetched until every URL passed the rules that need no I/O:

1. ``https``, no user info, and a host in ``allow`` (exact, or ``*.suffix``);
2. every address the host resolves to is a public one, or in ``allow_networks`` (private,
   loopback, link-local, multicast, reserved addresses otherwise refused);
3. the connection goes to one of those checked addresses (a resolver pinned to them), so a DNS
   answer that changes between check and connect cannot lead elsewhere; no redirect is
   followed; the certificate is verified for the host name;
4. a 200 of at most ``max_bytes``, within ``timeout`` for all the request's images;
5. the bytes are PNG, JPEG, GIF or WebP by their signature.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from extproc.attempt import Attempt
from extproc.bedrockmodels import ImageFetch
from extproc.config import AWSBedrockBackend, GatewayConfig
from extproc.errors import GatewayError, bad_request
from extproc.translate import dump_json, json_object

# Converse takes at most 20 images per request.
MAX_IMAGES = 20
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_IDENTITY = {"accept-encoding": "identity"}  # the signature is read from the bytes as sent
_REFUSED = "image_url_refused"
_UNREADABLE = "image_url_unreadable"


@dataclass(frozen=True, slots=True)
class _Image:
    part: dict[str, Any]  # the image_url object whose url is replaced
    param: str
    host: str
    port: int


def host_allowed(host: str, allow: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    for rule in allow:
        rule = rule.lower()
        if host == rule or (rule.startswith("*.") and host.endswith(rule[1:])):
            return True
    return False


def address_allowed(address: str, policy: ImageFetch) -> bool:
    """A public address, or one in ``allow_networks``."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id names no network
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    if any(ip in network for network in policy.allow_networks):
        return True
    return ip.is_global and not ip.is_multicast


def image_type(data: bytes) -> str | None:
    """The MIME type the bytes' signature shows, among Converse's image formats."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in _SIGNATURES if data.startswith(magic)), None)


def _refused(message: str, param: str) -> GatewayError:
    return bad_request(message, param, _REFUSED)


def _checked_url(url: str, param: str, policy: ImageFetch) -> tuple[str, int]:
    """(host, port) of a URL the rules allow; the 400 naming the rule otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise _refused("Only https image URLs are fetched by this backend.", param)
    try:
        port = parts.port or 443
    except ValueError:
        raise _refused("The image URL has an invalid port.", param) from None
    if parts.username is not None:
        raise _refused("Image URLs with user info are not fetched.", param)
    host = parts.hostname or ""
    if not host_allowed(host, policy.allow):
        raise _refused(
            f"Image host {host!r} is not in this backend's fetch_image_urls.allow list.", param
        )
    return host, port


class _Pinned(AbstractResolver):
    """Answers the connector with the addresses already checked, and nothing else."""

    def __init__(self, addresses: list[ResolveResult]) -> None:
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return self._addresses

    async def close(self) -> None:
        return None


async def _addresses(image: _Image, policy: ImageFetch) -> list[ResolveResult]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(image.host, image.port, type=socket.SOCK_STREAM)
    except OSError:
        raise bad_request(
            f"Image host {image.host!r} could not be resolved.", image.param, _UNREADABLE
        ) from None
    results: list[ResolveResult] = []
    for family, _, proto, _, sockaddr in infos:
        address = str(sockaddr[0])
        if not address_allowed(address, policy):
            raise _refused(
                f"Image host {image.host!r} resolves to {address}, a non-public address not in"
                " this backend's fetch_image_urls.allow_networks.",
                image.param,
            )
        results.append(
            ResolveResult(
                hostname=image.host,
                host=address,
                port=image.port,
                family=family,
                proto=proto,
                flags=socket.AI_NUMERICHOST,
            )
        )
    return results


async def _download(image: _Image, url: str, policy: ImageFetch, tls: ssl.SSLContext) -> str:
    """The data: URI of one checked image."""
    connector = aiohttp.TCPConnector(
        resolver=_Pinned(await _addresses(image, policy)), use_dns_cache=False, ssl=tls
    )
    try:
        async with (
            aiohttp.ClientSession(connector=connector, auto_decompress=False) as session,
            session.get(url, allow_redirects=False, headers=_IDENTITY) as response,
        ):
            if response.status != 200:
                raise bad_request(
                    f"The image URL answered {response.status} (redirects are not followed).",
                    image.param,
                    _UNREADABLE,
                )
            data = bytearray()
            too_large = (response.content_length or 0) > policy.max_bytes
            if not too_large:
                async for chunk in response.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > policy.max_bytes:
                        too_large = True
                        break
            if too_large:
                raise bad_request(
                    f"The image is larger than fetch_image_urls.max_bytes ({policy.max_bytes}).",
                    image.param,
                    _UNREADABLE,
                )
    except aiohttp.ClientError as exc:
        raise bad_request(
            f"The image could not be downloaded from {image.host!r}: {type(exc).__name__}.",
            image.param,
            _UNREADABLE,
        ) from None
    mime = image_type(bytes(data))
    if mime is None:
        raise bad_request(
            "The downloaded image is not PNG, JPEG, GIF or WebP.", image.param, _UNREADABLE
        )
    return f"data:{mime};base64,{base64.b64encode(bytes(data)).decode()}"


def _image_urls(doc: dict[str, Any], policy: ImageFetch) -> list[_Image]:
    """The request's http(s) image URLs, each checked against the rules that need no I/O."""
    found: list[_Image] = []
    messages = doc.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            image = part.get("image_url") if isinstance(part, dict) else None
            url = image.get("url") if isinstance(image, dict) else None
            if isinstance(image, dict) and isinstance(url, str) and url.startswith("http"):
                param = f"messages[{i}].content[{j}].image_url.url"
                found.append(_Image(image, param, *_checked_url(url, param, policy)))
    if len(found) > MAX_IMAGES:
        raise _refused(f"At most {MAX_IMAGES} image URLs per request.", found[MAX_IMAGES].param)
    return found


class ImageFetcher:
    """Inlines the image URLs of chat request bodies for the backends that fetch them."""

    def __init__(self, config: GatewayConfig) -> None:
        self._policies = {
            name: backend.fetch_image_urls
            for name, backend in config.backends.items()
            if isinstance(backend, AWSBedrockBackend) and backend.fetch_image_urls is not None
        }
        # Envoy fails the message after sidecar.message_timeout: give up a little earlier.
        self._cap = config.sidecar.message_timeout * 0.9
        # Made at start: a ca_file that cannot be read stops the worker, not a request.
        self._tls = {
            name: ssl.create_default_context(cafile=policy.ca_file)
            for name, policy in self._policies.items()
        }

    async def inline(self, attempt: Attempt, body: bytes) -> bytes:
        """``body`` with its allowed image URLs replaced by the images' data: URIs."""
        policy = self._policies.get(attempt.backend.name)
        if policy is None or attempt.ctx.endpoint != "chat" or b"http" not in body:
            return body  # no URL: no parse
        doc = json_object(body)
        images = _image_urls(doc, policy)
        if not images:
            return body
        tls = self._tls[attempt.backend.name]
        timeout = min(policy.timeout, self._cap)
        try:
            try:
                # A task group: the first refusal stops the other downloads.
                async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
                    tasks = [
                        group.create_task(_download(image, image.part["url"], policy, tls))
                        for image in images
                    ]
            except* GatewayError as refused:
                raise refused.exceptions[0] from None
        except TimeoutError:
            raise bad_request(
                f"The images were not downloaded within fetch_image_urls.timeout ({timeout:g}s).",
                images[0].param,
                _UNREADABLE,
            ) from None
        for image, task in zip(images, tasks, strict=True):
            image.part["url"] = task.result()
        return dump_json(doc)
