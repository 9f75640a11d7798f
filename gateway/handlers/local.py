"""``GET|PUT|DELETE /{db}/_local/{id}``: checkpoints, private to (database, user)."""

from __future__ import annotations

from aiohttp import web

from gateway.auth import LOCAL_KEY
from gateway.callers import confirmed
from gateway.dbctx import open_db
from gateway.docjson import splice
from gateway.jsonio import depth_limit, json_response, raw_json_response, read_json_object
from gateway.keys import ENGINE
from gateway.validation import encoded_size
from replication import BadRequest, NotFound, validate_doc_id
from replication.errors import DocumentTooLarge
from schema.engine import raw_statement, read_transaction, write_transaction
from schema.local_docs import delete_local, get_local, put_local

MAX_LOCAL_BYTES = 1024 * 1024  # checkpoints are small; a larger _local document is 413


def _local_id(request: web.Request) -> str:
    name = request.match_info["localid"]
    # Any name may follow "_local/" (PouchDB's replication ids are base64 and may start with
    # "_"): apply the generic id checks, but not the reserved-underscore rule.
    validate_doc_id("x" + name[1:] if name.startswith("_") else name)
    return "_local/" + name


async def get_local_doc(request: web.Request) -> web.Response:
    access = await open_db(request)
    doc_id = _local_id(request)
    prefetched = request.get(LOCAL_KEY)
    if prefetched is not None and prefetched[0] == doc_id:  # read with the caller already
        if prefetched[1] is None:
            raise NotFound("missing")
        rev, body = prefetched[1]
        return raw_json_response(splice({"_id": doc_id, "_rev": f"0-{rev}"}, body))
    async with read_transaction(request.app[ENGINE]) as conn:
        doc = await get_local(conn, access.db.id, access.user.id, doc_id)
    return raw_json_response(splice({"_id": doc.doc_id, "_rev": doc.rev}, doc.body))


async def put_local_doc(request: web.Request) -> web.Response:
    access = await open_db(request)
    doc_id = _local_id(request)
    body = await read_json_object(request)
    if body.get("_id", doc_id) != doc_id:
        raise BadRequest("Document id in the body does not match the URL")
    rev = request.query.get("rev", body.get("_rev"))
    content = {k: v for k, v in body.items() if k not in ("_id", "_rev")}
    if encoded_size(content, depth_limit(request)) > MAX_LOCAL_BYTES:
        raise DocumentTooLarge("Local documents are limited to 1 MiB")
    async with raw_statement(request.app[ENGINE]) as conn:
        new_rev = await put_local(
            conn, access.db.id, access.user.id, doc_id, rev, content, check=access.check
        )
        if access.check is not None:
            confirmed(request)
    return json_response({"ok": True, "id": doc_id, "rev": new_rev}, status=201)


async def delete_local_doc(request: web.Request) -> web.Response:
    access = await open_db(request)
    doc_id = _local_id(request)
    async with write_transaction(request.app[ENGINE]) as conn:
        rev = await delete_local(
            conn, access.db.id, access.user.id, doc_id, request.query.get("rev")
        )
    return json_response({"ok": True, "id": doc_id, "rev": rev})
