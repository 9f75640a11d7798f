"""The lean PostgreSQL checkout of ``schema.rawpg`` (``raw_read`` / ``raw_statement``).

It skips SQLAlchemy's ``Connection``, so everything that object did for the hot path is
checked here: connections go back to the pool whatever happens (errors, cancellation), a
connection the server killed is dropped instead of being lent again, errors reach callers
exactly as SQLAlchemy raises them, and statements that need SQLAlchemy still run.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from sqlalchemy import Integer, bindparam, literal_column, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import _unavailable
from schema import rawpg
from schema.changes import _changes_statement, _pending_statement
from schema.conflicts import _count_open_statement
from schema.documents import _stub_select, _tree_select
from schema.engine import (
    make_engine,
    raw_read,
    raw_statement,
    read_transaction,
    write_transaction,
)
from schema.keys import _statement as keys_statement
from schema.local_docs import _put_statement
from schema.reads import (
    _attachment_data_statement,
    _count_rows_statement,
    _doc_select,
    _docs_with_revisions_statement,
    _revision_select,
)
from schema.tables import documents, revisions, users
from schema.users import _caller_statement
from schema.write_pg import _WRITE, _WRITE_NEW, _statement

pytestmark = pytest.mark.postgres_only

_PID = select(literal_column("pg_backend_pid()"))
_SLEEP = select(literal_column("pg_sleep(30)"))
_INSERT = text("INSERT INTO users (name, password_hash, role) VALUES (:name, 'x', 'admin')")
_COUNT = (
    select(literal_column("count(*)")).select_from(users).where(users.c.name == bindparam("name"))
)
_ECHO = select(bindparam("n", type_=Integer))


async def _count(conn: rawpg.Runner, name: str) -> int:
    [(found,)] = await rawpg.rows(conn, _COUNT, {"name": name})
    return int(found)


def _pool(engine: AsyncEngine):  # type: ignore[no-untyped-def]
    return engine.sync_engine.pool


async def test_the_lean_checkout_runs_statements_in_autocommit(engine: AsyncEngine) -> None:
    async with raw_statement(engine) as conn:
        assert isinstance(conn, rawpg.RawConnection)
        await rawpg.rows(conn, _INSERT, {"name": "carol"})
        # committed by the statement itself: another connection sees it while this one is
        # still lent out
        async with read_transaction(engine) as other:
            assert await _count(other, "carol") == 1
    assert _pool(engine).checkedout() == 0


async def test_a_connection_goes_back_to_the_pool_after_an_error(engine: AsyncEngine) -> None:
    for attempt in range(3):
        with pytest.raises(IntegrityError) as raised:
            async with raw_statement(engine) as conn:
                await rawpg.rows(conn, _INSERT, {"name": f"dave{attempt}"})
                await rawpg.rows(conn, _INSERT, {"name": f"dave{attempt}"})
        # translated as SQLAlchemy translates it: the SQLSTATE travels on the driver error
        assert raised.value.orig.sqlstate == "23505"  # type: ignore[union-attr]
        assert not raised.value.connection_invalidated
        assert _pool(engine).checkedout() == 0
    async with raw_read(engine) as conn:  # the pool still lends working connections
        # autocommit: each first insert stayed, each second one was refused
        assert [await _count(conn, f"dave{n}") for n in range(3)] == [1, 1, 1]


async def test_a_cancelled_request_gives_its_connection_back(database_url: str) -> None:
    small = make_engine(database_url, pool_size=1)  # one idle connection: the one reused
    started = asyncio.Event()
    used: list[int] = []

    async def slow() -> None:
        async with raw_read(small) as conn:
            [(pid,)] = await rawpg.rows(conn, _PID, {})
            used.append(pid)
            started.set()
            await rawpg.rows(conn, _SLEEP, {})

    try:
        task = asyncio.create_task(slow())
        await started.wait()
        await asyncio.sleep(0.2)  # the sleep is running on the server
        assert _pool(small).checkedout() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(50):  # the return to the pool is shielded: it completes on its own
            if _pool(small).checkedout() == 0:
                break
            await asyncio.sleep(0.05)
        assert _pool(small).checkedout() == 0
        async with raw_read(small) as conn:  # the very connection is usable again
            assert list(await rawpg.rows(conn, _PID, {})) == [(used[0],)]
            assert list(await rawpg.rows(conn, _ECHO, {"n": 7})) == [(7,)]
    finally:
        await small.dispose()


async def test_a_connection_the_server_killed_is_dropped_not_lent_again(
    engine: AsyncEngine, database_url: str
) -> None:
    admin = make_engine(database_url, pool_size=1)  # kills from outside the pool under test
    try:
        with pytest.raises(DBAPIError) as raised:
            async with raw_read(engine) as conn:
                [(victim,)] = await rawpg.rows(conn, _PID, {})
                async with raw_read(engine) as other:  # then idle in the pool
                    [(idle_pid,)] = await rawpg.rows(other, _PID, {})
                async with write_transaction(admin) as killer:
                    await killer.execute(text("SELECT pg_terminate_backend(:p)"), {"p": victim})
                await asyncio.sleep(0.2)
                await rawpg.rows(conn, _PID, {})
    finally:
        await admin.dispose()
    # reported as SQLAlchemy reports a lost connection: the error middleware answers 503
    assert raised.value.connection_invalidated and _unavailable(raised.value)
    assert _pool(engine).checkedout() == 0
    # a lost connection makes the whole pool suspect (a restart ends every connection): the
    # idle one made before is replaced too, rather than lent out to fail a later request
    for _ in range(_pool(engine).size() + 2):
        async with raw_read(engine) as conn:
            [(pid,)] = await rawpg.rows(conn, _PID, {})
        assert pid not in (victim, idle_pid)


async def test_a_statement_that_needs_sqlalchemy_is_refused_on_a_lean_connection(
    engine: AsyncEngine,
) -> None:
    # an expanding IN needs SQLAlchemy's compiler at run time: running it would need a second
    # connection while the lean one is held (a pool-starving pattern), so it is refused
    stmt = select(users.c.name).where(users.c.name.in_(bindparam("names", expanding=True)))
    assert rawpg.compiled(stmt) is None
    with pytest.raises(TypeError, match="lean connection"):
        async with raw_read(engine) as conn:
            await rawpg.rows(conn, stmt, {"names": ["alice"]})
    assert _pool(engine).checkedout() == 0
    async with read_transaction(engine) as conn:  # on SQLAlchemy's own connection it runs
        assert list(await rawpg.rows(conn, stmt, {"names": ["alice", "x"]})) == [("alice",)]


# Every statement the lean paths run (auth, _revs_diff, _bulk_docs, _local PUT; GET /{db},
# _changes, _bulk_get): each must be runnable by the driver alone, or those requests would fail.
LEAN_STATEMENTS = {
    "optimistic write": lambda: _WRITE,
    "optimistic write of new documents": lambda: _WRITE_NEW,
    **{
        f"optimistic write new={n} remembered caller": (
            lambda n=n: _statement(on_conflict=not n, checked=True)
        )
        for n in (False, True)
    },
    **{
        f"caller db={d} local={lo} jti={j} docs={x}": (
            lambda d=d, lo=lo, j=j, x=x: _caller_statement(d, lo, j, x)
        )
        for d, lo, j, x in itertools.product((False, True), repeat=4)
        if d or not (lo or x)
    },
    "document trees by id": lambda: keys_statement(_tree_select, documents, False, "ids"),
    "attachment stubs by rev": lambda: keys_statement(_stub_select, revisions, False, "revs"),
    "revisions by rev (rules)": lambda: keys_statement(_revision_select, revisions, False, "revs"),
    **{
        f"{'create' if c else 'update'} a _local doc, remembered={k}": (
            lambda c=c, k=k: _put_statement(False, create=c, checked=k)
        )
        for c, k in itertools.product((True, False), repeat=2)
    },
    **{
        f"changes desc={d} bodies={b} owned={o} ids={i}": (
            lambda d=d, b=b, o=o, i=i: _changes_statement(False, d, b, o, i)
        )
        for d, b, o, i in itertools.product((False, True), repeat=4)
    },
    **{f"pending owned={o}": (lambda o=o: _pending_statement(o)) for o in (False, True)},
    **{f"live documents owned={o}": (lambda o=o: _count_rows_statement(o)) for o in (False, True)},
    **{f"open conflicts owned={o}": (lambda o=o: _count_open_statement(o)) for o in (False, True)},
    "documents by id": lambda: keys_statement(_doc_select, documents, False, "ids"),
    "documents with revisions": _docs_with_revisions_statement,
    "attachment data": lambda: _attachment_data_statement(False),
}


@pytest.mark.parametrize("build", LEAN_STATEMENTS.values(), ids=LEAN_STATEMENTS.keys())
def test_every_statement_of_the_lean_paths_runs_on_the_driver_alone(build: Any) -> None:
    assert rawpg.compiled(build()) is not None
