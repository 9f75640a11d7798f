"""The write transaction in ``schema/documents.py``: trees, revisions, seqs and counters."""

from __future__ import annotations

import asyncio

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from replication import Attachment, DocEdit, MissingStub, md5_digest, parse_doc
from schema.databases import create_database, get_database, set_revs_limit
from schema.documents import load_states, update_docs
from schema.engine import read_transaction, write_transaction
from schema.reads import get_doc_rows, get_revisions
from schema.tables import revisions


async def _db(engine: AsyncEngine, name: str = "w") -> None:
    async with write_transaction(engine) as conn:
        await create_database(conn, name, access_mode="shared")


async def _write(engine: AsyncEngine, edits: list[DocEdit], *, new_edits: bool = True, **kw):  # type: ignore[no-untyped-def]
    async with write_transaction(engine) as conn:
        _, results = await update_docs(conn, "w", edits, new_edits=new_edits, user_id=1, **kw)
    return results


async def test_a_batch_takes_one_seq_per_changed_document_and_counts_documents(
    engine: AsyncEngine,
) -> None:
    await _db(engine)
    results = await _write(engine, [DocEdit("a", body={"v": 1}), DocEdit("b", body={"v": 1})])
    assert all(r.error is None for r in results)
    async with read_transaction(engine) as conn:
        db = await get_database(conn, "w")
        rows = await get_doc_rows(conn, db.id, ["a", "b"])
    assert (db.update_seq, db.doc_count, db.doc_del_count) == (2, 2, 0)
    assert sorted(r.seq for r in rows.values()) == [1, 2]
    await _write(engine, [DocEdit("a", rev=results[0].rev, deleted=True)])
    async with read_transaction(engine) as conn:
        db = await get_database(conn, "w")
    assert (db.update_seq, db.doc_count, db.doc_del_count) == (3, 1, 1)


async def test_the_same_document_twice_in_a_batch_builds_on_the_first_edit(
    engine: AsyncEngine,
) -> None:
    await _db(engine)
    first = await _write(engine, [DocEdit("a", body={"v": 1})])
    rev1 = first[0].rev
    results = await _write(
        engine, [DocEdit("a", rev=rev1, body={"v": 2}), DocEdit("a", rev=rev1, body={"v": 3})]
    )
    assert results[0].error is None and results[1].error is not None
    async with read_transaction(engine) as conn:
        db = await get_database(conn, "w")
    assert db.update_seq == 2  # one new seq: the document changed once


async def test_a_failed_batch_writes_nothing(engine: AsyncEngine) -> None:
    await _db(engine)
    results = await _write(engine, [DocEdit("a", rev="1-abc", body={})])
    assert results[0].error is not None
    async with read_transaction(engine) as conn:
        db = await get_database(conn, "w")
        count = (await conn.execute(select(func.count()).select_from(revisions))).scalar_one()
    assert (db.update_seq, db.doc_count, count) == (0, 0, 0)


async def test_stemming_deletes_the_bodies_of_dropped_revisions(engine: AsyncEngine) -> None:
    await _db(engine)
    async with write_transaction(engine) as conn:
        await set_revs_limit(conn, "w", 2)
    rev = None
    for n in range(4):
        [result] = await _write(engine, [DocEdit("a", rev=rev, body={"n": n})])
        rev = result.rev
    async with read_transaction(engine) as conn:
        db = await get_database(conn, "w")
        states = await load_states(conn, db.id, ["a"])
        stored = (
            (await conn.execute(select(revisions.c.rev).where(revisions.c.doc_id == "a")))
            .scalars()
            .all()
        )
    tree = states["a"].tree
    assert len(tree) == 2 and rev in tree
    assert set(stored) <= set(tree)


async def test_attachment_stubs_resolve_against_the_parent_revision(engine: AsyncEngine) -> None:
    await _db(engine)
    data = b"photo bytes"
    att = Attachment("p.jpg", "image/jpeg", md5_digest(data), len(data), data=data)
    [first] = await _write(engine, [DocEdit("a", body={"v": 1}, attachments=(att,))])
    stub = Attachment("p.jpg", stub=True)
    [second] = await _write(
        engine, [DocEdit("a", rev=first.rev, body={"v": 2}, attachments=(stub,))]
    )
    assert second.error is None
    async with read_transaction(engine) as conn:
        db = await get_database(conn, "w")
        stored = await get_revisions(conn, db.id, [("a", second.rev)])
    meta = stored[("a", second.rev)].attachments
    assert meta == {
        "p.jpg": {
            "content_type": "image/jpeg",
            "digest": md5_digest(data),
            "length": 11,
            "revpos": 1,
        }
    }
    [bad] = await _write(
        engine, [DocEdit("a", rev=second.rev, attachments=(Attachment("nope", stub=True),))]
    )
    assert isinstance(bad.error, MissingStub)


async def test_replicated_branches_keep_both_leaves_and_a_deterministic_winner(
    engine: AsyncEngine,
) -> None:
    await _db(engine)
    base = parse_doc({"_id": "a", "_rev": "1-a", "v": 0})
    left = parse_doc({"_id": "a", "_revisions": {"start": 2, "ids": ["b", "a"]}, "v": 1})
    right = parse_doc({"_id": "a", "_revisions": {"start": 2, "ids": ["c", "a"]}, "v": 2})
    await _write(engine, [base, left, right], new_edits=False)
    async with read_transaction(engine) as conn:
        db = await get_database(conn, "w")
        row = (await get_doc_rows(conn, db.id, ["a"]))["a"]
    assert row.winning_rev == "2-c" and row.conflicts() == ["2-b"]
    assert orjson.loads(orjson.dumps(row.leaves)) == [["2-c", False], ["2-b", False]]


async def test_concurrent_writers_on_separate_connections_never_lose_an_update(
    engine: AsyncEngine,
) -> None:
    await _db(engine)
    [created] = await _write(engine, [DocEdit("counter", body={"n": 0})])

    async def bump(worker: int) -> int:
        wins = 0
        for attempt in range(15):
            async with read_transaction(engine) as conn:
                db = await get_database(conn, "w")
                row = (await get_doc_rows(conn, db.id, ["counter"]))["counter"]
            [result] = await _write(
                engine, [DocEdit("counter", rev=row.winning_rev, body={"w": worker, "i": attempt})]
            )
            wins += result.error is None
        return wins

    wins = sum(await asyncio.gather(*(bump(w) for w in range(4))))
    async with read_transaction(engine) as conn:
        db = await get_database(conn, "w")
        row = (await get_doc_rows(conn, db.id, ["counter"]))["counter"]
    assert row.winning_rev.startswith(f"{wins + 1}-")  # every success extended the winner
    assert row.conflicts() == [] and created.rev != row.winning_rev
    assert db.update_seq == wins + 1
