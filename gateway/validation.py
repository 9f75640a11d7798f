"""Turning request JSON into validated edits, with the configured size limits."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from gateway.jsonio import check_depth, too_deep
from gateway.settings import Settings
from replication import DocEdit, TooLarge, parse_doc
from replication.errors import DocumentTooLarge


def edit_from_json(obj: Any, settings: Settings, *, doc_id: str | None = None) -> DocEdit:
    """Validate one document (raises ``BadRequest``/``TooLarge``)."""
    edit = parse_doc(obj, doc_id=doc_id)
    check_sizes(edit, settings)
    return edit


def with_generated_id(obj: Any) -> Any:
    """Give a new document without ``_id`` a random one, as CouchDB does for POST."""
    if isinstance(obj, dict) and "_id" not in obj:
        return {**obj, "_id": uuid.uuid4().hex}
    return obj


def encode_body(body: Any, max_depth: int) -> bytes:
    """Return ``body`` as stored; ``BadRequest`` if it nests deeper than ``max_depth``."""
    try:
        encoded = orjson.dumps(body)
    except TypeError as exc:  # orjson writes at most 254 levels, more than any limit allows
        raise too_deep("Document", max_depth) from exc
    check_depth(encoded, body, max_depth, "Document")
    return encoded


def encoded_size(body: Any, max_depth: int) -> int:
    """Return the size of ``body`` as stored (see ``encode_body``)."""
    return len(encode_body(body, max_depth))


def check_document(body: Any, settings: Settings, doc_id: str | None = None) -> None:
    """Refuse a document body nested too deeply (400 ``bad_request``) or larger than
    ``GATEWAY_MAX_DOCUMENT_BYTES`` as stored (413 ``document_too_large``)."""
    size = encoded_size(body, settings.max_json_depth)
    if size > settings.max_document_bytes:
        named = f"Document {doc_id!r}" if doc_id else "The document"
        raise DocumentTooLarge(
            f"{named} is {size} bytes, above the {settings.max_document_bytes}-byte limit "
            "(GATEWAY_MAX_DOCUMENT_BYTES)."
        )


def check_sizes(edit: DocEdit, settings: Settings) -> None:
    """Refuse documents nested too deeply (400) and documents and attachments above the
    configured sizes (413)."""
    check_document(edit.body, settings, edit.doc_id)
    for att in edit.attachments:
        size = len(att.data) if att.data is not None else (att.length or 0)
        if size > settings.max_attachment_bytes:
            raise TooLarge(
                f"Attachment {att.name!r} exceeds the {settings.max_attachment_bytes}-byte "
                "limit; store large binaries through the photo upload flow."
            )
