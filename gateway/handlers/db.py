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
from schema.conflicts import count_open
from schema.databases import (
    create_database,
    delete_database,
    set_conflict_policy,
    set_revs_limit,
)
from schema.engine import raw_read, write_transaction
from schema.reads import count_rows


async def put_db(request: web.Request) -> web.Response:
    """``PUT /{db}`` (admins): create a database; ``?access_mode=owned|shared|readonly``."""
    require_admin(context(request).user)
    name = db_name(request)
    mode = request.query.get("access_mode", "owned")
    policy = request.query.get("conflict_policy", "manual")
    async with write_transaction(request.app[ENGINE]) as conn:
        await create_database(conn, name, access_mode=mode, conflict_policy=policy)
    return json_response({"ok": True}, status=201, headers={"Location": f"/{name}"})


async def get_db(request: web.Request) -> web.Response:
    """``GET /{db}``: database info (counts are the caller's own in ``owned`` databases)."""
    access = await open_db(request)
    db = access.db
    doc_count = db.doc_count
    async with raw_read(request.app[ENGINE]) as conn:
        if access.owner is not None:
            doc_count = await count_rows(conn, db.id, access.owner)
        open_conflicts = await count_open(conn, db.id, access.owner)
    return json_response(
        {
            "db_name": db.name,
            "update_seq": db.update_seq,
            "committed_update_seq": db.update_seq,
            "purge_seq": db.purge_seq,
            "doc_count": doc_count,
            "doc_del_count": db.doc_del_count if access.owner is None else 0,
            "instance_start_time": db.instance_start_time,
            "compact_running": False,
            "disk_format_version": 8,
            "sizes": {"file": 0, "external": 0, "active": 0},
            "props": {},
            "access_mode": db.access_mode,
            "conflict_policy": db.conflict_policy,
            "open_conflicts": open_conflicts,
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


async def get_conflict_policy(request: web.Request) -> web.Response:
    """``GET /{db}/_conflict_policy``: ``"manual"``, ``"merge"``, ...  (like ``_revs_limit``)."""
    access = await open_db(request)
    return json_response(access.db.conflict_policy)


async def put_conflict_policy(request: web.Request) -> web.Response:
    """``PUT /{db}/_conflict_policy`` (admins): a JSON string body, e.g. ``"server_wins"``."""
    access = await open_db(request)
    require_admin(access.user)
    policy = await read_json(request)
    async with write_transaction(request.app[ENGINE]) as conn:
        await set_conflict_policy(conn, access.db.name, policy)
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
