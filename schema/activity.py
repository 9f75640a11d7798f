"""Server-wide views of change: which databases changed (``_db_updates``) and what changed
in them, by whom (the manager's activity feed).

Every write advances its database's ``change_seq`` from one server-wide counter, so
"databases changed since N" is one indexed query.  The activity feed then reads, for each
database that changed, its documents after the seq the reader last saw there (a position
per database), so it never skips a change within a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from schema.tables import databases, documents, users
from schema.times import iso


@dataclass(frozen=True, slots=True)
class DbUpdate:
    name: str
    db_id: int
    update_seq: int
    change_seq: int


async def db_updates(conn: AsyncConnection, since: int, limit: int) -> list[DbUpdate]:
    """Databases whose latest change is after server-wide change ``since``, oldest first."""
    rows = await conn.execute(
        select(databases.c.name, databases.c.id, databases.c.update_seq, databases.c.change_seq)
        .where(databases.c.change_seq > since)
        .order_by(databases.c.change_seq)
        .limit(limit)
    )
    return [DbUpdate(*row) for row in rows]


async def latest_change(conn: AsyncConnection) -> int:
    """The newest server-wide change number (0 with no writes yet)."""
    found = await conn.execute(select(func.max(databases.c.change_seq)))
    return found.scalar_one() or 0


@dataclass(frozen=True, slots=True)
class Activity:
    db: str
    seq: int
    id: str
    rev: str
    deleted: bool
    user: str | None
    at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "db": self.db,
            "seq": self.seq,
            "id": self.id,
            "rev": self.rev,
            "deleted": self.deleted,
            "user": self.user,
            "at": iso(self.at),
        }


def _select() -> Any:
    return select(
        documents.c.seq,
        documents.c.doc_id,
        documents.c.winning_rev,
        documents.c.deleted,
        users.c.name,
        documents.c.updated_at,
    ).select_from(documents.outerjoin(users, users.c.id == documents.c.updated_by))


async def changes_after(
    conn: AsyncConnection, db: DbUpdate, after_seq: int, limit: int
) -> list[Activity]:
    """One database's documents changed after ``after_seq`` (the latest change of each)."""
    rows = await conn.execute(
        _select()
        .where(documents.c.db_id == db.db_id, documents.c.seq > after_seq)
        .order_by(documents.c.seq)
        .limit(limit)
    )
    return [Activity(db.name, *row) for row in rows]


async def recent(conn: AsyncConnection, limit: int) -> list[Activity]:
    """The ``limit`` most recently changed documents across databases, newest first."""
    rows = await conn.execute(
        _select()
        .add_columns(databases.c.name)
        .join(databases, databases.c.id == documents.c.db_id)
        .order_by(documents.c.updated_at.desc(), documents.c.seq.desc())
        .limit(limit)
    )
    return [Activity(row[6], *row[:6]) for row in rows]


async def positions(conn: AsyncConnection) -> tuple[int, dict[str, int]]:
    """Where every database is now: (the latest change number, {db name: update_seq})."""
    rows = (
        await conn.execute(select(databases.c.name, databases.c.update_seq, databases.c.change_seq))
    ).all()
    return max((r[2] for r in rows), default=0), {r[0]: r[1] for r in rows}


async def activity_since(
    conn: AsyncConnection, change: int, seen: Mapping[str, int], limit: int
) -> tuple[list[Activity], int, dict[str, int]]:
    """Changes after a position (``change``, ``seen``); return them and the new position.

    A database with more than ``limit`` new changes is read up to ``limit`` and its
    position only moves that far, so nothing is skipped; the change number then stays
    where it was (the next call reads the rest).
    """
    updated = await db_updates(conn, change, 1000)
    out: list[Activity] = []
    new_seen = dict(seen)
    complete = True
    for db in updated:
        if len(out) >= limit:
            complete = False
            break
        rows = await changes_after(conn, db, seen.get(db.name, 0), limit - len(out) + 1)
        if len(rows) > limit - len(out):
            rows = rows[: limit - len(out)]
            complete = False
        out.extend(rows)
        if rows:
            new_seen[db.name] = rows[-1].seq
        if complete:
            new_seen[db.name] = max(new_seen.get(db.name, 0), db.update_seq)
    new_change = updated[-1].change_seq if updated and complete else change
    return out, new_change, new_seen
