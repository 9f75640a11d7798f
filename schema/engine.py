"""Database engines for both backends, and the write-transaction helper.

PostgreSQL (``postgresql+asyncpg://``) is the production store; SQLite (``sqlite+aiosqlite``)
is the embedded default.  On SQLite a writing transaction starts with ``BEGIN IMMEDIATE`` so
writers queue on the database lock instead of failing to upgrade a read lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from schema import rawpg

WRITE_OPTION = "gateway_write"


def is_sqlite(engine: AsyncEngine | rawpg.Runner) -> bool:
    """Tell whether ``engine`` talks to SQLite."""
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, pool_size: int = 20, echo: bool = False) -> AsyncEngine:
    """Create an async engine for ``url`` with the settings each backend needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # hide_parameters: bound values (bodies, password hashes, token digests) never
        # appear in an error's text, which the error middleware logs
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": 60}, hide_parameters=True
        )
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        hide_parameters=True,
        # whatever the server's default: the write path and the reference triggers of
        # migration 0007 are built for READ COMMITTED (reads run in autocommit)
        isolation_level="READ COMMITTED",
    )
    _configure_postgres(engine)
    return engine


def _configure_postgres(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # A pooled connection the server ended (a restart, a failover, pg_terminate_backend)
        # is marked closed by asyncpg as soon as the server's goodbye arrives: the pool
        # replaces it here, at no cost (no round trip, unlike pool_pre_ping), instead of
        # handing it to a request that would fail with a 503 although the database is back.
        driver = record.driver_connection
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection")


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver (SQLAlchemy's documented recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Open a connection and a transaction meant to write (commits on success)."""
    async with engine.connect() as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            yield conn


@asynccontextmanager
async def read_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Open a connection for reading.

    On PostgreSQL it runs in autocommit (each statement sees what was committed when it
    started; no BEGIN/COMMIT round trips); on SQLite it is one snapshot transaction.
    """
    async with engine.connect() as conn:
        if is_sqlite(conn):
            async with conn.begin():
                yield conn
        else:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn


@asynccontextmanager
async def single_statement(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Open a connection for one atomic writing statement (autocommit on PostgreSQL)."""
    async with engine.connect() as conn:
        if is_sqlite(conn):
            await conn.execution_options(**{WRITE_OPTION: True})
            async with conn.begin():
                yield conn
        else:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn


def raw_read(engine: AsyncEngine) -> AbstractAsyncContextManager[rawpg.Runner]:
    """A connection for code that reads with ``rawpg.rows`` only: on PostgreSQL a lean
    checkout (``rawpg.checkout``, autocommit), on SQLite a ``read_transaction``."""
    return _raw(engine, read_transaction)


def raw_statement(engine: AsyncEngine) -> AbstractAsyncContextManager[rawpg.Runner]:
    """``single_statement`` for code that runs ``rawpg.rows`` only: on PostgreSQL a lean
    checkout in autocommit, on SQLite a writing transaction."""
    return _raw(engine, single_statement)


def _raw(
    engine: AsyncEngine,
    on_sqlite: Callable[[AsyncEngine], AbstractAsyncContextManager[AsyncConnection]],
) -> AbstractAsyncContextManager[rawpg.Runner]:
    return on_sqlite(engine) if is_sqlite(engine) else rawpg.checkout(engine)


def insert_ignore(conn: AsyncConnection | AsyncEngine, table: Any) -> Any:
    """Return ``INSERT ... ON CONFLICT DO NOTHING`` for the connection's dialect."""
    if is_sqlite(conn):
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert(table).on_conflict_do_nothing()
