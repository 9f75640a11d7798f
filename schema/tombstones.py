"""Purging old tombstones without resurrecting deleted documents on offline replicas.

A tombstone can only go once every replica that might still hold the live document has
seen it.  The gateway knows its replicas by their registered checkpoints (``local_docs``):
a tombstone at seq S is purged only when every checkpoint of an active (not disabled) user
in that database records a seq >= S.  ``force`` ignores that; the database's ``purge_seq``
then moves past checkpoints that have not caught up, and ``_changes`` tells those replicas
to reset instead of letting them resume and silently keep the deleted documents.

Purging deletes the document row; its revisions and ConflictRecords go with it (foreign
keys, ``ON DELETE CASCADE``), in batches, each its own transaction under the database lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schema.databases import Database, list_databases, lock_database
from schema.engine import write_transaction
from schema.tables import databases, documents, local_docs, users

BATCH = 500


@dataclass(slots=True)
class PurgeReport:
    """What a purge found and did in one database."""

    db: str
    eligible: int = 0  # tombstones older than the cut-off
    purged: int = 0  # removed (or, in a dry run, that would be)
    protected: int = 0  # kept: a registered checkpoint has not passed them yet
    horizon: int | None = None  # the oldest checkpoint seq of an active user
    purge_seq: int = 0  # the database's purge_seq afterwards


async def checkpoint_horizon(conn: AsyncConnection, db_id: int) -> int | None:
    """The lowest seq any active user's checkpoint records in the database (None: none)."""
    return (
        await conn.execute(
            select(func.min(local_docs.c.checkpoint_seq))
            .select_from(local_docs.join(users, users.c.id == local_docs.c.user_id))
            .where(
                local_docs.c.db_id == db_id,
                local_docs.c.checkpoint_seq.is_not(None),
                users.c.disabled.is_(False),
            )
        )
    ).scalar_one()


async def purge_tombstones(
    engine: AsyncEngine,
    db_name: str | None,
    older_than: timedelta,
    *,
    dry_run: bool = False,
    force: bool = False,
    now: datetime | None = None,
) -> list[PurgeReport]:
    """Purge tombstones older than ``older_than`` in one database (or all); see the module."""
    cutoff = (now or datetime.now(UTC)) - older_than
    if db_name is None:
        async with write_transaction(engine) as conn:
            names = await list_databases(conn)
    else:
        names = [db_name]
    return [await _purge_one(engine, name, cutoff, dry_run, force) for name in names]


async def _purge_one(
    engine: AsyncEngine, name: str, cutoff: datetime, dry_run: bool, force: bool
) -> PurgeReport:
    report = PurgeReport(name)
    after_seq = 0
    while True:
        async with write_transaction(engine) as conn:
            db = await lock_database(conn, name)
            report.horizon = await checkpoint_horizon(conn, db.id)
            rows = (
                await conn.execute(
                    select(documents.c.doc_id, documents.c.seq)
                    .where(
                        documents.c.db_id == db.id,
                        documents.c.deleted.is_(True),
                        documents.c.updated_at < cutoff,
                        documents.c.seq > after_seq,
                    )
                    .order_by(documents.c.seq)
                    .limit(BATCH)
                )
            ).all()
            if not rows:
                report.purge_seq = db.purge_seq
                return report
            after_seq = rows[-1][1]
            limit = None if force or report.horizon is None else report.horizon
            doomed = [(doc_id, seq) for doc_id, seq in rows if limit is None or seq <= limit]
            report.eligible += len(rows)
            report.purged += len(doomed)
            report.protected += len(rows) - len(doomed)
            if doomed and not dry_run:
                await _delete(conn, db, doomed)


async def _delete(conn: AsyncConnection, db: Database, doomed: list[tuple[str, int]]) -> None:
    await conn.execute(
        delete(documents).where(
            documents.c.db_id == db.id, documents.c.doc_id.in_([d for d, _ in doomed])
        )
    )
    newest = max(seq for _, seq in doomed)
    await conn.execute(
        update(databases)
        .where(databases.c.id == db.id)
        .values(
            doc_del_count=databases.c.doc_del_count - len(doomed),
            purge_seq=case((databases.c.purge_seq > newest, databases.c.purge_seq), else_=newest),
        )
    )


def parse_age(raw: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s`` (or ``2w``) → a duration; ``ValueError`` otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = raw.strip().lower()
    number = text[:-1]
    if not text or text[-1] not in units or not (number.isascii() and number.isdigit()):
        raise ValueError(f"not a duration: {raw!r} (use e.g. 90d, 12h, 30m)")
    seconds = int(number) * units[text[-1]]
    if seconds > MAX_AGE_SECONDS:  # beyond this, "now minus the age" is no date at all
        raise ValueError(f"{raw!r} is longer than the 100 years a cutoff can go back")
    return timedelta(seconds=seconds)


MAX_AGE_SECONDS = 100 * 366 * 86_400
