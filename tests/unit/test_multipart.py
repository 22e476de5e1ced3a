"""The multipart form's model reader (extproc/multipart.py): every malformed case, and a
property over built forms and arbitrary bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.errors import GatewayError
from extproc.multipart import MAX_MODEL_BYTES, form_model, with_model

B = "b0und4ry"
CT = f"multipart/form-data; boundary={B}"


def form(fields: list[tuple[str, bytes]], boundary: str = B, file: bytes | None = b"RIFF") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in fields
    ]
    if file is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n".encode()
            + file
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _refused(body: bytes, content_type: str | None = CT) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        form_model(body, content_type)
    assert caught.value.status == 400 and caught.value.message
    return caught.value


def test_the_model_is_read_wherever_it_is() -> None:
    assert form_model(form([("model", b"whisper-1")]), CT) == "whisper-1"
    body = form([("language", b"en"), ("model", "modèle".encode())], file=b"\r\n--x\r\n" * 50)
    assert form_model(body, CT) == "modèle"
    assert form_model(form([("model", b"m")]), f'multipart/form-data; boundary="{B}"') == "m"
    assert form_model(form([("language", b"en")]), CT) is None
    assert form_model(form([("model", b"")]), CT) is None


@pytest.mark.parametrize(
    ("content_type", "code", "words"),
    [
        (None, "invalid_content_type", "none"),
        ("application/json", "invalid_content_type", "application/json"),
        ("multipart/mixed; boundary=b0und4ry", "invalid_content_type", "multipart/mixed"),
        ("multipart/form-data", "invalid_multipart", "boundary"),
        ("multipart/form-data; boundary=", "invalid_multipart", "boundary"),
        ("multipart/form-data; boundary=" + "x" * 71, "invalid_multipart", "boundary"),
    ],
)
def test_a_content_type_without_a_form_or_boundary_is_refused(
    content_type: str | None, code: str, words: str
) -> None:
    err = _refused(form([("model", b"m")]), content_type)
    assert err.code == code and words in err.message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "truncated"),
        (form([("model", b"m")])[:-4], "truncated"),
        (form([("model", b"m")]).split(b"--b0und4ry--")[0], "truncated"),
        (form([("model", b"m")], boundary="other"), "malformed"),
        (b'{"model": "whisper-1"}', "malformed"),
        (b"--b0und4ry\r\nno colon here\r\n\r\nx\r\n--b0und4ry--\r\n", "malformed"),
    ],
    ids=["empty", "cut", "no-closing-boundary", "wrong-boundary", "json", "bad-header"],
)
def test_a_body_that_is_not_a_complete_form_is_refused(body: bytes, words: str) -> None:
    err = _refused(body)
    assert err.code == "invalid_multipart" and words in err.message


def test_two_models_a_long_one_and_bad_utf8_are_refused() -> None:
    assert "more than one" in _refused(form([("model", b"a"), ("model", b"b")])).message
    assert _refused(form([("model", b"m" * (MAX_MODEL_BYTES + 1))])).param == "model"
    assert "UTF-8" in _refused(form([("model", b"\xff\xfe")])).message


def test_with_model_changes_the_model_value_alone() -> None:
    body = form([("model", b"whisper"), ("temperature", b"0")], file=b"model\r\nwhisper")
    out = with_model(body, "whisper-1")
    assert out == body.replace(b"\r\n\r\nwhisper\r\n", b"\r\n\r\nwhisper-1\r\n", 1)
    assert form_model(out, CT) == "whisper-1"
    with pytest.raises(GatewayError):
        with_model(b"preamble\r\n" + body, "x")  # no boundary on the first line
    with pytest.raises(GatewayError):
        with_model(form([("language", b"en")]), "x")


_VALUES = st.binary(max_size=40).filter(lambda v: b"\r\n--" not in v and not v.endswith(b"\r"))
_NAMES = st.sampled_from(["language", "prompt", "temperature", "response_format", "x"])


@given(
    before=st.lists(st.tuples(_NAMES, _VALUES), max_size=3),
    after=st.lists(st.tuples(_NAMES, _VALUES), max_size=3),
    model=st.text(min_size=1, max_size=30).filter(lambda m: "\r" not in m and "\n" not in m),
    file=_VALUES,
)
def test_a_built_form_yields_its_model_and_takes_another(
    before: list[tuple[str, bytes]],
    after: list[tuple[str, bytes]],
    model: str,
    file: bytes,
) -> None:
    body = form([*before, ("model", model.encode()), *after], file=file)
    assert form_model(body, CT) == model
    out = with_model(body, "renamed")
    assert form_model(out, CT) == "renamed"
    assert out.replace(b"\r\n\r\nrenamed\r\n", b"\r\n\r\n" + model.encode() + b"\r\n", 1) == body


@given(body=st.binary(max_size=300), content_type=st.sampled_from([CT, None, "text/plain"]))
def test_any_bytes_are_a_model_or_a_400(body: bytes, content_type: str | None) -> None:
    try:
        model = form_model(body, content_type)
    except GatewayError as err:
        assert err.status == 400 and err.message
    else:
        assert model is None or isinstance(model, str)
