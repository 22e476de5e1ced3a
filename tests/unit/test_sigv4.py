"""SigV4 for Bedrock: signed by our Auth, checked by the fake's verifier and by a reference
signer written from the AWS specification (so botocore is not graded by botocore alone)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.credentials import RefreshableCredentials
from botocore.session import Session

from extproc.auth.sigv4 import SigV4
from extproc.config import AWSBedrockBackend
from extproc.errors import GatewayError
from extproc.translate import UpstreamRequest
from tests.fakes.bedrock import FakeBedrock, SignatureError, verify_sigv4

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEJr//////////session+token/="
REGION = "eu-west-3"
HOST = "bedrock-runtime.eu-west-3.amazonaws.com"
MODEL_PATH = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
BODY = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'


def backend(**keys: str) -> AWSBedrockBackend:
    return AWSBedrockBackend.model_validate({"schema": "aws_bedrock", "region": REGION, **keys})


def static_auth(token: str | None = TOKEN) -> SigV4:
    keys = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    return SigV4(backend(**keys, **({"session_token": token} if token else {})))


def sign(
    auth: SigV4, path: str = MODEL_PATH, body: bytes = BODY, host: str = HOST
) -> UpstreamRequest:
    request = UpstreamRequest(path=path, body=body, headers={"content-type": "application/json"})
    asyncio.run(auth.apply(request, host))
    return request


def verify(
    request: UpstreamRequest,
    *,
    host: str = HOST,
    path: str | None = None,
    body: bytes | None = None,
    token: str | None = TOKEN,
    **overrides: Any,
) -> SignatureError | None:
    """Check ``request`` as AWS would receive it (optionally altered on the way)."""
    headers = {**request.headers, "host": host}
    options: dict[str, Any] = {
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "session_token": token,
        "region": REGION,
        **overrides,
    }
    return verify_sigv4(
        "POST",
        request.path if path is None else path,
        headers,
        (request.body or b"") if body is None else body,
        **options,
    )


def reference_signature(request: UpstreamRequest, host: str) -> str:
    """SigV4 from the AWS documentation, for a non-S3 service: the canonical URI is the path
    URI-encoded once more (so an encoded ``%3A`` becomes ``%253A``)."""
    amz_date = request.headers["x-amz-date"]
    signed = {"host": host, "x-amz-date": amz_date}
    if "x-amz-security-token" in request.headers:
        signed["x-amz-security-token"] = request.headers["x-amz-security-token"]
    canonical_uri = re.sub(r"%", "%25", request.path)
    canonical = "\n".join(
        [
            "POST",
            canonical_uri,
            "",
            "".join(f"{name}:{value}\n" for name, value in sorted(signed.items())),
            ";".join(sorted(signed)),
            hashlib.sha256(request.body or b"").hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{REGION}/bedrock/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{SECRET_KEY}".encode()
    for part in (amz_date[:8], REGION, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_signature_matches_the_specification_for_an_encoded_model_id() -> None:
    request = sign(static_auth())
    authorization = request.headers["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert f"/{REGION}/bedrock/aws4_request" in authorization  # signing name bedrock
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in authorization
    assert authorization.endswith(f"Signature={reference_signature(request, HOST)}")
    assert request.headers["x-amz-security-token"] == TOKEN
    assert "x-amz-content-sha256" not in request.headers
    assert request.headers["content-type"] == "application/json"  # left alone
    assert verify(request) is None


def test_without_session_token_no_token_header() -> None:
    request = sign(static_auth(token=None))
    assert "x-amz-security-token" not in request.headers
    assert request.headers["authorization"].endswith(
        f"Signature={reference_signature(request, HOST)}"
    )
    assert verify(request, token=None) is None


@pytest.mark.parametrize("host", ["127.0.0.1:8443", "bedrock.internal:443", "[::1]:9000"])
def test_host_is_signed_exactly_as_given_port_included(host: str) -> None:
    request = sign(static_auth(), host=host)
    assert request.headers["authorization"].endswith(
        f"Signature={reference_signature(request, host)}"
    )
    assert verify(request, host=host) is None
    assert verify(request, host=host.rsplit(":", 1)[0]) is not None


def test_inference_profile_arn_path() -> None:
    path = (
        "/model/arn%3Aaws%3Abedrock%3Aeu-west-3%3A123456789012%3Ainference-profile%2Feu.x/converse"
    )
    request = sign(static_auth(), path=path)
    assert request.headers["authorization"].endswith(
        f"Signature={reference_signature(request, HOST)}"
    )
    assert verify(request) is None


@pytest.mark.parametrize(
    ("alteration", "kind"),
    [
        ({"body": BODY + b" "}, "InvalidSignatureException"),
        ({"path": MODEL_PATH.replace("%3A", ":")}, "InvalidSignatureException"),
        ({"path": MODEL_PATH.replace("converse", "converse-stream")}, "InvalidSignatureException"),
        ({"host": "bedrock-runtime.us-east-1.amazonaws.com"}, "InvalidSignatureException"),
        ({"secret_key": "another secret"}, "InvalidSignatureException"),
        ({"access_key": "AKIDOTHER"}, "UnrecognizedClientException"),
        ({"token": "another token"}, "UnrecognizedClientException"),
        ({"region": "us-east-1"}, "InvalidSignatureException"),
        ({"service": "bedrock-runtime"}, "InvalidSignatureException"),
        # An hour, not just past the 5-minute limit: the parameter is computed at collection
        # time, possibly minutes before the test runs.
        ({"now": datetime.now(UTC) + timedelta(hours=1)}, "InvalidSignatureException"),
    ],
)
def test_verifier_refuses_what_aws_refuses(alteration: dict[str, Any], kind: str) -> None:
    request = sign(static_auth())
    problem = verify(request, **alteration)
    assert problem is not None
    assert problem.kind == kind


def test_verifier_requires_a_signature() -> None:
    request = UpstreamRequest(path=MODEL_PATH, body=BODY)
    problem = verify(request)
    assert problem == SignatureError(
        "MissingAuthenticationTokenException", "Missing Authentication Token"
    )


def test_signed_request_passes_the_fake_and_a_tampered_one_gets_aws_403() -> None:
    with FakeBedrock(session_token=TOKEN) as fake:
        auth = SigV4(
            AWSBedrockBackend.model_validate(
                {
                    "schema": "aws_bedrock",
                    "region": fake.region,
                    "url": fake.url,
                    "access_key_id": fake.access_key,
                    "secret_access_key": fake.secret_key,
                    "session_token": TOKEN,
                }
            )
        )
        request = sign(auth, host=fake.authority)

        def send(body: bytes) -> tuple[int, dict[str, str], bytes]:
            url = fake.url + request.path
            http = urllib.request.Request(url, data=body, headers=request.headers, method="POST")
            try:
                with urllib.request.urlopen(http) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as error:
                return error.code, dict(error.headers), error.read()

        assert send(BODY)[0] == 200
        assert fake.requests[-1].raw_path == MODEL_PATH
        status, headers, body = send(BODY.replace(b"hi", b"ho"))
        assert status == 403
        assert headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
        assert b"does not match the signature" in body


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def test_standard_chain_from_the_environment(clean_aws_env: pytest.MonkeyPatch) -> None:
    clean_aws_env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    clean_aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    clean_aws_env.setenv("AWS_SESSION_TOKEN", TOKEN)
    request = sign(SigV4(backend()))
    assert verify(request) is None


def test_refreshable_credentials_rotate_without_restart(clean_aws_env: pytest.MonkeyPatch) -> None:
    issued: list[str] = []

    def fetch() -> dict[str, str]:
        issued.append(f"ASIAROTATED{len(issued)}")
        # Already inside the refresh window: every signature asks for new credentials.
        expiry = datetime.now(UTC) + timedelta(minutes=1)
        return {
            "access_key": issued[-1],
            "secret_key": SECRET_KEY,
            "token": TOKEN,
            "expiry_time": expiry.isoformat(),
        }

    credentials = RefreshableCredentials.create_from_metadata(fetch(), fetch, "test")
    clean_aws_env.setattr(Session, "get_credentials", lambda self: credentials)

    async def two_signatures() -> list[UpstreamRequest]:
        auth = SigV4(backend())
        requests = [UpstreamRequest(path=MODEL_PATH, body=BODY) for _ in range(2)]
        for request in requests:
            await auth.apply(request, HOST)
        return requests

    first, second = asyncio.run(two_signatures())
    assert f"Credential={issued[1]}/" in first.headers["authorization"]
    assert f"Credential={issued[2]}/" in second.headers["authorization"]
    assert verify(second, access_key=issued[2]) is None


def test_no_credentials_is_a_503_without_secrets(clean_aws_env: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        clean_aws_env.delenv(name, raising=False)
    clean_aws_env.setattr(Session, "get_credentials", lambda self: None)
    with pytest.raises(GatewayError) as raised:
        sign(SigV4(backend()))
    assert raised.value.status == 503
    assert "credentials" in raised.value.message


def test_repr_hides_the_keys() -> None:
    text = repr(static_auth())
    assert SECRET_KEY not in text
    assert ACCESS_KEY not in text
