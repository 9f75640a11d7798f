"""``invariants.store_violations`` and ``idempotency_violations`` find what they promise.

The crash and soak tests trust an empty list from them, so each kind of damage a crash could
leave (a half-written tree, a document row out of step with its tree, a lost leaf body, a
seq hidden from the feed, a wrong counter, a missing or stray ConflictRecord, a claim left
blocking its key) is made here by hand on a healthy database and must be reported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schema.tables import conflicts, databases, documents, idempotency_keys, revisions, users
from tests.helpers import Couch
from tests.reliability.invariants import idempotency_violations, store_violations

Damage = Callable[[AsyncConnection, int], Awaitable[Any]]


@pytest.fixture
async def healthy(admin: Couch, db: str, engine: AsyncEngine) -> int:
    """``field`` with plain documents and one conflict (two live leaves); no violation."""
    await admin.post(f"/{db}/_bulk_docs", {"docs": [{"_id": f"d{i}", "n": i} for i in range(5)]},
                     expected_status=201)  # fmt: skip
    branches = [
        {"_id": "c", "_rev": f"2-{h}", "v": h, "_revisions": {"start": 2, "ids": [h, "a"]}}
        for h in ("b", "c")
    ]
    await admin.post(f"/{db}/_bulk_docs", {"docs": branches, "new_edits": False},
                     expected_status=201)  # fmt: skip
    assert await store_violations(engine, db, full_history=True) == []
    async with engine.connect() as conn:
        found = await conn.execute(select(databases.c.id).where(databases.c.name == db))
        return int(found.scalar_one())


def where_doc(db_id: int, doc_id: str) -> Any:
    return (documents.c.db_id == db_id) & (documents.c.doc_id == doc_id)


async def orphan_parent(conn: AsyncConnection, db_id: int) -> None:
    tree = {"2-x": ["1-gone", 0]}
    await conn.execute(
        update(documents).where(where_doc(db_id, "d0")).values(rev_tree=orjson.dumps(tree))
    )


async def wrong_winner(conn: AsyncConnection, db_id: int) -> None:
    await conn.execute(update(documents).where(where_doc(db_id, "c")).values(winning_rev="2-b"))


async def lost_leaf_body(conn: AsyncConnection, db_id: int) -> None:
    await conn.execute(
        delete(revisions).where(revisions.c.db_id == db_id, revisions.c.doc_id == "d1")
    )


async def hidden_seq(conn: AsyncConnection, db_id: int) -> None:
    await conn.execute(update(documents).where(where_doc(db_id, "d2")).values(seq=10_000))


async def wrong_count(conn: AsyncConnection, db_id: int) -> None:
    await conn.execute(update(databases).where(databases.c.id == db_id).values(doc_count=99))


async def lost_record(conn: AsyncConnection, db_id: int) -> None:
    await conn.execute(delete(conflicts).where(conflicts.c.db_id == db_id))


async def stray_record(conn: AsyncConnection, db_id: int) -> None:
    await conn.execute(
        insert(conflicts).values(
            db_id=db_id, doc_id="d3", leaf_rev="1-zzz", mine_rev="1-zzz", theirs_rev="1-yyy",
            status="open",
        )
    )  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "reported"),
    [
        (orphan_parent, "d0: 2-x's parent 1-gone is missing from the tree"),
        (wrong_winner, "c: row says winner 2-b"),
        (lost_leaf_body, "has no stored revision (body lost)"),
        (hidden_seq, "outside 1..update_seq"),
        (wrong_count, "doc_count/doc_del_count say 99/"),
        (lost_record, "c: live losing leaf 2-b has 0 open records"),
        (stray_record, "d3: open record"),
    ],
)
async def test_each_kind_of_damage_is_reported(
    healthy: int, engine: AsyncEngine, db: str, damage: Damage, reported: str
) -> None:
    async with engine.begin() as conn:
        await damage(conn, healthy)
    found = await store_violations(engine, db, full_history=True)
    assert any(reported in line for line in found), found


async def test_a_claim_left_without_an_answer_is_reported(
    alice: Couch, engine: AsyncEngine
) -> None:
    assert await idempotency_violations(engine) == []
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        user_id = (
            await conn.execute(select(users.c.id).where(users.c.name == "alice"))
        ).scalar_one()
        await conn.execute(
            insert(idempotency_keys).values(
                user_id=user_id, key="stuck", request_hash="0" * 64, status=None,
                created_at=now, expires_at=now + timedelta(minutes=5),
            )
        )  # fmt: skip
    [line] = await idempotency_violations(engine)
    assert "'stuck'" in line and "every retry wait" in line
