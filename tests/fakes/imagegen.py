"""Image generation (``POST {prefix}/images/generations``) for the fake OpenAI and Azure.

Checked as OpenAI checks it: ``model`` and ``prompt`` (a string) required; ``n`` 1-10 (1 for
``dall-e-3``); ``size`` one its model makes (``dall-e-2``: 256x256, 512x512, 1024x1024;
``dall-e-3``: 1024x1024, 1792x1024, 1024x1792; ``gpt-image-*``: 1024x1024, 1536x1024,
1024x1536, auto); ``response_format`` ``url`` or ``b64_json`` (DALL-E; gpt-image answers in
base64 always and refuses it). The answer is ``{"created", "data": [...]}``, each image's bytes
derived from the prompt and its index; gpt-image adds its token ``usage`` (``input_tokens``:
one per word of the prompt; ``output_tokens``: :data:`OUTPUT_TOKENS` per image of its
``quality``), DALL-E reports none, as OpenAI does. Edits (``POST {prefix}/images/edits``)
take a multipart form with one or more PNG ``image`` files (``image[]`` too) and the same
fields, and answer the same way.
"""

from __future__ import annotations

import base64
import hashlib
from functools import partial

from aiohttp import web

from tests.fakes.audio import read_form
from tests.fakes.openai import CREATED, FakeOpenAI, Json, count_tokens, json_response, openai_error

SIZES = {
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
    "gpt-image": {"1024x1024", "1536x1024", "1024x1536", "auto"},
}
OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}  # a 1024x1024 image
IMAGE_BYTES = 3000  # of each fake image


def image_bytes(prompt: str, index: int) -> bytes:
    seed = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    return (b"\x89PNG\r\n\x1a\n" + seed * (IMAGE_BYTES // len(seed) + 1))[:IMAGE_BYTES]


def _family(model: str) -> str:
    if model.startswith("gpt-image"):
        return "gpt-image"
    return "dall-e-3" if model == "dall-e-3" else "dall-e-2"


def generate(body: Json) -> Json:
    """The answer to ``body``, or OpenAI's 400."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise openai_error(400, "Missing required parameter: 'prompt'.", "prompt")
    family = _family(str(body["model"]))
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= (1 if family == "dall-e-3" else 10):
        raise openai_error(400, f"Invalid value for 'n': {n!r}.", "n")
    size = body.get("size", "1024x1024")
    if size not in SIZES[family]:
        raise openai_error(400, f"Invalid value for 'size': {size!r}.", "size")
    fmt = body.get("response_format")
    if family == "gpt-image" and fmt is not None:
        raise openai_error(
            400, "Unknown parameter: 'response_format'.", "response_format", "unknown_parameter"
        )
    if fmt not in (None, "url", "b64_json"):
        raise openai_error(400, f"Invalid value for 'response_format': {fmt!r}.", "response_format")
    quality = body.get("quality", "auto")
    data: list[Json] = []
    for i in range(n):
        if fmt == "url":
            data.append({"url": f"https://images.example/{i}.png"})
        else:
            data.append({"b64_json": base64.b64encode(image_bytes(prompt, i)).decode()})
    doc: Json = {"created": CREATED, "data": data}
    if family == "gpt-image":
        input_tokens = count_tokens(prompt)
        output_tokens = OUTPUT_TOKENS.get(quality, OUTPUT_TOKENS["auto"]) * n
        doc["usage"] = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "input_tokens_details": {"text_tokens": input_tokens, "image_tokens": 0},
        }
    return doc


def add_routes(fake: FakeOpenAI, app: web.Application, prefix: str | None = None) -> None:
    """``POST {prefix}/images/generations|edits`` (``prefix``: Azure's deployment path)."""
    app.router.add_post(f"{prefix or fake.prefix}/images/generations", partial(_generate, fake))
    app.router.add_post(f"{prefix or fake.prefix}/images/edits", partial(_edit, fake))


async def _edit(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    body, files = await read_form(fake, request)
    images = files.get("image") or files.get("image[]")
    if not images:
        raise openai_error(400, "Missing required parameter: 'image'.", "image")
    if not all(image.startswith(b"\x89PNG") for image in images):
        raise openai_error(400, "Invalid image: a PNG file is expected.", "image", "invalid_image")
    if isinstance(body.get("n"), str) and body["n"].isdigit():
        body["n"] = int(body["n"])  # a form's fields are text
    return json_response(generate(body))


async def _generate(fake: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    return json_response(generate(await fake.request_json(request)))
