"""Reading the changes feed: one row per document, at its latest seq, in seq order.

The query is an index range scan on ``(db_id, seq)`` (or ``(db_id, owner_id, seq)`` for an
owner-scoped reader).  Its variants are built once and reused with bound parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import BigInteger, Integer, Text, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import Select

from schema import rawpg
from schema.engine import is_sqlite
from schema.keys import storable
from schema.rawpg import Runner
from schema.tables import documents, revisions


# not frozen: built for every row read, and a frozen dataclass costs about five times as
# much to build (its __init__ goes through object.__setattr__); never changed after it is built
@dataclass(slots=True)
class ChangeRow:
    seq: int
    doc_id: str
    winning_rev: str
    deleted: bool
    leaves: list[list[object]]
    body: bytes | None
    attachments: bytes | None


@cache
def _changes_statement(
    sqlite: bool, descending: bool, bodies: bool, owned: bool, by_ids: bool
) -> Select[Any]:
    cols = [
        documents.c.seq,
        documents.c.doc_id,
        documents.c.winning_rev,
        documents.c.deleted,
        documents.c.leaves,
    ]
    stmt = select(*cols)
    if bodies:
        stmt = select(*cols, revisions.c.body, revisions.c.attachments).select_from(
            documents.outerjoin(
                revisions,
                (revisions.c.db_id == documents.c.db_id)
                & (revisions.c.doc_id == documents.c.doc_id)
                & (revisions.c.rev == documents.c.winning_rev),
            )
        )
    seq = documents.c.seq
    stmt = stmt.where(
        documents.c.db_id == bindparam("db_id", type_=Integer),
        seq > bindparam("since", type_=BigInteger),
        (seq < bindparam("upto", type_=BigInteger))
        if descending
        else (seq <= bindparam("upto", type_=BigInteger)),
    )
    if owned:
        stmt = stmt.where(documents.c.owner_id == bindparam("owner", type_=Integer))
    if by_ids:
        if sqlite:
            stmt = stmt.where(documents.c.doc_id.in_(bindparam("ids", expanding=True)))
        else:
            ids = bindparam("ids", type_=ARRAY(Text))
            stmt = stmt.where(documents.c.doc_id == ids.any_())
    order = seq.desc() if descending else seq.asc()
    return stmt.order_by(order).limit(bindparam("limit", type_=Integer))


async def read_changes(
    conn: Runner,
    db_id: int,
    *,
    since: int,
    upto: int,
    limit: int,
    descending: bool = False,
    include_bodies: bool = False,
    owner_id: int | None = None,
    doc_ids: Sequence[str] | None = None,
) -> list[ChangeRow]:
    """Return up to ``limit`` changes with ``since < seq <= upto`` (``< upto``, descending)."""
    stmt = _changes_statement(
        is_sqlite(conn), descending, include_bodies, owner_id is not None, doc_ids is not None
    )
    params: dict[str, Any] = {"db_id": db_id, "since": since, "upto": upto, "limit": limit}
    if owner_id is not None:
        params["owner"] = owner_id
    if doc_ids is not None:
        params["ids"] = storable(doc_ids)
    rows = await rawpg.rows(conn, stmt, params)
    loads = orjson.loads
    if include_bodies:
        return [ChangeRow(r[0], r[1], r[2], r[3], loads(r[4]), r[5], r[6]) for r in rows]
    return [ChangeRow(r[0], r[1], r[2], r[3], loads(r[4]), None, None) for r in rows]


PENDING_EXACT_UP_TO = 500  # documents still to come that ``pending`` counts one by one


async def count_pending(
    conn: Runner, db_id: int, *, since: int, upto: int, owner_id: int | None = None
) -> int:
    """CouchDB's ``pending``: the documents changed after ``since`` up to ``upto``, each once
    (at its latest seq), exact while at most ``PENDING_EXACT_UP_TO`` remain.

    Beyond that it is ``upto - since``, the changes made since, an upper bound (as CouchDB's
    own ``pending`` is for a filtered feed).  Counting them all would cost an index entry per
    remaining document on every batch a replicator reads: a full initial sync would count
    quadratically many entries, half a million for 10,000 documents in batches of 100.
    """
    stmt = _pending_statement(owner_id is not None)
    params = {"db_id": db_id, "since": since, "upto": upto, "limit": PENDING_EXACT_UP_TO + 1}
    [(counted,)] = await rawpg.rows(conn, stmt, {**params, "owner": owner_id})
    return int(counted) if counted <= PENDING_EXACT_UP_TO else upto - since


@cache
def _pending_statement(owned: bool) -> Select[Any]:
    """Count the rows of the feed's own query (its first ``limit`` rows); without an id filter
    that query is the same on both backends."""
    feed = _changes_statement(False, False, False, owned, False)
    return select(func.count()).select_from(feed.with_only_columns(documents.c.seq).subquery())
