"""Standalone attachments: ``GET|PUT|DELETE /{db}/{docid}/{attname}``."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.access import require_write
from gateway.dbctx import open_db, write_edits
from gateway.docfetch import FetchRequest, fetch_docs
from gateway.docjson import RenderOptions
from gateway.handlers.docs import doc_id_of
from gateway.jsonio import json_response, read_body
from gateway.keys import ENGINE, SETTINGS
from gateway.validation import check_sizes
from replication import Attachment, Conflict, DocEdit, NotFound, md5_digest, validate_rev
from schema.engine import read_transaction
from schema.reads import get_attachment_data, get_doc_rows, get_revisions


def _att_name(request: web.Request) -> str:
    name = request.match_info["attname"]
    if not name or name.startswith("_"):
        raise NotFound("Document is missing attachment")
    return name


async def get_attachment(request: web.Request) -> web.Response:
    """Return an attachment's bytes with its content type and digest ETag."""
    access = await open_db(request)
    doc_id, name = doc_id_of(request), _att_name(request)
    rev = request.query.get("rev")
    async with read_transaction(request.app[ENGINE]) as conn:
        rows = await get_doc_rows(conn, access.db.id, [doc_id], access.owner)
        row = rows.get(doc_id)
        if row is None or (rev is None and row.deleted):
            raise NotFound("missing")
        wanted = validate_rev(rev) if rev else row.winning_rev
        stored = (await get_revisions(conn, access.db.id, [(doc_id, wanted)])).get((doc_id, wanted))
        meta = (stored.attachments or {}).get(name) if stored else None
        if meta is None:
            raise NotFound("Document is missing attachment")
        data = (await get_attachment_data(conn, access.db.id, [meta["digest"]])).get(meta["digest"])
    if data is None:
        raise NotFound("Document is missing attachment")
    etag = '"' + meta["digest"] + '"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(
        body=data, content_type=_served_type(meta["content_type"]), headers={"ETag": etag}
    )


def _served_type(content_type: str) -> str:
    """The stored ``content_type`` as a header value.  An inline attachment's type is any
    JSON string (CR, LF, NUL...); one that cannot be a header is served as plain bytes."""
    base = content_type.split(";")[0]
    if not base.strip() or not base.isascii() or not base.isprintable():
        return "application/octet-stream"
    return base.strip()


async def _current(request: web.Request, access, doc_id: str, rev: str | None):  # type: ignore[no-untyped-def]
    async with read_transaction(request.app[ENGINE]) as conn:
        [answers] = await fetch_docs(
            conn,
            access.db.id,
            [FetchRequest(doc_id, [rev] if rev else None)],
            owner=access.owner,
            options=RenderOptions(),
        )
    return orjson.loads(answers[0].doc) if answers[0].doc else None


def _stubs(doc: dict) -> tuple[Attachment, ...]:
    return tuple(
        Attachment(n, a["content_type"], a["digest"], a["length"], a["revpos"], stub=True)
        for n, a in (doc.get("_attachments") or {}).items()
    )


async def put_attachment(request: web.Request) -> web.Response:
    """Add or replace one attachment, creating a new revision."""
    access = await open_db(request)
    require_write(access.user, access.db)  # before anything that depends on the document
    doc_id, name = doc_id_of(request), _att_name(request)
    rev = request.query.get("rev") or request.headers.get("If-Match", "").strip('"') or None
    rev = validate_rev(rev) if rev else None
    data = await read_body(request)
    doc = await _current(request, access, doc_id, rev) if rev else None
    if rev and doc is None:
        raise Conflict()
    body = {k: v for k, v in (doc or {}).items() if not k.startswith("_")}
    atts = tuple(a for a in _stubs(doc or {}) if a.name != name)
    new = Attachment(
        name,
        request.content_type or "application/octet-stream",
        md5_digest(data),
        len(data),
        data=data,
    )
    edit = DocEdit(doc_id, rev, body=body, attachments=(*atts, new))
    check_sizes(edit, request.app[SETTINGS])
    [result] = await write_edits(request, access, [edit], new_edits=True)
    if result.error is not None:
        raise result.error
    return json_response({"ok": True, "id": doc_id, "rev": result.rev}, status=201)


async def delete_attachment(request: web.Request) -> web.Response:
    """Remove one attachment, creating a new revision."""
    access = await open_db(request)
    require_write(access.user, access.db)
    doc_id, name = doc_id_of(request), _att_name(request)
    rev = request.query.get("rev") or request.headers.get("If-Match", "").strip('"') or None
    if not rev:
        raise Conflict()
    rev = validate_rev(rev)
    doc = await _current(request, access, doc_id, rev)
    if doc is None:
        raise Conflict()
    if name not in (doc.get("_attachments") or {}):
        raise NotFound("Document is missing attachment")
    body = {k: v for k, v in doc.items() if not k.startswith("_")}
    atts = tuple(a for a in _stubs(doc) if a.name != name)
    [result] = await write_edits(
        request, access, [DocEdit(doc_id, rev, body=body, attachments=atts)], new_edits=True
    )
    if result.error is not None:
        raise result.error
    return json_response({"ok": True, "id": doc_id, "rev": result.rev})
