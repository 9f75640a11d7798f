"""Per-request helpers shared by handlers: open a database for the caller, write edits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway.access import owner_scope, require_write
from gateway.auth import DB_KEY, context
from gateway.callers import confirmed
from gateway.keys import ENGINE, NOTIFIER
from gateway.metrics import (
    count_docs_written,
    metrics_of,
)
from gateway.stats import count_in
from replication import DocEdit, NotFound
from schema.batch import WriteResult
from schema.callers import CallerCheck, RecheckCaller
from schema.conflicts import ConflictTally
from schema.databases import Database, get_database, validate_db_name
from schema.documents import update_docs
from schema.engine import is_sqlite, read_transaction, write_transaction
from schema.rules import has_rules
from schema.users import User
from schema.write_pg import update_docs_optimistic


@dataclass(frozen=True, slots=True)
class DbAccess:
    """A database as one caller sees it."""

    db: Database
    user: User
    owner: int | None  # restrict every query to this owner (None: all documents)
    # a remembered caller (gateway.callers) that this request's write must confirm
    check: CallerCheck | None = None


def db_name(request: web.Request) -> str:
    """Return the validated ``{db}`` of the URL."""
    return validate_db_name(request.match_info["db"])


async def open_db(request: web.Request) -> DbAccess:
    """Look up the URL's database for the authenticated caller (404 if it does not exist)."""
    ctx = context(request)
    user = ctx.user
    name = db_name(request)
    found = request.get(DB_KEY)
    if found is not None and found[0] == name:
        if found[1] is None:
            raise NotFound("Database does not exist.")
        db = found[1]
    else:
        async with read_transaction(request.app[ENGINE]) as conn:
            db = await get_database(conn, name)
    return DbAccess(db, user, owner_scope(user, db), ctx.check)


def device_of(request: web.Request) -> str | None:
    """The client's device id (``X-Device-Id``), recorded with the conflicts it causes."""
    device = request.headers.get("X-Device-Id")
    if not device or len(device) > 200 or not device.isprintable():
        return None
    return device


async def write_edits(
    request: web.Request, access: DbAccess, edits: Sequence[DocEdit], *, new_edits: bool
) -> list[WriteResult]:
    """Apply edits in one transaction, then wake the database's feed listeners."""
    require_write(access.user, access.db)
    engine = request.app[ENGINE]
    optimistic = not is_sqlite(engine) and not has_rules(access.db)
    if access.check is not None and not (edits and optimistic):
        raise RecheckCaller()  # only the one-statement write confirms a remembered caller
    if not edits:
        return []
    options = {
        "new_edits": new_edits,
        "user_id": access.user.id,
        "owner_scope": access.owner,
        "role": access.user.role,
    }
    results = None
    # PostgreSQL: two round trips; the locking path if it keeps losing races, when the batch
    # touches a conflict, and for databases with rules (they read and write more rows)
    if optimistic:
        results = await update_docs_optimistic(
            engine, access.db, edits, check=access.check, **options
        )
        if results is not None and access.check is not None:
            confirmed(request)
    if results is None:
        if access.check is not None:  # the locking path does not confirm it
            raise RecheckCaller()
        tally = ConflictTally()  # only this path opens and closes ConflictRecords
        async with write_transaction(engine) as conn:
            _, results = await update_docs(
                conn, access.db.name, edits, device=device_of(request), tally=tally, **options
            )
        metrics = metrics_of(request.app)
        if metrics is not None:
            metrics.record_conflicts(access.db.name, tally.opened, tally.closed)
    written = sum(1 for r in results if r.error is None)
    await written_docs(request, access.db.name, written)
    return results


async def written_docs(request: web.Request, db_name: str, written: int) -> None:
    """After a committed write of ``written`` documents, by any route (CouchDB or REST):
    count them (``/metrics``, the dashboard's per-minute chart) and wake the feeds."""
    count_docs_written(request, db_name, written)
    count_in(request.app, written)
    if written:
        await request.app[NOTIFIER].notify(db_name)
