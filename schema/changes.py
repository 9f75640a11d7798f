"""Reading the changes feed: one row per document, at its latest seq, in seq order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from schema.reads import owner_clause
from schema.tables import documents, revisions


@dataclass(frozen=True, slots=True)
class ChangeRow:
    seq: int
    doc_id: str
    winning_rev: str
    deleted: bool
    leaves: list[list[object]]
    body: bytes | None
    attachments: bytes | None


async def read_changes(
    conn: AsyncConnection,
    db_id: int,
    *,
    since: int,
    upto: int | None,
    limit: int,
    descending: bool = False,
    include_bodies: bool = False,
    owner_id: int | None = None,
    doc_ids: Sequence[str] | None = None,
) -> list[ChangeRow]:
    """Return up to ``limit`` changes with ``since < seq <= upto`` (or below, descending)."""
    cols = [
        documents.c.seq,
        documents.c.doc_id,
        documents.c.winning_rev,
        documents.c.deleted,
        documents.c.leaves,
    ]
    stmt = select(*cols)
    if include_bodies:
        stmt = select(*cols, revisions.c.body, revisions.c.attachments).select_from(
            documents.outerjoin(
                revisions,
                (revisions.c.db_id == documents.c.db_id)
                & (revisions.c.doc_id == documents.c.doc_id)
                & (revisions.c.rev == documents.c.winning_rev),
            )
        )
    conds = [documents.c.db_id == db_id, owner_clause(owner_id)]
    if descending:
        if upto is not None:
            conds.append(documents.c.seq < upto)
        conds.append(documents.c.seq > since)
        stmt = stmt.where(*conds).order_by(documents.c.seq.desc())
    else:
        conds.append(documents.c.seq > since)
        if upto is not None:
            conds.append(documents.c.seq <= upto)
        stmt = stmt.where(*conds).order_by(documents.c.seq.asc())
    if doc_ids is not None:
        stmt = stmt.where(documents.c.doc_id.in_(list(doc_ids)))
    rows = await conn.execute(stmt.limit(limit))
    return [
        ChangeRow(
            row[0],
            row[1],
            row[2],
            row[3],
            orjson.loads(row[4]),
            row[5] if include_bodies else None,
            row[6] if include_bodies else None,
        )
        for row in rows
    ]
