"""``_bulk_docs``, ``_bulk_get`` and ``_revs_diff``: the replicator's batch endpoints."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.access import require_write
from gateway.auth import DOCS_KEY
from gateway.dbctx import open_db, write_edits
from gateway.docfetch import FetchRequest, fetch_docs
from gateway.handlers.docs import render_options
from gateway.jsonio import (
    json_response,
    query_bool,
    raw_json_response,
    read_json_object,
    row_error,
)
from gateway.keys import ENGINE, SETTINGS
from gateway.metrics import count_docs_read
from gateway.stats import count_out
from gateway.validation import edit_from_json, with_generated_id
from replication import BadRequest, DocEdit, GatewayError, revs_diff, validate_rev
from schema.documents import load_states, states_from_rows
from schema.engine import raw_read


async def bulk_docs(request: web.Request) -> web.Response:
    """``POST /{db}/_bulk_docs``: ``{"docs": [...], "new_edits": true|false}``."""
    access = await open_db(request)
    require_write(access.user, access.db)
    body = await read_json_object(request, envelope=None)  # each document checked in its row
    docs = body.get("docs")
    if not isinstance(docs, list):
        raise BadRequest("POST body must include `docs` parameter.")
    settings = request.app[SETTINGS]
    if len(docs) > settings.max_bulk_docs:
        raise BadRequest(f"At most {settings.max_bulk_docs} documents per _bulk_docs request.")
    new_edits = body.get("new_edits", True)
    if not isinstance(new_edits, bool):
        raise BadRequest("`new_edits` parameter must be a boolean.")
    edits: list[DocEdit] = []
    rows: list[Any] = []  # per input doc: index into edits, or an error row
    for obj in docs:
        try:
            if new_edits:
                obj = with_generated_id(obj)
            edits.append(edit_from_json(obj, settings))
            rows.append(len(edits) - 1)
        except GatewayError as exc:
            doc_id = obj.get("_id") if isinstance(obj, dict) else None
            rows.append(row_error(doc_id if isinstance(doc_id, str) else None, exc))
    results = await write_edits(request, access, edits, new_edits=new_edits)
    out: list[dict[str, Any]] = []
    for row in rows:
        if isinstance(row, dict):
            out.append(row)
            continue
        result = results[row]
        if result.error is not None:
            error = row_error(result.doc_id, result.error)
            if edits[row].rev is not None:
                error["rev"] = edits[row].rev
            out.append(error)
        elif new_edits:
            out.append({"ok": True, "id": result.doc_id, "rev": result.rev})
    return json_response(out, status=201)


async def bulk_get(request: web.Request) -> web.Response:
    """``POST /{db}/_bulk_get?revs=true&attachments=true&latest=true``."""
    access = await open_db(request)
    body = await read_json_object(request)
    docs = body.get("docs")
    if not isinstance(docs, list):
        raise BadRequest("Missing JSON list of 'docs'.")
    requests: list[FetchRequest] = []
    refused: dict[int, bytes] = {}  # entry index -> its error result (CouchDB: per entry)
    for index, item in enumerate(docs):
        try:
            requests.append(_bulk_get_entry(item))
        except BadRequest as exc:
            refused[index] = _bulk_get_error(item, exc)
    options = render_options(request)
    async with raw_read(request.app[ENGINE]) as conn:
        answers = await fetch_docs(
            conn,
            access.db.id,
            requests,
            owner=access.owner,
            options=options,
            latest=query_bool(request, "latest"),
            revs_limit=access.db.revs_limit,
        )
    served = sum(a.doc is not None for f in answers for a in f)
    count_docs_read(request, access.db.name, served)
    count_out(request.app, served)  # the dashboard's per-minute chart
    fetched = iter(zip(requests, answers, strict=True))
    parts = []
    for index in range(len(docs)):
        if index in refused:
            parts.append(refused[index])
            continue
        req, found = next(fetched)
        docs_json = b",".join(a.bulk_get_json() for a in found)
        parts.append(b'{"id":' + orjson.dumps(req.doc_id) + b',"docs":[' + docs_json + b"]}")
    return raw_json_response(b'{"results":[' + b",".join(parts) + b"]}")


def _bulk_get_entry(item: Any) -> FetchRequest:
    """One ``_bulk_get`` entry; without ``rev``, every leaf (as CouchDB: ``open_revs=all``)."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise BadRequest("Each _bulk_get entry needs a string `id`.")
    rev = item.get("rev")
    atts_since = item.get("atts_since") or []
    if not isinstance(atts_since, list):
        raise BadRequest("atts_since must be a list of revisions")
    return FetchRequest(
        item["id"],
        [validate_rev(rev)] if rev is not None else "all",
        tuple(validate_rev(r) for r in atts_since),
    )


def _bulk_get_error(item: Any, exc: BadRequest) -> bytes:
    """The result of an entry that cannot be served: an error for it alone."""
    doc_id = item.get("id") if isinstance(item, dict) else None
    doc_id = doc_id if isinstance(doc_id, str) else None
    rev = item.get("rev") if isinstance(item, dict) else None
    error = {"id": doc_id, "rev": rev if isinstance(rev, str) else None,
             "error": exc.error, "reason": exc.reason}  # fmt: skip
    return orjson.dumps({"id": doc_id, "docs": [{"error": error}]})


async def revs_diff_handler(request: web.Request) -> web.Response:
    """``POST /{db}/_revs_diff``: ``{docid: [revs]}`` -> what is missing here."""
    access = await open_db(request)
    body = await read_json_object(request)
    wanted: dict[str, list[str]] = {}
    for doc_id, revs in body.items():
        if not isinstance(revs, list):
            raise BadRequest(f"Revisions of {doc_id!r} must be a list")
        wanted[doc_id] = [validate_rev(rev) for rev in revs]
    prefetched = request.get(DOCS_KEY)
    if prefetched is not None and prefetched[0] == list(wanted):
        states = states_from_rows(prefetched[1])  # read with the caller (gateway.auth)
    else:
        async with raw_read(request.app[ENGINE]) as conn:
            states = await load_states(conn, access.db.id, list(wanted))
    out: dict[str, Any] = {}
    for doc_id, revs in wanted.items():
        state = states.get(doc_id)
        visible = state is not None and access.owner in (None, state.owner_id)
        diff = revs_diff(state.tree if visible else None, revs)
        if diff is not None:
            out[doc_id] = diff.to_json()
    return json_response(out)
