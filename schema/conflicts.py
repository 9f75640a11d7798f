"""ConflictRecords in the database: kept in step with the revision trees, listed, read.

``sync_records`` runs inside the write transaction of every batch that touches a document
with two or more live leaves (before or after), so a record exists exactly when its
conflict does (``replication.conflicts.plan_records``).  Bodies are copied into the
record when it is opened or moved, so a record stays readable (and mergeable) even after
compaction or stemming drops the revisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Integer, Select, and_, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from replication import NotFound, winning_rev
from replication.compaction import common_ancestor
from replication.conflicts import OpenRecord, RecordPlan, plan_records
from schema import rawpg
from schema.batch import Touched
from schema.databases import Database
from schema.reads import get_revisions
from schema.tables import conflicts, databases, users
from schema.times import iso

OPEN = "open"
STATUSES = ("open", "resolved", "auto_resolved")


@dataclass(slots=True)
class ConflictTally:
    """What writes did to ConflictRecords, counted where it happens (for ``/metrics``)."""

    opened: int = 0
    closed: dict[str, int] = field(default_factory=dict)  # by strategy

    def close(self, strategy: str, count: int) -> None:
        if count:
            self.closed[strategy] = self.closed.get(strategy, 0) + count


@dataclass(frozen=True, slots=True)
class Closing:
    """How records closed by a write are marked (a resolution, or a replicated edit)."""

    status: str = "resolved"
    strategy: str = "replicated"
    user_id: int | None = None


async def sync_records(
    conn: AsyncConnection,
    db: Database,
    touched: Sequence[Touched],
    *,
    user_id: int | None,
    device: str | None,
    closing: Closing,
    tally: ConflictTally | None = None,
) -> list[int]:
    """Open, move and close the records of ``touched`` documents; return the opened ids
    (and count them in ``tally``)."""
    by_doc = {t.doc_id: t for t in touched}
    c = conflicts.c
    query = select(c.id, c.doc_id, c.leaf_rev, c.mine_rev, c.theirs_rev).where(
        c.db_id == db.id, c.doc_id.in_(list(by_doc)), c.status == OPEN
    )
    open_by_doc: dict[str, list[OpenRecord]] = {}
    for rid, doc_id, leaf, mine, theirs in await conn.execute(query):
        open_by_doc.setdefault(doc_id, []).append(OpenRecord(rid, leaf, mine, theirs))
    plans = {
        doc_id: plan_records(t.tree, open_by_doc.get(doc_id, []), t.incoming)
        for doc_id, t in by_doc.items()
    }
    closed = await _close(conn, db, plans, by_doc, closing)
    opened = await _open_and_move(conn, db, plans, by_doc, user_id, device)
    if tally is not None:
        tally.opened += len(opened)
        tally.close(closing.strategy, closed)
    return opened


async def _close(
    conn: AsyncConnection,
    db: Database,
    plans: dict[str, RecordPlan],
    by_doc: dict[str, Touched],
    closing: Closing,
) -> int:
    """Close the records the plans close; return how many were open."""
    closed = 0
    for doc_id, plan in plans.items():
        if not plan.close:
            continue
        result = await conn.execute(
            update(conflicts)
            .where(conflicts.c.id.in_(plan.close), conflicts.c.status == OPEN)
            .values(
                status=closing.status,
                strategy=closing.strategy,
                resolved_by=closing.user_id,
                resolved_rev=winning_rev(by_doc[doc_id].tree).rev,
                resolved_at=func.now(),
                updated_at=func.now(),
            )
        )
        closed += result.rowcount
    return closed


async def _open_and_move(
    conn: AsyncConnection,
    db: Database,
    plans: dict[str, RecordPlan],
    by_doc: dict[str, Touched],
    user_id: int | None,
    device: str | None,
) -> list[int]:
    # (doc_id, leaf, mine, theirs, the id of the record that moves, or None to open one)
    rows: list[tuple[str, str, str, str, int | None]] = []
    for doc_id, plan in plans.items():
        rows.extend((doc_id, leaf, m, t, None) for leaf, m, t in plan.create)
        rows.extend((doc_id, leaf, m, t, rid) for rid, leaf, m, t in plan.move)
    if not rows:
        return []
    ancestors = {(d, m, t): common_ancestor(by_doc[d].tree, m, t) for d, _, m, t, _ in rows}
    wanted = [(d, r) for d, _, m, t, _ in rows for r in (m, t, ancestors[(d, m, t)]) if r]
    bodies = {key: row.body for key, row in (await get_revisions(conn, db.id, wanted)).items()}
    opened: list[int] = []
    for doc_id, leaf, mine, theirs, moving in rows:
        ancestor = ancestors[(doc_id, mine, theirs)]
        values = {
            "leaf_rev": leaf,
            "mine_rev": mine,
            "mine_body": bodies.get((doc_id, mine)),
            "theirs_rev": theirs,
            "theirs_body": bodies.get((doc_id, theirs)),
            "ancestor_rev": ancestor,
            "ancestor_body": bodies.get((doc_id, ancestor)) if ancestor else None,
            "updated_at": func.now(),
        }
        if moving is not None:
            await conn.execute(update(conflicts).where(conflicts.c.id == moving).values(**values))
            continue
        created = await conn.execute(
            insert(conflicts)
            .values(
                db_id=db.id, doc_id=doc_id, owner_id=by_doc[doc_id].owner_id, status=OPEN,
                pushed_by=user_id, device=device, **values,
            )
            .returning(conflicts.c.id)
        )  # fmt: skip
        opened.append(created.scalar_one())
    return opened


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    id: int
    db: str
    db_id: int
    doc_id: str
    owner_id: int | None
    status: str
    strategy: str | None
    mine_rev: str | None
    mine_body: bytes | None
    theirs_rev: str
    theirs_body: bytes | None
    ancestor_rev: str | None
    ancestor_body: bytes | None
    pushed_by: str | None
    device: str | None
    created_at: datetime | None
    updated_at: datetime | None
    resolved_by: str | None
    resolved_rev: str | None
    resolved_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "db": self.db,
            "doc_id": self.doc_id,
            "status": self.status,
            "strategy": self.strategy,
            "mine": {"rev": self.mine_rev, "body": _body(self.mine_body)},
            "theirs": {"rev": self.theirs_rev, "body": _body(self.theirs_body)},
            "ancestor": {"rev": self.ancestor_rev, "body": _body(self.ancestor_body)},
            "pushed_by": self.pushed_by,
            "device": self.device,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "resolved_by": self.resolved_by,
            "resolved_rev": self.resolved_rev,
            "resolved_at": iso(self.resolved_at),
        }


def _body(raw: bytes | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def _select() -> Select[Any]:
    pusher = users.alias("pusher")
    resolver = users.alias("resolver")
    c = conflicts.c
    return select(
        c.id, databases.c.name, c.db_id, c.doc_id, c.owner_id, c.status, c.strategy,
        c.mine_rev, c.mine_body, c.theirs_rev, c.theirs_body, c.ancestor_rev, c.ancestor_body,
        pusher.c.name, c.device, c.created_at, c.updated_at, resolver.c.name, c.resolved_rev,
        c.resolved_at,
    ).select_from(
        conflicts.join(databases, databases.c.id == c.db_id)
        .outerjoin(pusher, pusher.c.id == c.pushed_by)
        .outerjoin(resolver, resolver.c.id == c.resolved_by)
    )  # fmt: skip


async def get_conflict(conn: AsyncConnection, record_id: int) -> ConflictRecord:
    """One record by id, or ``NotFound``."""
    row = (await conn.execute(_select().where(conflicts.c.id == record_id))).first()
    if row is None:
        raise NotFound("No such conflict.")
    return ConflictRecord(*row)


async def list_conflicts(
    conn: AsyncConnection,
    *,
    db: str | None = None,
    status: str | None = None,
    doc_id: str | None = None,
    owner: int | None = None,
    after_id: int = 0,
    limit: int = 50,
) -> list[ConflictRecord]:
    """Records in id order after ``after_id`` (keyset pagination), filtered; ``owner``
    restricts to documents that user owns."""
    stmt = _select().where(conflicts.c.id > after_id)
    if db is not None:
        stmt = stmt.where(databases.c.name == db)
    if status is not None:
        stmt = stmt.where(conflicts.c.status == status)
    if doc_id is not None:
        stmt = stmt.where(conflicts.c.doc_id == doc_id)
    if owner is not None:
        stmt = stmt.where(conflicts.c.owner_id == owner)
    rows = await conn.execute(stmt.order_by(conflicts.c.id).limit(limit))
    return [ConflictRecord(*row) for row in rows]


async def count_open(conn: AsyncConnection, db_id: int, owner: int | None = None) -> int:
    """Open records of a database (of one owner's documents when ``owner`` is set)."""
    params = {"db_id": db_id, "owner": owner}
    (row,) = await rawpg.rows(conn, _count_open_statement(owner is not None), params)
    return int(row[0])


@cache
def _count_open_statement(by_owner: bool) -> Select[Any]:
    cond = and_(conflicts.c.db_id == bindparam("db_id", type_=Integer), conflicts.c.status == OPEN)
    if by_owner:
        cond = and_(cond, conflicts.c.owner_id == bindparam("owner", type_=Integer))
    return select(func.count()).where(cond)


async def mark_resolved(
    conn: AsyncConnection,
    record_id: int,
    closing: Closing,
    resolved_rev: str,
    tally: ConflictTally | None = None,
) -> None:
    """Close one record (those the tree no longer ties to a branch are closed here)."""
    result = await conn.execute(
        update(conflicts)
        .where(conflicts.c.id == record_id, conflicts.c.status == OPEN)
        .values(
            status=closing.status,
            strategy=closing.strategy,
            resolved_by=closing.user_id,
            resolved_rev=resolved_rev,
            resolved_at=func.now(),
            updated_at=func.now(),
        )
    )
    if tally is not None:
        tally.close(closing.strategy, result.rowcount)
