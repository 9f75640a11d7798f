"""``multipart/related`` document uploads (CouchDB's replicator sends attachments this way).

    --boundary
    Content-Type: application/json

    {"_id": "a", "_attachments": {"p.jpg": {"follows": true, "length": 3, ...}}}
    --boundary
    <3 bytes of p.jpg>
    --boundary--

Parts after the JSON fill the ``follows`` attachments in the order they are listed; a part
sent gzip-compressed (``"encoding": "gzip"``, as CouchDB's replicator sends text-like
attachments) is stored decompressed, checked against the digest of the plain data.
"""

from __future__ import annotations

import base64
import uuid
import zlib
from typing import Any

from aiohttp import BodyPartReader, web

from gateway.jsonio import loads
from gateway.settings import Settings
from replication import BadRequest, TooLarge


async def read_multipart_doc(request: web.Request, settings: Settings) -> dict[str, Any]:
    """Read a ``multipart/related`` body into a document with inline base64 attachments."""
    try:
        reader = await request.multipart()
        first = await reader.next()
        if not isinstance(first, BodyPartReader):
            raise BadRequest("multipart/related body must start with a JSON part")
        doc = loads(await first.read(decode=False))
        if not isinstance(doc, dict):
            raise BadRequest("Document must be a JSON object")
        atts = doc.get("_attachments") or {}
        if not isinstance(atts, dict):
            raise BadRequest("_attachments must be an object")
        follows = [
            name for name, att in atts.items() if isinstance(att, dict) and att.get("follows")
        ]
        filled = dict(atts)
        for name in follows:
            part = await reader.next()
            if not isinstance(part, BodyPartReader):
                raise BadRequest(f"Missing multipart body for attachment {name!r}")
            data = bytes(await part.read(decode=False))
            if len(data) > settings.max_attachment_bytes:
                raise TooLarge(f"Attachment {name!r} is too large.")
            meta = atts[name]
            if meta.get("encoding") is not None:
                data = _decoded(name, meta["encoding"], data, settings.max_attachment_bytes)
            entry = {k: v for k, v in meta.items() if k not in _TRANSFER_FIELDS}
            entry["data"] = base64.b64encode(data).decode("ascii")
            filled[name] = entry
    except (ValueError, AssertionError, KeyError) as exc:
        raise BadRequest(f"Malformed multipart body: {exc}") from exc
    return {**doc, "_attachments": filled} if atts else doc


# How a part travelled, not what the attachment is: dropped once the data is in hand.
_TRANSFER_FIELDS = ("follows", "length", "encoding", "encoded_length")


def _decoded(name: str, encoding: object, data: bytes, limit: int) -> bytes:
    """The attachment as stored: CouchDB keeps text-like attachments gzip-compressed and its
    replicator sends them so (``"encoding": "gzip"``), while the digest and ``length`` are
    those of the plain data.  Decompressed with a bound, so a small bomb cannot blow up."""
    if encoding != "gzip":
        raise BadRequest(f"Attachment {name!r} has an unsupported encoding: {encoding!r}")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"Attachment {name!r} is not valid gzip data") from exc
    if len(plain) > limit:
        raise TooLarge(f"Attachment {name!r} is too large.")
    if not inflater.eof or inflater.unused_data:
        raise BadRequest(f"Attachment {name!r} is not one complete gzip stream")
    return plain


def multipart_mixed(parts: list[bytes]) -> web.Response:
    """Answer ``open_revs`` as ``multipart/mixed``: one JSON part per revision (or missing)."""
    boundary = uuid.uuid4().hex
    chunks = []
    for part in parts:
        chunks.append(b"--" + boundary.encode() + b"\r\nContent-Type: application/json\r\n\r\n")
        chunks.append(part + b"\r\n")
    chunks.append(b"--" + boundary.encode() + b"--")
    return web.Response(
        body=b"".join(chunks),
        headers={"Content-Type": f'multipart/mixed; boundary="{boundary}"'},
    )
