"""PostgreSQL's one-statement optimistic write (``schema/write_pg.py``)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from replication import DocEdit
from schema import documents
from schema.databases import create_database, get_database
from schema.documents import prepare_batch, update_docs
from schema.engine import read_transaction, single_statement, write_transaction
from schema.reads import get_doc_rows, get_revisions
from schema.write_pg import update_docs_optimistic, write_batch

pytestmark = pytest.mark.postgres_only


async def _db(engine: AsyncEngine):  # type: ignore[no-untyped-def]
    async with write_transaction(engine) as conn:
        return await create_database(conn, "w", access_mode="shared")


async def test_a_lost_race_rolls_the_whole_statement_back(engine: AsyncEngine) -> None:
    db = await _db(engine)
    [first] = await update_docs_optimistic(
        engine, db, [DocEdit("a", body={"v": 1})], new_edits=True, user_id=1
    )
    async with single_statement(engine) as conn:
        stale = await prepare_batch(
            conn,
            db,
            [DocEdit("a", rev=first.rev, body={"v": 2}), DocEdit("b", body={"v": 1})],
            new_edits=True,
            user_id=1,
            owner_scope=None,
        )
    async with write_transaction(engine) as conn:  # someone else changes "a" meanwhile
        await update_docs(
            conn, "w", [DocEdit("a", rev=first.rev, body={"v": 3})], new_edits=True, user_id=1
        )
    async with single_statement(engine) as conn:
        with pytest.raises(DBAPIError) as raised:
            await write_batch(conn, db, stale)
    assert "40001" in str(raised.value.orig.__cause__.sqlstate)  # type: ignore[union-attr]
    async with read_transaction(engine) as conn:
        after = await get_database(conn, "w")
        rows = await get_doc_rows(conn, after.id, ["a", "b"])
    assert after.update_seq == 2 and set(rows) == {"a"}  # "b" was not half-written


async def test_racing_writers_on_one_document_keep_every_success(engine: AsyncEngine) -> None:
    db = await _db(engine)
    [created] = await update_docs_optimistic(
        engine, db, [DocEdit("hot", body={"n": 0})], new_edits=True, user_id=1
    )

    async def writer(worker: int) -> int:
        wins = 0
        for step in range(10):
            async with read_transaction(engine) as conn:
                row = (await get_doc_rows(conn, db.id, ["hot"]))["hot"]
            edit = DocEdit("hot", rev=row.winning_rev, body={"w": worker, "s": step})
            results = await update_docs_optimistic(engine, db, [edit], new_edits=True, user_id=1)
            if results is None:  # kept losing: the gateway falls back to the locking path
                async with write_transaction(engine) as conn:
                    _, results = await update_docs(conn, "w", [edit], new_edits=True, user_id=1)
            wins += results[0].error is None
        return wins

    wins = sum(await asyncio.gather(*(writer(w) for w in range(5))))
    async with read_transaction(engine) as conn:
        final = await get_database(conn, "w")
        row = (await get_doc_rows(conn, db.id, ["hot"]))["hot"]
    assert row.winning_rev.startswith(f"{wins + 1}-") and row.conflicts() == []
    assert final.update_seq == wins + 1 and created.rev != row.winning_rev


async def test_revisions_that_are_not_each_documents_new_winner_are_all_written(
    engine: AsyncEngine,
) -> None:
    # The statement sends a batch's revision rows apart from its document rows unless each
    # document gets exactly one revision, its new winner: both shapes must store everything.
    db = await _db(engine)
    first = [DocEdit("c", path=("2-z", "1-c"), body={"v": "z"})]
    assert await update_docs_optimistic(engine, db, first, new_edits=False, user_id=1)
    batches = [
        [  # as many revisions as documents, but not their winners
            DocEdit("a", path=("1-a",), body={"v": "a"}),
            DocEdit("c", path=("3-d", "2-a", "1-c"), deleted=True, body={}),  # a losing tombstone
        ],
        [  # two revisions of one document
            DocEdit("b", path=("1-b",), body={"v": "b1"}),
            DocEdit("b", path=("2-b", "1-b"), body={"v": "b2"}),
        ],
    ]
    for edits in batches:
        results = await update_docs_optimistic(engine, db, edits, new_edits=False, user_id=1)
        assert results is not None and all(r.error is None for r in results)
    async with read_transaction(engine) as conn:
        rows = await get_doc_rows(conn, db.id, ["a", "b", "c"])
        stored = await get_revisions(
            conn, db.id, [("a", "1-a"), ("b", "1-b"), ("b", "2-b"), ("c", "3-d"), ("c", "2-z")]
        )
    assert {d: r.winning_rev for d, r in rows.items()} == {"a": "1-a", "b": "2-b", "c": "2-z"}
    assert {k: (r.deleted, orjson.loads(r.body)) for k, r in stored.items()} == {
        ("a", "1-a"): (False, {"v": "a"}),
        ("b", "1-b"): (False, {"v": "b1"}),
        ("b", "2-b"): (False, {"v": "b2"}),
        ("c", "3-d"): (True, {}),
        ("c", "2-z"): (False, {"v": "z"}),
    }


async def test_a_batch_of_new_winners_stores_each_revision_with_its_document(
    engine: AsyncEngine,
) -> None:
    db = await _db(engine)
    edits = [DocEdit(f"d{i}", path=(f"1-{i}",), body={"i": i}) for i in range(5)]
    edits.append(DocEdit("gone", path=("1-g",), deleted=True, body={}))
    assert await update_docs_optimistic(engine, db, edits, new_edits=False, user_id=1)
    async with read_transaction(engine) as conn:
        rows = await get_doc_rows(conn, db.id, [e.doc_id for e in edits])
        stored = await get_revisions(conn, db.id, [(e.doc_id, e.path[0]) for e in edits])
    assert {d: (r.winning_rev, r.deleted) for d, r in rows.items()} == {
        **{f"d{i}": (f"1-{i}", False) for i in range(5)},
        "gone": ("1-g", True),
    }
    assert {k: (r.deleted, orjson.loads(r.body)) for k, r in stored.items()} == {
        **{(f"d{i}", f"1-{i}"): (False, {"i": i}) for i in range(5)},
        ("gone", "1-g"): (True, {}),
    }


async def test_a_batch_of_first_revisions_is_written_without_reading_first(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = await _db(engine)
    reads = []
    real = documents.load_states

    async def counted(conn, db_id, doc_ids):  # type: ignore[no-untyped-def]
        reads.append(doc_ids)
        return await real(conn, db_id, doc_ids)

    monkeypatch.setattr(documents, "load_states", counted)
    edits = [DocEdit(f"n{i}", path=(f"1-{i}",), body={"i": i}) for i in range(3)]
    results = await update_docs_optimistic(engine, db, edits, new_edits=False, user_id=1)
    assert results is not None and [r.rev for r in results] == ["1-0", "1-1", "1-2"]
    assert reads == []  # planned as new documents: no read before the write
    later = [DocEdit("n0", path=("2-x", "1-0"), body={"i": 9})]  # not a first revision
    assert await update_docs_optimistic(engine, db, later, new_edits=False, user_id=1)
    assert reads == [["n0"]]
    async with read_transaction(engine) as conn:
        rows = await get_doc_rows(conn, db.id, ["n0", "n1", "n2"])
        after = await get_database(conn, "w")
    assert {d: r.winning_rev for d, r in rows.items()} == {"n0": "2-x", "n1": "1-1", "n2": "1-2"}
    assert after.update_seq == 4 and after.doc_count == 3


async def test_first_revisions_of_documents_that_exist_are_read_and_planned_again(
    engine: AsyncEngine,
) -> None:
    db = await _db(engine)
    seed = [DocEdit("known", path=("1-k",), body={"v": 0}), DocEdit("taken", path=("1-t",))]
    assert await update_docs_optimistic(engine, db, seed, new_edits=False, user_id=1)
    # "known" is already stored as it is sent (a client that skipped _revs_diff): a no-op
    edits = [DocEdit("fresh", path=("1-f",), body={"v": 1}), DocEdit("known", path=("1-k",))]
    results = await update_docs_optimistic(engine, db, edits, new_edits=False, user_id=1)
    assert results is not None and all(r.error is None for r in results)
    async with read_transaction(engine) as conn:
        after = await get_database(conn, "w")
        rows = await get_doc_rows(conn, db.id, ["fresh", "known"])
    assert after.update_seq == 3 and rows["fresh"].seq == 3 and rows["known"].seq == 1
    # "taken" was created elsewhere with another first revision: a conflict, which only the
    # locking path records; the guessed write left nothing behind
    clash = [DocEdit("other", path=("1-o",)), DocEdit("taken", path=("1-z",), body={"v": 2})]
    assert await update_docs_optimistic(engine, db, clash, new_edits=False, user_id=1) is None
    async with read_transaction(engine) as conn:
        unchanged = await get_database(conn, "w")
        rows = await get_doc_rows(conn, db.id, ["other", "taken"])
        revs = await get_revisions(conn, db.id, [("taken", "1-z"), ("other", "1-o")])
    assert unchanged.update_seq == 3 and set(rows) == {"taken"} and revs == {}
    assert rows["taken"].winning_rev == "1-t"


async def test_a_batch_guessed_new_is_written_with_plain_inserts(engine: AsyncEngine) -> None:
    db = await _db(engine)
    seed = [DocEdit("taken", path=("1-t",), body={"v": 0})]
    assert await update_docs_optimistic(engine, db, seed, new_edits=False, user_id=1)
    clash = [DocEdit("free", path=("1-f",)), DocEdit("taken", path=("1-z",), body={"v": 2})]
    async with single_statement(engine) as conn:
        guessed = await prepare_batch(
            conn, db, clash, new_edits=False, user_id=1, owner_scope=None, assume_new=True
        )
    states = {}
    for all_new in (True, False):
        async with single_statement(engine) as conn:
            with pytest.raises(DBAPIError) as raised:
                await write_batch(conn, db, guessed, all_new=all_new)
        states[all_new] = raised.value.orig.__cause__.sqlstate  # type: ignore[union-attr]
    # no speculative insertion for a guess: the existing row is a unique violation, where the
    # general statement's ON CONFLICT DO NOTHING skips it and counts a lost race
    assert states == {True: "23505", False: "40001"}
    async with read_transaction(engine) as conn:
        after = await get_database(conn, "w")
        rows = await get_doc_rows(conn, db.id, ["free", "taken"])
        revs = await get_revisions(conn, db.id, [("taken", "1-z"), ("free", "1-f")])
    assert after.update_seq == 1 and set(rows) == {"taken"} and revs == {}


async def test_devices_creating_the_same_documents_at_once_lose_nothing(
    engine: AsyncEngine,
) -> None:
    db = await _db(engine)
    ids = [f"twin{i}" for i in range(20)]
    mine = [DocEdit(d, path=("1-mine",), body={"by": "me"}) for d in ids]
    theirs = [DocEdit(d, path=("1-theirs",), body={"by": "them"}) for d in ids]
    outcomes = await asyncio.gather(
        update_docs_optimistic(engine, db, mine, new_edits=False, user_id=1),
        update_docs_optimistic(engine, db, theirs, new_edits=False, user_id=1),
    )
    # one batch is written as guessed; the other finds every document taken (a unique
    # violation, read and planned again) and, as each now has two branches, is left to the
    # locking path, which records the conflicts
    assert sorted(o is None for o in outcomes) == [False, True]
    late = theirs if outcomes[1] is None else mine
    async with write_transaction(engine) as conn:
        _, results = await update_docs(conn, "w", late, new_edits=False, user_id=1)
    assert all(r.error is None for r in results)
    async with read_transaction(engine) as conn:
        after = await get_database(conn, "w")
        rows = await get_doc_rows(conn, db.id, ids)
    assert after.doc_count == 20 and after.update_seq == 40
    assert all(r.leaves == [["1-theirs", False], ["1-mine", False]] for r in rows.values())
