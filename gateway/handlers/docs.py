"""Document routes: ``GET|PUT|DELETE /{db}/{docid}`` and ``POST /{db}``."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.access import require_write
from gateway.dbctx import DbAccess, open_db, write_edits
from gateway.docfetch import FetchRequest, fetch_docs
from gateway.docjson import RenderOptions
from gateway.etags import none_match
from gateway.jsonio import json_response, query_bool, query_json, raw_json_response, read_json
from gateway.keys import ENGINE, SETTINGS
from gateway.multipart import multipart_mixed, read_multipart_doc
from gateway.validation import edit_from_json, with_generated_id
from replication import BadRequest, DocEdit, NotFound, validate_doc_id, validate_rev
from replication.errors import Conflict
from schema.engine import read_transaction


def doc_id_of(request: web.Request) -> str:
    """Return the validated document id of the URL (``_design/`` ids included)."""
    if "ddoc" in request.match_info:
        return validate_doc_id("_design/" + request.match_info["ddoc"])
    return validate_doc_id(request.match_info["docid"])


def render_options(request: web.Request) -> RenderOptions:
    atts_since = query_json(request, "atts_since")
    if atts_since is None:
        atts_since = []
    if not isinstance(atts_since, list):
        raise BadRequest("atts_since must be a JSON list of revisions")
    return RenderOptions(
        revs=query_bool(request, "revs"),
        revs_info=query_bool(request, "revs_info"),
        conflicts=query_bool(request, "conflicts") or query_bool(request, "meta"),
        deleted_conflicts=query_bool(request, "deleted_conflicts") or query_bool(request, "meta"),
        attachments=query_bool(request, "attachments") or bool(atts_since),
        atts_since=tuple(validate_rev(r) for r in atts_since),
        local_seq=query_bool(request, "local_seq"),
    )


def _open_revs(request: web.Request) -> list[str] | str | None:
    raw = request.query.get("open_revs")
    if raw is None:
        return None
    if raw == "all":
        return "all"
    value = query_json(request, "open_revs")
    if not isinstance(value, list):
        raise BadRequest("open_revs must be `all` or a JSON list of revisions")
    return [validate_rev(rev) for rev in value]


async def get_doc(request: web.Request) -> web.Response:
    """``GET /{db}/{docid}``, with ``rev``, ``revs``, ``open_revs``, ``latest``..."""
    access = await open_db(request)
    doc_id = doc_id_of(request)
    options = render_options(request)
    open_revs = _open_revs(request)
    rev = request.query.get("rev")
    wanted: Any = open_revs if open_revs is not None else ([validate_rev(rev)] if rev else None)
    async with read_transaction(request.app[ENGINE]) as conn:
        [answers] = await fetch_docs(
            conn,
            access.db.id,
            [FetchRequest(doc_id, wanted)],
            owner=access.owner,
            options=options,
            latest=query_bool(request, "latest"),
            revs_limit=access.db.revs_limit,
        )
    if open_revs is not None:
        found = [a for a in answers if a.doc is not None or open_revs != "all"]
        if open_revs == "all" and not found:
            raise NotFound("missing")
        if _wants_multipart(request):
            return multipart_mixed([a.doc or a.open_revs_json() for a in found])
        return raw_json_response(b"[" + b",".join(a.open_revs_json() for a in found) + b"]")
    answer = answers[0]
    if answer.doc is None:
        raise NotFound("missing")
    if rev is None and orjson.loads(answer.doc).get("_deleted"):
        raise NotFound("deleted")
    etag = f'"{answer.rev}"'
    if none_match(request, etag):  # the client has this revision already: as CouchDB, 304
        return web.Response(status=304, headers={"ETag": etag})
    return raw_json_response(answer.doc, headers={"ETag": etag})


def _wants_multipart(request: web.Request) -> bool:
    """CouchDB's replicator asks for ``open_revs`` as ``multipart/mixed`` only."""
    accept = request.headers.get("Accept", "")
    return "multipart/mixed" in accept and "application/json" not in accept


def _rev_from_request(request: web.Request) -> str | None:
    rev = request.query.get("rev")
    if rev is None and "If-Match" in request.headers:
        rev = request.headers["If-Match"].strip('"')
    return validate_rev(rev) if rev is not None else None


async def _write_one(request: web.Request, access: DbAccess, edit: DocEdit) -> web.Response:
    new_edits = query_bool(request, "new_edits", True)
    [result] = await write_edits(request, access, [edit], new_edits=new_edits)
    if result.error is not None:
        raise result.error
    status = 201 if request.method != "DELETE" else 200
    return json_response(
        {"ok": True, "id": result.doc_id, "rev": result.rev},
        status=status,
        headers={"ETag": f'"{result.rev}"'},
    )


async def put_doc(request: web.Request) -> web.Response:
    """``PUT /{db}/{docid}`` with a JSON body or ``multipart/related`` attachments."""
    access = await open_db(request)
    require_write(access.user, access.db)  # before anything that depends on the document
    doc_id = doc_id_of(request)
    settings = request.app[SETTINGS]
    if request.content_type == "multipart/related":
        obj = await read_multipart_doc(request, settings)
    else:
        obj = await read_json(request)
    if not isinstance(obj, dict):
        raise BadRequest("Document must be a JSON object")
    rev = _rev_from_request(request)
    if rev is not None:
        if obj.get("_rev") not in (None, rev):
            raise BadRequest(
                "Document rev from request body and query string have different values"
            )
        obj = {**obj, "_rev": rev}
    return await _write_one(request, access, edit_from_json(obj, settings, doc_id=doc_id))


async def post_doc(request: web.Request) -> web.Response:
    """``POST /{db}``: create a document, generating an id when none is given."""
    access = await open_db(request)
    require_write(access.user, access.db)
    obj = await read_json(request)
    if not isinstance(obj, dict):
        raise BadRequest("Document must be a JSON object")
    obj = with_generated_id(obj)
    return await _write_one(request, access, edit_from_json(obj, request.app[SETTINGS]))


async def delete_doc(request: web.Request) -> web.Response:
    """``DELETE /{db}/{docid}?rev=``: write a tombstone revision."""
    access = await open_db(request)
    require_write(access.user, access.db)
    doc_id = doc_id_of(request)
    rev = _rev_from_request(request)
    if rev is None:
        raise Conflict("Document update conflict: a rev is required to delete.")
    return await _write_one(request, access, DocEdit(doc_id, rev, deleted=True))
