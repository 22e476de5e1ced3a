"""An HTTPS image host for the gateway's image URL fetching: ``/cat.png`` (a 1x1 PNG),
``/big.png`` (a PNG over any small ``max_bytes``), ``/text.png`` (not an image),
``/moved.png`` (a redirect to ``/cat.png``), ``/slow.png`` (the PNG after 2 s). Every request is kept in ``requests``."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.fakes.server import FakeServer

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class ImageHost(FakeServer):
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/cat.png", self._image(PNG))
        app.router.add_get("/big.png", self._image(PNG + b"\0" * 100_000))
        app.router.add_get("/text.png", self._image(b"<html>not an image</html>"))
        app.router.add_get("/moved.png", self._moved)
        app.router.add_get("/slow.png", self._slow)

    @staticmethod
    def _image(data: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=data, content_type="image/png")

        return handler

    @staticmethod
    async def _moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/cat.png")

    @staticmethod
    async def _slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(body=PNG, content_type="image/png")
