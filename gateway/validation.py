"""Turning request JSON into validated edits, with the configured size limits."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from gateway.settings import Settings
from replication import BadRequest, DocEdit, TooLarge, parse_doc


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


def encoded_size(body: Any) -> int:
    """Return the size of ``body`` as stored; ``BadRequest`` if it cannot be stored."""
    try:
        return len(orjson.dumps(body))
    except TypeError as exc:  # orjson refuses nesting deeper than 254 levels
        raise BadRequest("Document is nested too deeply (at most 250 levels).") from exc


def check_sizes(edit: DocEdit, settings: Settings) -> None:
    """Refuse documents and attachments above the configured limits."""
    if encoded_size(edit.body) > settings.max_document_bytes:
        raise TooLarge(f"Document exceeds the {settings.max_document_bytes}-byte limit.")
    for att in edit.attachments:
        size = len(att.data) if att.data is not None else (att.length or 0)
        if size > settings.max_attachment_bytes:
            raise TooLarge(
                f"Attachment {att.name!r} exceeds the {settings.max_attachment_bytes}-byte "
                "limit; store large binaries through the photo upload flow."
            )
