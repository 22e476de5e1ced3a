"""A fake Azure OpenAI resource with its own fake Entra ID token endpoint.

    with FakeAzure(deployments={"gpt-4o"}, api_versions={"2024-10-21"}, token_ttl=60) as fake:
        backend: url=fake.url, api_key=fake.api_key
             or: entra={tenant_id: fake.tenant_id, client_id: fake.client_id,
                        client_secret: fake.client_secret, authority: fake.authority}
        fake.token_fetches        # POSTs to the token endpoint so far
        fake.expire_tokens()      # every issued token is now rejected with 401
        fake.requests[-1].query   # {"api-version": "2024-10-21"}

Routes:

- ``POST /{tenant}/oauth2/v2.0/token``: the client-credentials grant. Wrong tenant, client,
  secret, grant type or scope get Entra's error codes (``invalid_client`` is a 401).
- ``POST /openai/deployments/{deployment}/chat/completions|completions|embeddings|audio/speech
  |images/generations?api-version=V``: no
  ``api-version`` -> 404, one not in ``api_versions`` -> 400, unknown deployment -> 404
  ``DeploymentNotFound``; the body's ``model`` is ignored, as Azure does.
- ``POST /openai/v1/chat/completions|embeddings|responses|audio/speech|images/generations``:
  no dated ``api-version`` (a 400;
  ``preview`` and ``latest`` are taken); the body's ``model`` names the deployment. The
  Responses API exists on this surface only.

Credentials: ``api-key: <api_key>`` or ``Authorization: Bearer <token from the endpoint>``,
each failure with Azure's own 401 body (the bearer one is not even under ``error``).
Answers are :mod:`tests.fakes.openai`'s, plus Azure's ``prompt_filter_results`` and
``content_filter_results`` (streams start with a ``choices: []`` chunk carrying the prompt
filter results, like Azure's). A prompt containing :data:`CONTENT_FILTER_MARKER` is refused
with Azure's 400 ``content_filter`` error.
"""

from __future__ import annotations

import itertools
import ssl
import threading
import time
from collections.abc import Iterable
from urllib.parse import parse_qsl

from aiohttp import web

from extproc.config import DEFAULT_AZURE_API_VERSION
from tests.fakes import audio, completions, imagegen
from tests.fakes.openai import FakeOpenAI, Json, Reply, json_response, text_of
from tests.fakes.server import DEFAULT_CHUNK_DELAY, Reject

CONTENT_FILTER_MARKER = "[[azure-content-filter]]"
SCOPE = "https://cognitiveservices.azure.com/.default"

_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_RESULTS: Json = {
    "hate": _SAFE,
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
PROMPT_FILTER_RESULTS: list[Json] = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            **CONTENT_FILTER_RESULTS,
            "jailbreak": {"filtered": False, "detected": False},
        },
    }
]
CONTENT_FILTER_ERROR: Json = {
    "error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content"
        " management policy. Please modify your prompt and retry. To learn more about our content"
        " filtering policies please read our documentation:"
        " https://go.microsoft.com/fwlink/?linkid=2198766",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {
                **PROMPT_FILTER_RESULTS[0]["content_filter_results"],
                "violence": {"filtered": True, "severity": "medium"},
            },
        },
    }
}
BAD_BEARER: Json = {
    "statusCode": 401,
    "message": "Unauthorized. Access token is missing, invalid, audience is incorrect"
    " (https://cognitiveservices.azure.com), or have expired.",
}


def azure_error(status: int, code: str, message: str) -> Reject:
    return Reject(status, {"error": {"code": code, "message": message}})


def entra_error(status: int, error: str, aadsts: int, description: str) -> Reject:
    return Reject(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{aadsts}: {description}",
            "error_codes": [aadsts],
            "error_uri": f"https://login.microsoftonline.com/error?code={aadsts}",
        },
    )


class FakeAzure(FakeOpenAI):
    def __init__(
        self,
        *,
        api_key: str | None = "azure-test-key",
        deployments: Iterable[str] | None = None,  # None: any deployment name exists
        api_versions: Iterable[str] = (DEFAULT_AZURE_API_VERSION,),
        tenant_id: str = "test-tenant",
        client_id: str = "test-client",
        client_secret: str = "test-client-secret",
        token_ttl: int = 3600,
        ssl_context: ssl.SSLContext | None = None,
        chunk_delay: float = DEFAULT_CHUNK_DELAY,
    ) -> None:
        super().__init__(prefix="/openai/v1", ssl_context=ssl_context, chunk_delay=chunk_delay)
        self.api_key = api_key
        self.deployments = None if deployments is None else set(deployments)
        self.api_versions = set(api_versions)
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._tokens_lock = threading.Lock()
        self._serial = itertools.count(1)

    @property
    def token_fetches(self) -> int:
        """POSTs to the token endpoint so far, failed and faulted ones included."""
        path = self.token_path
        return sum(1 for r in self.requests if r.method == "POST" and r.path == path)

    @property
    def authority(self) -> str:
        return self.url

    @property
    def token_path(self) -> str:
        return f"/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def token_url(self) -> str:
        return self.url + self.token_path

    def issue_token(self, ttl: float | None = None) -> str:
        """A valid bearer token, as the token endpoint would issue (not counted as a fetch)."""
        token = f"fake-entra-token-{next(self._serial)}"
        with self._tokens_lock:
            self._tokens[token] = time.monotonic() + (self.token_ttl if ttl is None else ttl)
        return token

    def expire_tokens(self) -> None:
        with self._tokens_lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)  # the v1 surface
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._embeddings)
        completions.add_routes(self, app, "/openai/deployments/{deployment}/completions")
        audio.add_routes(self, app, "/openai/deployments/{deployment}")
        imagegen.add_routes(self, app, "/openai/deployments/{deployment}")

    def fault_body(self, status: int) -> bytes:
        return azure_error(status, str(status), f"Injected fault {status}.").body

    def authorize(self, request: web.Request) -> None:
        key = request.headers.get("api-key")
        if key is not None:
            if self.api_key is None or key != self.api_key:
                raise azure_error(
                    401,
                    "401",
                    "Access denied due to invalid subscription key or wrong API endpoint. Make"
                    " sure to provide a valid key for an active subscription and use a correct"
                    " regional API endpoint for your resource.",
                )
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            with self._tokens_lock:
                expires = self._tokens.get(token, 0.0)
            if time.monotonic() >= expires:
                raise Reject(401, BAD_BEARER)
            return
        raise azure_error(
            401,
            "401",
            "Access denied due to missing subscription key. Make sure to include subscription"
            " key when making requests to an API.",
        )

    def prepare(self, request: web.Request, body: Json) -> Json:
        deployment = request.match_info.get("deployment")
        if deployment is not None:  # the deployments surface
            version = request.query.get("api-version")
            if version is None:
                raise azure_error(404, "404", "Resource not found")
            if version not in self.api_versions:
                raise azure_error(400, "BadRequest", "API version not supported")
            body = {**body, "model": deployment}
        else:
            # The v1 surface takes no dated api-version (only "preview" or "latest").
            version = request.query.get("api-version")
            if version not in (None, "preview", "latest"):
                raise azure_error(400, "BadRequest", "API version not supported")
            body = super().prepare(request, body)
        if self.deployments is not None and body["model"] not in self.deployments:
            raise azure_error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the"
                " deployment within the last 5 minutes, please wait a moment and try again.",
            )
        messages = body.get("messages")
        if isinstance(messages, list) and any(
            isinstance(m, dict) and CONTENT_FILTER_MARKER in text_of(m.get("content"))
            for m in messages
        ):
            raise Reject(400, CONTENT_FILTER_ERROR)
        return body

    def completion(self, reply: Reply) -> Json:
        doc = super().completion(reply)
        for choice in doc["choices"]:
            choice["content_filter_results"] = CONTENT_FILTER_RESULTS
        return {**doc, "prompt_filter_results": PROMPT_FILTER_RESULTS}

    def completion_chunks(self, reply: Reply, include_usage: bool) -> list[Json]:
        chunks = super().completion_chunks(reply, include_usage)
        for chunk in chunks:
            for choice in chunk["choices"]:
                choice["content_filter_results"] = (
                    CONTENT_FILTER_RESULTS if choice["delta"].get("content") else {}
                )
        preface = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTER_RESULTS,
        }
        return [preface, *chunks]

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = dict(parse_qsl(await request.text()))
        if request.match_info["tenant"] != self.tenant_id:
            raise entra_error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{request.match_info['tenant']}' not found.",
            )
        if form.get("grant_type") != "client_credentials":
            raise entra_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        if form.get("client_id") != self.client_id:
            raise entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found in the"
                " directory.",
            )
        if form.get("client_secret") != self.client_secret:
            raise entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is"
                f" the client secret value, not the client secret ID, for a secret added to app"
                f" '{self.client_id}'.",
            )
        if form.get("scope") != SCOPE:
            raise entra_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form.get('scope')} is not valid. Client credential"
                " flows must have a scope value with /.default suffixed to the resource"
                " identifier (application ID URI).",
            )
        token = self.issue_token()
        return json_response(
            {
                "token_type": "Bearer",
                "expires_in": self.token_ttl,
                "ext_expires_in": self.token_ttl,
                "access_token": token,
            }
        )
