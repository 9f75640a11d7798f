"""The databases behind the REST API (``inspections``, ``templates``), created on first use."""

from __future__ import annotations

import logging

from aiohttp import web
from sqlalchemy.exc import DBAPIError

from gateway.access import owner_scope
from gateway.auth import context
from gateway.dbctx import DbAccess
from gateway.keys import ENGINE
from schema.databases import ensure_database, get_database
from schema.engine import read_transaction, write_transaction

log = logging.getLogger("gateway.restdb")
MODES = {"inspections": "owned", "templates": "readonly"}
READY: web.AppKey[set[str]] = web.AppKey("gateway_rest_dbs", set)


async def ensure_rest_databases(app: web.Application) -> None:
    """Create the REST databases at start-up, so CouchDB clients can replicate them before
    any REST call; if the database server is not reachable yet, first use creates them."""
    try:
        async with write_transaction(app[ENGINE]) as conn:
            for name, mode in MODES.items():
                await ensure_database(conn, name, access_mode=mode)
    except (OSError, DBAPIError) as exc:
        log.warning("could not create the REST databases at start-up: %s", exc)
        return
    app[READY].update(MODES)


async def rest_db(request: web.Request, name: str) -> DbAccess:
    """The REST database ``name`` as the caller sees it (created with its mode if missing)."""
    user = context(request).user
    ready = request.app[READY]
    engine = request.app[ENGINE]
    if name in ready:
        async with read_transaction(engine) as conn:
            db = await get_database(conn, name)
    else:
        async with write_transaction(engine) as conn:
            db = await ensure_database(conn, name, access_mode=MODES[name])
        ready.add(name)
    return DbAccess(db, user, owner_scope(user, db))
