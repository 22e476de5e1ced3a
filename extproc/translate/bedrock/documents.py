"""OpenAI ``file`` content parts as Converse ``document`` blocks.

A part carries the file inline (``file.file_data``: a base64 ``data:`` URI, or bare base64 with a
``filename`` whose extension names the format); an uploaded file (``file.file_id``) lives in
OpenAI's storage, which the gateway cannot read: a 400 naming it. The format is the one the
MIME type (or extension) names, checked against the bytes where the format has a signature (PDF,
the zip-based Office formats, the OLE2 legacy ones), so a mislabelled file is refused here
rather than by the model. Converse's document names allow letters, digits, single whitespace,
hyphens, parentheses and square brackets (1-200 characters) and must not repeat within a
request: the client's file name is cleaned to that, and numbered when repeated.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any, TypedDict

from extproc.errors import bad_request


class DocumentSource(TypedDict):
    bytes: str  # base64, as the client sent it


class Document(TypedDict):
    format: str
    name: str
    source: DocumentSource


class DocumentBlock(TypedDict):
    document: Document


# MIME type -> Converse format; the extensions name the same formats.
_MIME_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
FORMATS = tuple(_MIME_FORMATS.values())
_EXTENSIONS = {**{f: f for f in FORMATS}, "htm": "html", "markdown": "md"}
_SIGNATURES = {
    b"%PDF-": "pdf",
    b"PK\x03\x04": "zip",  # docx, xlsx
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "ole2",  # doc, xls
}
_CONTAINER = {"pdf": "pdf", "docx": "zip", "xlsx": "zip", "doc": "ole2", "xls": "ole2"}
_NAME_REFUSED = re.compile(r"[^A-Za-z0-9\s\-()\[\]]+")
_NAME_MAX = 200


def _signature(data: str, param: str) -> str | None:
    """The container the first bytes show (pdf, zip, ole2), or None (text, or unknown)."""
    try:
        # 12 base64 characters are 9 bytes: enough for every signature, without decoding all.
        head = base64.b64decode(data[:12], validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"'{param}' is not valid base64.", param) from None
    return next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), None)


def _name(filename: Any) -> str:
    stem = filename.rsplit(".", 1)[0] if isinstance(filename, str) else ""
    return " ".join(_NAME_REFUSED.sub(" ", stem).split())[:_NAME_MAX].strip() or "document"


def document_block(part: Any, param: str) -> DocumentBlock:
    """The document block for a ``file`` part's ``file`` object."""
    if not isinstance(part, dict):
        raise bad_request(f"'{param}' must be an object.", param)
    if part.get("file_id") is not None:
        raise bad_request(
            "Uploaded files (file_id) cannot be read by this Bedrock backend: send the file"
            " inline as file_data (a base64 data: URI).",
            f"{param}.file_id",
        )
    data = part.get("file_data")
    filename = part.get("filename")
    where = f"{param}.file_data"
    if not isinstance(data, str) or not data:
        raise bad_request(f"'{where}' must be a base64 data: URI.", where)
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        mime, _, encoding = head.removeprefix("data:").partition(";")
        doc_format = _MIME_FORMATS.get(mime.lower())
        if encoding != "base64":
            raise bad_request(f"'{where}' must be a base64 data: URI.", where)
    else:
        extension = filename.rsplit(".", 1)[-1].lower() if isinstance(filename, str) else ""
        doc_format = _EXTENSIONS.get(extension) if "." in (filename or "") else None
    if doc_format is None:
        raise bad_request(
            f"'{where}': Bedrock reads documents of these formats only: {', '.join(FORMATS)}"
            " (named by the data: URI's MIME type, or by the filename's extension).",
            where,
        )
    if _signature(data, where) != _CONTAINER.get(doc_format):
        raise bad_request(f"'{where}': the bytes are not a {doc_format} file.", where)
    document: Document = {"format": doc_format, "name": _name(filename), "source": {"bytes": data}}
    return {"document": document}


def number_repeated_names(blocks: Iterable[Any]) -> None:
    """Converse refuses two documents of one name: the second becomes ``name (2)``..."""
    seen: dict[str, int] = {}
    for block in blocks:
        document = block.get("document") if isinstance(block, dict) else None
        if document is None:
            continue
        name = document["name"]
        count = seen.get(name, 0) + 1
        seen[name] = count
        if count > 1:
            document["name"] = f"{name[: _NAME_MAX - 8]} ({count})"
