"""``GET|POST /{db}/_all_docs``: documents in raw id order, or by ``keys``."""

from __future__ import annotations

from typing import Any, cast

import orjson
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from gateway.dbctx import DbAccess, open_db
from gateway.docfetch import FetchRequest, fetch_docs
from gateway.docjson import RenderOptions
from gateway.jsonio import query_bool, query_int, query_json, raw_json_response, read_json_object
from gateway.keys import ENGINE
from replication import BadRequest
from schema.engine import read_transaction
from schema.reads import AllDocsQuery, DocRow, all_docs_range, count_rows, get_doc_rows

# JSON-valued parameters; the ``*_docid`` ones are plain document ids, as in CouchDB.
_JSON_PARAMS = frozenset({"key", "keys", "startkey", "start_key", "endkey", "end_key"})
_DOCID_PARAMS = frozenset({"startkey_docid", "start_key_doc_id", "endkey_docid", "end_key_doc_id"})


def _key_param(request: web.Request, *names: str) -> str | None:
    for name in names:
        if name in _DOCID_PARAMS:
            value = request.query.get(name)
        else:
            value = query_json(request, name)
        if value is not None:
            if not isinstance(value, str):
                return None if value is None else _non_string_key(value)
            if "\x00" in value:  # PostgreSQL text cannot hold NUL, so no range starts there
                raise BadRequest("_all_docs keys may not contain NUL")
            return value
    return None


def _with_body_params(request: web.Request, body: dict[str, Any]) -> web.Request:
    """``request`` with the body's members as query parameters, over the URL's."""
    merged = dict(request.query)
    for name, value in body.items():
        if name in _JSON_PARAMS:
            merged[name] = orjson.dumps(value).decode()
        elif isinstance(value, bool):
            merged[name] = "true" if value else "false"
        elif isinstance(value, int | str):
            merged[name] = str(value)
        else:
            raise BadRequest(f"`{name}` must be a string, a number or a boolean")
    return cast(web.Request, _Parameters(request, MultiDictProxy(MultiDict(merged))))


class _Parameters:
    """A request as the query helpers read it, with other parameters (the body has been
    read, so aiohttp cannot clone it); everything else is the request's."""

    def __init__(self, request: web.Request, query: MultiDictProxy[str]) -> None:
        self._request = request
        self.query = query

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def _non_string_key(value: Any) -> str:
    raise BadRequest("_all_docs keys must be document id strings")


async def all_docs(request: web.Request) -> web.Response:
    """``GET /{db}/_all_docs`` (``POST`` takes ``keys`` in the body)."""
    access = await open_db(request)
    if request.method == "POST":
        # CouchDB takes every query parameter in the body too (and the body's win)
        request = _with_body_params(request, await read_json_object(request))
    keys = query_json(request, "keys")
    if keys is not None and (
        not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)
    ):
        raise BadRequest("`keys` must be a list of document ids")
    include_docs = query_bool(request, "include_docs")
    options = RenderOptions(
        conflicts=query_bool(request, "conflicts"),
        attachments=query_bool(request, "attachments"),
    )
    descending = query_bool(request, "descending")
    limit = query_int(request, "limit")
    skip = query_int(request, "skip", 0) or 0
    key = _key_param(request, "key")
    async with read_transaction(request.app[ENGINE]) as conn:
        if keys is not None or key is not None:
            wanted = keys if keys is not None else [key]
            if descending:
                wanted = list(reversed(wanted))
            wanted = wanted[skip:]
            if limit is not None:
                wanted = wanted[:limit]
            found = await get_doc_rows(conn, access.db.id, wanted, access.owner)
            rows = [(k, found.get(k)) for k in wanted]
            if keys is None:  # a single `key` behaves like a range: no error rows
                rows = [(k, r) for k, r in rows if r is not None and not r.deleted]
        else:
            query = AllDocsQuery(
                start=_key_param(
                    request, "startkey", "start_key", "startkey_docid", "start_key_doc_id"
                ),
                end=_key_param(request, "endkey", "end_key", "endkey_docid", "end_key_doc_id"),
                inclusive_end=query_bool(request, "inclusive_end", True),
                descending=descending,
                skip=skip,
                limit=limit,
            )
            rows = [
                (r.doc_id, r) for r in await all_docs_range(conn, access.db.id, query, access.owner)
            ]
        docs = await _docs(conn, access, rows, options) if include_docs else {}
        total = (
            access.db.doc_count
            if access.owner is None
            else await count_rows(conn, access.db.id, access.owner)
        )
    body_rows = [_row(k, r, docs, include_docs) for k, r in rows]
    head: dict[str, Any] = {"total_rows": total, "offset": skip if keys is None else 0}
    if query_bool(request, "update_seq"):
        head["update_seq"] = access.db.update_seq
    encoded = orjson.dumps(head)[:-1] + b',"rows":[' + b",\n".join(body_rows) + b"]}"
    return raw_json_response(encoded)


async def _docs(conn, access: DbAccess, rows, options: RenderOptions) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    live = [r for _, r in rows if r is not None and not r.deleted]
    answers = await fetch_docs(
        conn,
        access.db.id,
        [FetchRequest(r.doc_id) for r in live],
        owner=access.owner,
        options=options,
        revs_limit=access.db.revs_limit,
    )
    return {r.doc_id: a[0].doc for r, a in zip(live, answers, strict=True) if a[0].doc}


def _row(key: str, row: DocRow | None, docs: dict[str, bytes], include_docs: bool) -> bytes:
    if row is None:
        return orjson.dumps({"key": key, "error": "not_found"})
    value: dict[str, Any] = {"rev": row.winning_rev}
    if row.deleted:
        value["deleted"] = True
    head = orjson.dumps({"id": row.doc_id, "key": row.doc_id, "value": value})
    if not include_docs:
        return head
    doc = docs.get(row.doc_id, b"null")
    return head[:-1] + b',"doc":' + doc + b"}"
