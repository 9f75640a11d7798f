"""PostgreSQL's one-statement optimistic write (``schema/write_pg.py``)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from replication import DocEdit
from schema.databases import create_database, get_database
from schema.documents import prepare_batch, update_docs
from schema.engine import read_transaction, single_statement, write_transaction
from schema.reads import get_doc_rows
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
