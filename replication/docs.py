"""Incoming documents: validate what a client sent and split it into an edit.

    {"_id": "a", "_rev": "1-x", "_revisions": {...}, "_deleted": false,
     "_attachments": {"p.txt": {"content_type": "text/plain", "data": "aGk="}},
     "title": "..."}
      -> DocEdit(doc_id="a", rev="1-x", path=("2-y", "1-x"), deleted=False,
                 body={"title": "..."}, attachments=(Attachment(...),))

Underscore members other than CouchDB's special ones are refused, as CouchDB does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from replication.errors import BadRequest
from replication.revs import revisions_to_path, validate_rev

SPECIAL_MEMBERS = frozenset(
    {
        "_id",
        "_rev",
        "_attachments",
        "_deleted",
        "_revisions",
        "_revs_info",
        "_conflicts",
        "_deleted_conflicts",
        "_local_seq",
    }
)
MAX_ID_BYTES = 1000
DESIGN_PREFIX = "_design/"
LOCAL_PREFIX = "_local/"


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attachment as sent or stored; ``data`` is None for a stub or a ``follows`` part."""

    name: str
    content_type: str = "application/octet-stream"
    digest: str | None = None
    length: int | None = None
    revpos: int | None = None
    data: bytes | None = None
    stub: bool = False
    follows: bool = False

    def meta(self) -> dict[str, Any]:
        """Return what a revision stores about this attachment."""
        return {
            "content_type": self.content_type,
            "digest": self.digest,
            "length": self.length,
            "revpos": self.revpos,
        }


@dataclass(frozen=True, slots=True)
class DocEdit:
    doc_id: str
    rev: str | None = None
    path: tuple[str, ...] = ()
    deleted: bool = False
    body: Mapping[str, Any] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()


def md5_digest(data: bytes) -> str:
    """Return CouchDB's attachment digest: ``"md5-"`` + base64 of the md5."""
    raw = hashlib.md5(data, usedforsecurity=False).digest()
    return "md5-" + base64.b64encode(raw).decode("ascii")


def validate_doc_id(doc_id: object, *, allow_design: bool = True) -> str:
    """Return a valid document id or raise ``BadRequest``."""
    if not isinstance(doc_id, str) or not doc_id:
        raise BadRequest("Document id must be a non-empty string")
    if "\x00" in doc_id:
        raise BadRequest("Document id may not contain NUL")
    ascii_only = doc_id.isascii()  # the usual case: one byte per character, no surrogates
    size = len(doc_id) if ascii_only else len(doc_id.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise BadRequest(f"Document id is longer than {MAX_ID_BYTES} bytes")
    if not ascii_only:
        _reject_surrogates(doc_id, "Document id")
    if doc_id.startswith("_"):
        if allow_design and doc_id.startswith(DESIGN_PREFIX) and len(doc_id) > len(DESIGN_PREFIX):
            return doc_id
        raise BadRequest("Only reserved document ids may start with underscore.")
    return doc_id


def _reject_surrogates(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"{what} is not valid UTF-8") from exc


def parse_doc(obj: object, *, doc_id: str | None = None) -> DocEdit:
    """Validate one document sent by a client; ``doc_id`` comes from the URL when given."""
    if not (type(obj) is dict or isinstance(obj, Mapping)):
        raise BadRequest("Document must be a JSON object")
    body: dict[str, Any] = {}
    for key, value in obj.items():
        if key.startswith("_"):
            if key not in SPECIAL_MEMBERS:
                raise BadRequest(f"Bad special document member: {key}")
        else:
            body[key] = value
    sent_id = obj.get("_id")
    if doc_id is not None:
        if sent_id is not None and sent_id != doc_id:
            raise BadRequest("Document id in the body does not match the URL")
        sent_id = doc_id
    final_id = validate_doc_id(sent_id)
    rev = obj.get("_rev")
    if rev is not None:
        rev = validate_rev(rev)
    path: tuple[str, ...] = ()
    if obj.get("_revisions") is not None:
        path = revisions_to_path(obj["_revisions"])
        if rev is not None and path[0] != rev:
            raise BadRequest("_rev does not match _revisions")
        rev = path[0]  # as CouchDB: the head of _revisions is the document's revision
    deleted = obj.get("_deleted", False)
    if not isinstance(deleted, bool):
        raise BadRequest("_deleted must be a boolean")
    attachments = parse_attachments(obj.get("_attachments"))
    return DocEdit(final_id, rev, path, deleted, body, attachments)


def parse_attachments(value: object) -> tuple[Attachment, ...]:
    """Validate an ``_attachments`` object (inline base64, stubs, or ``follows`` parts)."""
    if value is None:
        return ()
    if not (type(value) is dict or isinstance(value, Mapping)):
        raise BadRequest("_attachments must be an object")
    found = []
    for name, att in value.items():
        found.append(parse_attachment(name, att))
    return tuple(found)


def parse_attachment(name: str, att: object) -> Attachment:
    """Validate one attachment entry."""
    if not name or name.startswith("_") or "\x00" in name:
        raise BadRequest(f"Attachment name is not allowed: {name!r}")
    _reject_surrogates(name, "Attachment name")
    if not (type(att) is dict or isinstance(att, Mapping)):
        raise BadRequest(f"Attachment {name!r} must be an object")
    content_type = att.get("content_type", "application/octet-stream")
    if not isinstance(content_type, str):
        raise BadRequest(f"Attachment {name!r} content_type must be a string")
    digest = att.get("digest")
    if digest is not None and not isinstance(digest, str):
        raise BadRequest(f"Attachment {name!r} digest must be a string")
    revpos = att.get("revpos")
    if revpos is not None and (not isinstance(revpos, int) or isinstance(revpos, bool)):
        raise BadRequest(f"Attachment {name!r} revpos must be an integer")
    if att.get("stub") is True:
        return Attachment(name, content_type, digest, _length(att, name), revpos, stub=True)
    if att.get("follows") is True:
        return Attachment(name, content_type, digest, _length(att, name), revpos, follows=True)
    data = att.get("data")
    if not isinstance(data, str):
        raise BadRequest(f"Attachment {name!r} needs base64 data, or stub or follows")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"Attachment {name!r} data is not valid base64") from exc
    computed = md5_digest(raw)
    if digest is not None and digest.startswith("md5-") and digest != computed:
        raise BadRequest(f"Attachment {name!r} digest does not match its data")
    return Attachment(name, content_type, computed, len(raw), revpos, data=raw)


def _length(att: Mapping[str, Any], name: str) -> int | None:
    length = att.get("length")
    if length is None:
        return None
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise BadRequest(f"Attachment {name!r} length must be a non-negative integer")
    return length
