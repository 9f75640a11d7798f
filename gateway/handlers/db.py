"""Database routes: create, info, delete, and the small per-database endpoints."""

from __future__ import annotations

from aiohttp import web

from gateway.access import require_admin, require_staff
from gateway.auth import context
from gateway.dbctx import db_name, open_db
from gateway.jsonio import json_response, read_json
from gateway.keys import ENGINE
from replication import BadRequest
from schema.compaction import compact_database
from schema.databases import create_database, delete_database, set_revs_limit
from schema.engine import read_transaction, write_transaction
from schema.reads import count_rows


async def put_db(request: web.Request) -> web.Response:
    """``PUT /{db}`` (admins): create a database; ``?access_mode=owned|shared|readonly``."""
    require_admin(context(request).user)
    name = db_name(request)
    mode = request.query.get("access_mode", "owned")
    async with write_transaction(request.app[ENGINE]) as conn:
        await create_database(conn, name, access_mode=mode)
    return json_response({"ok": True}, status=201, headers={"Location": f"/{name}"})


async def get_db(request: web.Request) -> web.Response:
    """``GET /{db}``: database info (counts are the caller's own in ``owned`` databases)."""
    access = await open_db(request)
    db = access.db
    doc_count = db.doc_count
    if access.owner is not None:
        async with read_transaction(request.app[ENGINE]) as conn:
            doc_count = await count_rows(conn, db.id, access.owner)
    return json_response(
        {
            "db_name": db.name,
            "update_seq": db.update_seq,
            "committed_update_seq": db.update_seq,
            "purge_seq": 0,
            "doc_count": doc_count,
            "doc_del_count": db.doc_del_count if access.owner is None else 0,
            "instance_start_time": db.instance_start_time,
            "compact_running": False,
            "disk_format_version": 8,
            "sizes": {"file": 0, "external": 0, "active": 0},
            "props": {},
            "access_mode": db.access_mode,
            "conflict_policy": db.conflict_policy,
            "revs_limit": db.revs_limit,
        }
    )


async def delete_db(request: web.Request) -> web.Response:
    """``DELETE /{db}`` (admins)."""
    require_admin(context(request).user)
    if "rev" in request.query:
        raise BadRequest(
            "You tried to DELETE a database with a ?rev= parameter. "
            "Did you mean to DELETE a document instead?"
        )
    async with write_transaction(request.app[ENGINE]) as conn:
        await delete_database(conn, db_name(request))
    return json_response({"ok": True})


async def ensure_full_commit(request: web.Request) -> web.Response:
    """``POST /{db}/_ensure_full_commit``: every write is already durable at commit."""
    access = await open_db(request)
    return json_response(
        {"ok": True, "instance_start_time": access.db.instance_start_time}, status=201
    )


async def get_revs_limit(request: web.Request) -> web.Response:
    """``GET /{db}/_revs_limit``."""
    access = await open_db(request)
    return json_response(access.db.revs_limit)


async def put_revs_limit(request: web.Request) -> web.Response:
    """``PUT /{db}/_revs_limit`` (staff): a positive integer body."""
    access = await open_db(request)
    require_staff(access.user, "change revs_limit")
    limit = await read_json(request)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1_000_000:
        raise BadRequest("revs_limit must be a positive integer")
    async with write_transaction(request.app[ENGINE]) as conn:
        await set_revs_limit(conn, access.db.name, limit)
    return json_response({"ok": True})


async def compact(request: web.Request) -> web.Response:
    """``POST /{db}/_compact`` (staff): drop bodies nobody can need any more."""
    access = await open_db(request)
    require_staff(access.user, "compact")
    stats = await compact_database(request.app[ENGINE], access.db.name)
    return json_response({"ok": True, **stats}, status=202)


async def get_security(request: web.Request) -> web.Response:
    """``GET /{db}/_security``: a read-only view of the access mode."""
    access = await open_db(request)
    mode = access.db.access_mode
    members = ["manager", "inspector"] if mode != "readonly" else ["manager"]
    return json_response(
        {
            "admins": {"names": [], "roles": ["admin"]},
            "members": {"names": [], "roles": members},
            "access_mode": mode,
        }
    )
