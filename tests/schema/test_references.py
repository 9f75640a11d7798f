"""The references between databases, documents, revisions and users hold on both backends.

SQLite enforces them with foreign keys; PostgreSQL with statement-level triggers (migration
0007), which check a whole batch at once.  The rules are the same: an insert that refers to
nothing is refused with nothing kept, and deletes cascade (or set the owner to NULL).
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from replication import DocEdit
from schema.databases import create_database, delete_database
from schema.documents import update_docs
from schema.engine import read_transaction, write_transaction
from schema.tables import databases, documents, revisions, users


async def _setup(engine: AsyncEngine) -> tuple[int, int]:
    """A database "r" with documents a, b (owned by alice) and c (owned by bob)."""
    async with write_transaction(engine) as conn:
        db = await create_database(conn, "r", access_mode="shared")
        ids = dict((await conn.execute(select(users.c.name, users.c.id))).all())
        await update_docs(
            conn,
            "r",
            [DocEdit("a", body={"v": 1}), DocEdit("b")],
            new_edits=True,
            user_id=ids["alice"],
        )
        await update_docs(conn, "r", [DocEdit("c")], new_edits=True, user_id=ids["bob"])
    return db.id, ids["alice"]


async def _setup_again(engine: AsyncEngine) -> None:
    """A database "again" with one document and its revision (no owner)."""
    async with write_transaction(engine) as conn:
        await create_database(conn, "again", access_mode="shared")
        await update_docs(conn, "again", [DocEdit("x")], new_edits=True, user_id=None)
    assert await _count(engine, revisions) == 1


def _document(db_id: int, doc_id: str, owner_id: int | None) -> dict[str, object]:
    return {
        "db_id": db_id,
        "doc_id": doc_id,
        "seq": 1000 + len(doc_id),  # distinct per row: only the reference can be at fault
        "winning_rev": "1-x",
        "deleted": False,
        "leaves": b"[]",
        "rev_tree": b"{}",
        "owner_id": owner_id,
    }


async def _count(engine: AsyncEngine, table, *where) -> int:  # type: ignore[no-untyped-def]
    async with read_transaction(engine) as conn:
        counted = await conn.execute(select(func.count()).select_from(table).where(*where))
        return int(counted.scalar_one())


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(lambda db, alice: _document(db + 1000, "x", alice), id="unknown-database"),
        pytest.param(lambda db, alice: _document(db, "x", alice + 1000), id="unknown-owner"),
    ],
)
async def test_a_document_referring_to_nothing_is_refused_with_the_whole_batch(
    engine: AsyncEngine, row
) -> None:  # type: ignore[no-untyped-def]
    db_id, alice = await _setup(engine)
    with pytest.raises(IntegrityError):
        async with write_transaction(engine) as conn:
            await conn.execute(
                insert(documents), [_document(db_id, "okay", alice), row(db_id, alice)]
            )
    assert await _count(engine, documents, documents.c.doc_id.in_(["okay", "x"])) == 0


async def test_a_revision_without_its_document_is_refused(engine: AsyncEngine) -> None:
    db_id, _ = await _setup(engine)
    rows = [
        {"db_id": db_id, "doc_id": doc_id, "rev": "9-z", "deleted": False, "body": b"{}"}
        for doc_id in ("a", "no-such-document")
    ]
    with pytest.raises(IntegrityError):
        async with write_transaction(engine) as conn:
            await conn.execute(insert(revisions), rows)
    assert await _count(engine, revisions, revisions.c.rev == "9-z") == 0


async def test_deleting_a_database_deletes_its_documents_and_their_revisions(
    engine: AsyncEngine,
) -> None:
    db_id, _ = await _setup(engine)
    async with write_transaction(engine) as conn:
        other = await create_database(conn, "kept", access_mode="shared")
        await update_docs(conn, "kept", [DocEdit("a")], new_edits=True, user_id=None)
    assert await _count(engine, revisions, revisions.c.db_id == db_id) == 3
    async with write_transaction(engine) as conn:
        await delete_database(conn, "r")
    assert await _count(engine, documents, documents.c.db_id == db_id) == 0
    assert await _count(engine, revisions, revisions.c.db_id == db_id) == 0
    assert await _count(engine, documents, documents.c.db_id == other.id) == 1
    assert await _count(engine, revisions, revisions.c.db_id == other.id) == 1
    assert await _count(engine, databases, databases.c.id == other.id) == 1


async def test_deleting_a_document_deletes_its_revisions_only(engine: AsyncEngine) -> None:
    db_id, _ = await _setup(engine)
    async with write_transaction(engine) as conn:
        await conn.execute(
            delete(documents).where(documents.c.db_id == db_id, documents.c.doc_id == "a")
        )
    assert await _count(engine, revisions, revisions.c.doc_id == "a") == 0
    assert await _count(engine, revisions, revisions.c.doc_id.in_(["b", "c"])) == 2


async def test_deleting_a_user_leaves_their_documents_without_an_owner(
    engine: AsyncEngine,
) -> None:
    _, alice = await _setup(engine)
    async with write_transaction(engine) as conn:
        await conn.execute(delete(users).where(users.c.id == alice))
    async with read_transaction(engine) as conn:
        owners = dict((await conn.execute(select(documents.c.doc_id, documents.c.owner_id))).all())
    assert owners["a"] is None and owners["b"] is None
    assert owners["c"] is not None  # bob's


@pytest.mark.postgres_only
async def test_deleting_a_database_outside_read_committed_is_refused_on_postgres(
    engine: AsyncEngine,
) -> None:
    """Under REPEATABLE READ a cascade could miss a document committed after the deleting
    transaction began (a foreign key would fail with 40001 then): the trigger refuses such
    deletes with 40001, and nothing is deleted."""
    db_id, alice = await _setup(engine)
    for table, where in ((databases, databases.c.id == db_id), (users, users.c.id == alice)):
        with pytest.raises(DBAPIError) as raised:
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    await conn.execute(delete(table).where(where))
        assert "40001" in str(raised.value.orig.__cause__.sqlstate)  # type: ignore[union-attr]
    assert await _count(engine, documents, documents.c.db_id == db_id) == 3
    assert await _count(engine, documents, documents.c.owner_id == alice) == 2


@pytest.mark.postgres_only
async def test_truncate_cascades_like_delete_on_postgres(engine: AsyncEngine) -> None:
    await _setup(engine)
    async with write_transaction(engine) as conn:
        await conn.execute(text("TRUNCATE users CASCADE"))
    assert await _count(engine, documents, documents.c.owner_id.is_not(None)) == 0
    assert await _count(engine, documents) == 3
    async with write_transaction(engine) as conn:
        await conn.execute(text("TRUNCATE documents CASCADE"))
    assert await _count(engine, revisions) == 0
    await _setup_again(engine)
    async with write_transaction(engine) as conn:
        await conn.execute(text("TRUNCATE databases CASCADE"))
    assert await _count(engine, documents) == 0 and await _count(engine, revisions) == 0


@pytest.mark.postgres_only
async def test_the_gateway_writes_at_read_committed_whatever_the_server_default(
    engine: AsyncEngine, database_url: str
) -> None:
    from schema.engine import make_engine

    async with engine.connect() as conn:
        name = (await conn.execute(text("SELECT current_database()"))).scalar_one()
    admin = make_engine(database_url)
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(
                text(
                    f'ALTER DATABASE "{name}" SET default_transaction_isolation = "repeatable read"'
                )
            )
        fresh = make_engine(database_url)
        try:
            async with write_transaction(fresh) as conn:
                level = (await conn.execute(text("SHOW transaction_isolation"))).scalar_one()
        finally:
            await fresh.dispose()
    finally:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'ALTER DATABASE "{name}" RESET default_transaction_isolation'))
        await admin.dispose()
    assert level == "read committed"
