"""PostgreSQL: write a planned batch in one optimistic statement (one round trip).

The locking path (``schema.documents.update_docs``) costs a BEGIN, a lock, a read, four
writes and a COMMIT.  Here the trees are read without a lock (autocommit), the batch is
planned, and everything is written by a single statement:

    adv   UPDATE databases ... RETURNING base        -- takes the database row lock: writers
                                                     -- still commit in seq order
    upd   UPDATE documents ... WHERE seq = expected  -- only if nobody changed the document
    ins   INSERT INTO documents ... ON CONFLICT DO NOTHING   -- only if nobody created it
    revs, atts, dropped: INSERT/INSERT/DELETE
    SELECT CASE WHEN every document was written THEN 0 ELSE gateway_write_conflict() END

A lost race raises SQLSTATE 40001 inside the statement, so nothing of it is kept; the batch
is then re-read and re-planned.  After a few lost races the caller falls back to the
locking path.  Every row of the statement depends on ``adv``, so no document row is
touched before the database row lock is held.

A replicated batch of first revisions is planned without reading (the documents are new
unless proven otherwise, and the statement is that proof): one round trip instead of two.
That guess is written by ``_WRITE_NEW``, the same statement with plain inserts of documents
and revisions (no ``ON CONFLICT``): an ``ON CONFLICT`` insert is a speculative insertion,
which costs PostgreSQL an index probe before every row and a confirmation record in the WAL
after it, about a seventh of the statement's CPU on a batch of new documents.  A document
that exists after all then fails the statement with a unique violation (SQLSTATE 23505)
instead of 40001, and is handled the same way: nothing is kept, the batch is read and
planned again, and written by ``_WRITE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Integer, bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.sqltypes import NullType

from replication import DocEdit, NotFound
from schema import rawpg
from schema.batch import Batch, WriteResult
from schema.callers import (
    DATABASE_PARAMS,
    DATABASE_SQL,
    USER_PARAMS,
    USER_SQL,
    CallerCheck,
    RecheckCaller,
)
from schema.databases import Database
from schema.documents import prepare_batch
from schema.engine import raw_statement
from schema.rawpg import Runner
from schema.rules import has_rules

RETRYABLE = ("40001", "40P01")  # serialization failure (a lost race), deadlock
UNIQUE_VIOLATION = "23505"  # a guessed-new document that exists (``_WRITE_NEW``)
ATTEMPTS = 3

_SQL = """
WITH adv AS (
    UPDATE databases
    SET update_seq = update_seq + :n,
        doc_count = doc_count + :doc_delta,
        doc_del_count = doc_del_count + :del_delta,
        change_seq = nextval('gateway_change_seq')
    WHERE id = :db {caller}
    RETURNING update_seq - :n AS base
),
k AS (
    SELECT u.doc_id COLLATE "C" AS doc_id, u.winning_rev, u.deleted, u.leaves, u.rev_tree,
           u.owner_id, u.expected, adv.base + u.ord AS seq
    FROM adv, unnest(
        CAST(:doc_ids AS text[]), CAST(:winning AS text[]), CAST(:deleted AS boolean[]),
        CAST(:leaves AS bytea[]), CAST(:trees AS bytea[]), CAST(:owners AS integer[]),
        CAST(:expected AS bigint[])
    ) WITH ORDINALITY AS u(doc_id, winning_rev, deleted, leaves, rev_tree, owner_id, expected, ord)
),
upd AS (
    UPDATE documents AS d
    SET seq = k.seq, winning_rev = k.winning_rev, deleted = k.deleted, leaves = k.leaves,
        rev_tree = k.rev_tree, updated_at = now(), updated_by = CAST(:author AS integer)
    FROM k
    WHERE k.expected IS NOT NULL AND d.db_id = :db AND d.doc_id = k.doc_id
      AND d.seq = k.expected
    RETURNING 1
),
ins AS (
    INSERT INTO documents (db_id, doc_id, seq, winning_rev, deleted, leaves, rev_tree,
                           owner_id, updated_at, updated_by)
    SELECT :db, k.doc_id, k.seq, k.winning_rev, k.deleted, k.leaves, k.rev_tree, k.owner_id,
           now(), CAST(:author AS integer)
    FROM k WHERE k.expected IS NULL
    {on_conflict_documents}
    RETURNING 1
),
revs AS (
    INSERT INTO revisions (db_id, doc_id, rev, deleted, body, attachments)
    SELECT :db, r.doc_id, r.rev, r.deleted, r.body, r.attachments
    FROM adv, unnest(
        CASE WHEN CAST(:winners AS boolean)
             THEN CAST(:doc_ids AS text[]) ELSE CAST(:r_doc_ids AS text[]) END,
        CASE WHEN CAST(:winners AS boolean)
             THEN CAST(:winning AS text[]) ELSE CAST(:r_revs AS text[]) END,
        CASE WHEN CAST(:winners AS boolean)
             THEN CAST(:deleted AS boolean[]) ELSE CAST(:r_deleted AS boolean[]) END,
        CAST(:r_bodies AS bytea[]), CAST(:r_atts AS bytea[])
    ) AS r(doc_id, rev, deleted, body, attachments)
    {on_conflict_revisions}
),
atts AS (
    INSERT INTO attachments (db_id, digest, length, data)
    SELECT :db, a.digest, octet_length(a.data), a.data
    FROM adv, unnest(CAST(:a_digests AS text[]), CAST(:a_datas AS bytea[])) AS a(digest, data)
    ON CONFLICT DO NOTHING
),
dropped AS (
    DELETE FROM revisions AS x
    USING adv, unnest(CAST(:x_doc_ids AS text[]), CAST(:x_revs AS text[])) AS y(doc_id, rev)
    WHERE x.db_id = :db AND x.doc_id = y.doc_id COLLATE "C" AND x.rev = y.rev
)
SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM adv) THEN -1
    WHEN (SELECT count(*) FROM upd) + (SELECT count(*) FROM ins) = :n THEN 0
    ELSE gateway_write_conflict()
END
"""


@cache
def _statement(*, on_conflict: bool, checked: bool) -> Any:
    """The write; ``checked``: only if the remembered caller still holds (``schema.callers``:
    otherwise ``adv`` finds no row, and nothing is written)."""
    sql = _SQL.format(
        caller=f"AND {DATABASE_SQL} AND {USER_SQL}" if checked else "",
        on_conflict_documents="ON CONFLICT (db_id, doc_id) DO NOTHING" if on_conflict else "",
        on_conflict_revisions="ON CONFLICT DO NOTHING" if on_conflict else "",
    )
    return text(sql).bindparams(
        *((*USER_PARAMS, *DATABASE_PARAMS) if checked else ()),
        bindparam("n", type_=BigInteger),
        bindparam("doc_delta", type_=BigInteger),
        bindparam("del_delta", type_=BigInteger),
        bindparam("db", type_=Integer),
        bindparam("author", type_=Integer),
        # The arrays are typed by the CASTs in the SQL: untyped here, SQLAlchemy passes them to
        # asyncpg as they are instead of processing every element.
        *(
            bindparam(name, type_=NullType())
            for name in (
                "winners",
                "doc_ids",
                "winning",
                "deleted",
                "leaves",
                "trees",
                "owners",
                "expected",
                "r_doc_ids",
                "r_revs",
                "r_deleted",
                "r_bodies",
                "r_atts",
                "a_digests",
                "a_datas",
                "x_doc_ids",
                "x_revs",
            )
        ),
    )


_WRITE = _statement(on_conflict=True, checked=False)
_WRITE_NEW = _statement(on_conflict=False, checked=False)  # documents the batch may create, all new


def _params(db: Database, batch: Batch) -> dict[str, Any]:
    """The statement's parameters, with as few array elements as the batch allows: encoding
    them is most of the statement's CPU in the gateway (about 0.3 µs per element)."""
    docs, revs = batch.documents, batch.revisions
    doc_ids = [d.doc_id for d in docs]
    winning = [d.winning_rev for d in docs]
    deleted = [d.deleted for d in docs]
    r_doc_ids = [r["doc_id"] for r in revs]
    r_revs = [r["rev"] for r in revs]
    r_deleted = [r["deleted"] for r in revs]
    # Usually every document gets one new revision, its new winner (a push of new documents
    # or of fast-forwarded ones): the revision rows then reuse the documents' arrays.
    winners = r_doc_ids == doc_ids and r_revs == winning and r_deleted == deleted
    if winners:
        r_doc_ids, r_revs, r_deleted = [], [], []
    return {
        "n": len(docs),
        "doc_delta": batch.doc_delta,
        "del_delta": batch.del_delta,
        "db": db.id,
        "author": batch.author,
        "winners": winners,
        "doc_ids": doc_ids,
        "winning": winning,
        "deleted": deleted,
        "leaves": [d.leaves for d in docs],
        "trees": [d.rev_tree for d in docs],
        "owners": [d.owner_id for d in docs],
        "expected": _unless_all_null([d.expected_seq for d in docs]),
        "r_doc_ids": r_doc_ids,
        "r_revs": r_revs,
        "r_deleted": r_deleted,
        "r_bodies": [r["body"] for r in revs],
        "r_atts": _unless_all_null([r["attachments"] for r in revs]),
        "a_digests": list(batch.attachments),
        "a_datas": list(batch.attachments.values()),
        "x_doc_ids": [d for d, _ in batch.dropped],
        "x_revs": [r for _, r in batch.dropped],
    }


def _unless_all_null(values: list[Any]) -> list[Any]:
    """``values``, or ``[]`` when all are None: ``unnest`` pads a shorter array with NULLs."""
    return [] if values.count(None) == len(values) else values


async def write_batch(
    conn: Runner,
    db: Database,
    batch: Batch,
    *,
    all_new: bool = False,
    check: CallerCheck | None = None,
) -> bool:
    """Write ``batch`` atomically in autocommit; False if the database no longer exists
    (or, with ``check``, if the remembered caller no longer holds: nothing is written).

    Raises the driver's serialization error (SQLSTATE 40001) when a concurrent write
    changed one of the documents since they were read.  ``all_new``: the batch was planned
    as if none of its documents existed (``prepare_batch(assume_new=True)``); it is written
    with plain inserts, and one that exists raises a unique violation (SQLSTATE 23505).
    """
    stmt = _statement(on_conflict=not all_new, checked=check is not None)
    params = _params(db, batch)
    if check is not None:
        params.update(check.params())
    (row,) = await rawpg.rows(conn, stmt, params)
    return row[0] != -1


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig.__cause__, "sqlstate", None)


async def update_docs_optimistic(
    engine: AsyncEngine,
    db: Database,
    edits: Sequence[DocEdit],
    *,
    new_edits: bool,
    user_id: int | None,
    owner_scope: int | None = None,
    role: str | None = None,
    check: CallerCheck | None = None,
) -> list[WriteResult] | None:
    """Read, plan and write a batch in two round trips; None after ``ATTEMPTS`` lost races,
    or when the batch opens, moves or closes a ConflictRecord (the locking path does that).

    ``check``: a remembered caller (``schema.callers``), confirmed by the write statement
    itself; ``RecheckCaller`` when it no longer holds, or when the batch writes nothing (no
    statement would confirm it), and in either case nothing was written.

    A replicated batch of first revisions (``1-...``, nothing older, no attachment stubs) is
    almost always a batch of new documents: the replicator sends only what ``_revs_diff``
    found missing, and a document that has a first revision here was created here.  It is
    planned as such without reading anything, in one round trip.  Should a document exist
    after all (the same id created on two devices), its plain insert fails the statement
    with a unique violation, nothing of it is kept, and the batch is read and planned
    again: a wrong guess costs that batch a second write (and PostgreSQL logs the failed
    statement).
    """
    guess_new = _first_revisions(edits, new_edits) and not (role is not None and has_rules(db))
    for attempt in range(ATTEMPTS + guess_new):
        guessing = guess_new and attempt == 0
        async with raw_statement(engine) as conn:
            batch = await prepare_batch(
                conn,
                db,
                edits,
                new_edits=new_edits,
                user_id=user_id,
                owner_scope=owner_scope,
                role=role,
                assume_new=guessing,
            )
            if not batch.documents:
                if check is not None:  # no statement confirms the remembered caller
                    raise RecheckCaller()
                return batch.results
            if batch.touched:  # conflicts to record: the locking path does that
                return None
            try:
                written = await write_batch(conn, db, batch, all_new=guessing, check=check)
            except DBAPIError as exc:
                state = _sqlstate(exc)
                if state in RETRYABLE or (guessing and state == UNIQUE_VIOLATION):
                    continue
                raise
            if not written:
                if check is not None:  # the caller's or the database's rows changed
                    raise RecheckCaller()
                raise NotFound("Database does not exist.")
            return batch.results
    return None


def _first_revisions(edits: Sequence[DocEdit], new_edits: bool) -> bool:
    """Whether every edit replicates the first revision of a document, without stubs."""
    if new_edits:
        return False
    for edit in edits:
        path = edit.path or ((edit.rev,) if edit.rev else ())
        if len(path) != 1 or not path[0].startswith("1-"):
            return False
        if any(att.stub for att in edit.attachments):
            return False
    return True
