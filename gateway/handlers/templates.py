"""``/api/v1/templates``: inspection templates, read by everyone, written by managers.

Templates are the documents of the ``templates`` database (``schema.templates``), so
PouchDB clients may replicate them too; the database's ``readonly`` mode decides who writes
(``gateway.access.require_write``), on this API and over CouchDB alike.

Reads carry a strong ``ETag`` (``"<rev>"`` for one template, a digest of the page's
``(id, rev)`` pairs for a list), answer ``If-None-Match`` with ``304`` and say
``Cache-Control: private, no-cache`` (clients keep them but revalidate every time).  The
rendered JSON and its ETag are cached (``gateway.cache``: Redis when configured, else in
process) under keys holding the database's ``update_seq``: any write, through this API or
through replication, moves the seq and so the keys, and nothing is ever invalidated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import orjson
from aiohttp import web

from gateway.access import require_write
from gateway.cache import CachedResponse, response_cache
from gateway.dbctx import DbAccess, written_docs
from gateway.errors import status_of
from gateway.etags import none_match
from gateway.idempotency import store_with_write
from gateway.jsonio import json_response, query_int, raw_json_response, read_json_object
from gateway.keys import ENGINE, SETTINGS
from gateway.ratelimit import key_part
from gateway.restdb import rest_db
from gateway.validation import check_document
from replication import BadRequest
from schema.databases import Database
from schema.engine import read_transaction, write_transaction
from schema.templates import (
    StaleVersion,
    change_template,
    create_template,
    get_template,
    list_templates,
    new_template_id,
    template_id,
)

DB = "templates"
API = "/api/v1/templates"
MAX_LIMIT = 200
CACHE_TTL_SECONDS = 300
CACHE_CONTROL = "private, no-cache"


# --- conditional responses ---------------------------------------------------------------


def conditional(request: web.Request, cached: CachedResponse) -> web.Response:
    """``cached`` with its ETag, or ``304`` without a body when the client already has it."""
    headers = {"ETag": cached.etag, "Cache-Control": CACHE_CONTROL}
    if none_match(request, cached.etag):
        return web.Response(status=304, headers=headers)
    return raw_json_response(cached.body, headers=headers)


def list_etag(page: list[dict[str, Any]], cursor: str | None) -> str:
    """A strong ETag for a page: a digest of its ``(id, rev)`` pairs and its next cursor."""
    pairs = [[t["id"], t["rev"]] for t in page]
    digest = hashlib.sha256(orjson.dumps([pairs, cursor])).hexdigest()[:32]
    return f'"{digest}"'


def _scope(access: DbAccess) -> str:
    """The cache key prefix of the database's current state (and the caller's scope)."""
    db: Database = access.db
    owner = "" if access.owner is None else f":u{access.owner}"
    return f"tpl:{db.id}.{db.instance_start_time}:{db.update_seq}{owner}"


# --- requests ----------------------------------------------------------------------------


def _path_id(request: web.Request) -> str:
    return template_id(request.match_info["template_id"])


def _cursor(raw: str | None) -> str:
    if not raw:
        return ""
    try:
        padded = raw.encode("ascii") + b"=" * (-len(raw) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise BadRequest("Invalid cursor") from exc


def _version(raw: object) -> int:
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 19:
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return raw
    raise BadRequest("version (a positive integer) is required")


def _stale(exc: StaleVersion) -> web.Response:
    body = {"error": exc.error, "reason": exc.reason, "current": exc.current}
    return json_response(body, status=status_of(exc))


async def _writable(request: web.Request) -> DbAccess:
    access = await rest_db(request, DB)
    require_write(access.user, access.db)
    return access


# --- handlers ----------------------------------------------------------------------------


async def list_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/templates?limit=&cursor=``: live templates in id order."""
    access = await rest_db(request, DB)
    limit = query_int(request, "limit", 50, minimum=1) or 50
    if limit > MAX_LIMIT:
        raise BadRequest(f"limit must be at most {MAX_LIMIT}")
    after = _cursor(request.query.get("cursor"))
    cache = response_cache(request.app)
    key = f"{_scope(access)}:list:{limit}:{key_part(after)}"
    cached = await cache.get(key)
    if cached is None:
        async with read_transaction(request.app[ENGINE]) as conn:
            found = await list_templates(
                conn, access.db, owner=access.owner, after=after, limit=limit + 1
            )
        page = found[:limit]
        more = len(found) > limit
        cursor = (
            base64.urlsafe_b64encode(page[-1]["id"].encode()).decode().rstrip("=") if more else None
        )
        body = orjson.dumps({"results": page, "next": cursor})
        cached = CachedResponse(list_etag(page, cursor), body)
        await cache.set(key, cached, CACHE_TTL_SECONDS)
    return conditional(request, cached)


async def get_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/templates/{id}``: ETag ``"<rev>"``, 304 on a matching If-None-Match."""
    access = await rest_db(request, DB)
    doc_id = _path_id(request)
    cache = response_cache(request.app)
    key = f"{_scope(access)}:item:{key_part(doc_id)}"
    cached = await cache.get(key)
    if cached is None:
        async with read_transaction(request.app[ENGINE]) as conn:
            found = await get_template(conn, access.db, doc_id, access.owner)
        cached = CachedResponse(f'"{found["rev"]}"', orjson.dumps(found))
        await cache.set(key, cached, CACHE_TTL_SECONDS)
    return conditional(request, cached)


async def create_handler(request: web.Request) -> web.Response:
    """``POST /api/v1/templates {"id"?, "name", "description"?, "fields"?, "active"?}`` →
    201 (managers and admins)."""
    access = await _writable(request)
    data = await read_json_object(request)
    check_document(data, request.app[SETTINGS])
    doc_id = new_template_id(data.pop("id", None))
    user = access.user
    async with write_transaction(request.app[ENGINE]) as conn:
        made = await create_template(
            conn, DB, doc_id, data, user_id=user.id, user_name=user.name, role=user.role
        )
        headers = {"ETag": f'"{made["rev"]}"', "Location": f"{API}/{doc_id}"}
        resp = json_response(made, status=201, headers=headers)
        # with the write: a crash cannot leave a generated id without its stored answer
        await store_with_write(request, conn, resp)
    await written_docs(request, DB, 1)
    return resp


async def patch_handler(request: web.Request) -> web.Response:
    """``PATCH /api/v1/templates/{id} {"version", ...fields}``: 409 with the server's
    template on a stale version."""
    access = await _writable(request)
    data = await read_json_object(request)
    if "version" not in data:
        raise BadRequest("version (a positive integer) is required")
    version = _version(data.pop("version"))
    check_document(data, request.app[SETTINGS])
    return await _change(request, access, version, data)


async def delete_handler(request: web.Request) -> web.Response:
    """``DELETE /api/v1/templates/{id}?version=N``: a soft delete (a tombstone replicas
    pull like any deletion)."""
    access = await _writable(request)
    raw = request.query.get("version")
    if raw is None and request.can_read_body:
        raw = (await read_json_object(request)).get("version")
    return await _change(request, access, _version(raw), None)


async def _change(
    request: web.Request, access: DbAccess, version: int, data: dict[str, Any] | None
) -> web.Response:
    doc_id = _path_id(request)
    user = access.user
    try:
        async with write_transaction(request.app[ENGINE]) as conn:
            changed = await change_template(
                conn, DB, doc_id, version, data, user_id=user.id, user_name=user.name,
                role=user.role,
            )  # fmt: skip
            resp = json_response(changed, headers={"ETag": f'"{changed["rev"]}"'})
            await store_with_write(request, conn, resp)
    except StaleVersion as exc:
        return _stale(exc)
    await written_docs(request, DB, 1)
    return resp
