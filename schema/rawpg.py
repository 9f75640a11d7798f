"""PostgreSQL's hot path: SQLAlchemy Core statements compiled once, run straight on asyncpg.

SQLAlchemy's execution layer (compile-cache lookup, parameter and result processing, cursor
adaptation) costs about 200 µs of CPU per statement, more than asyncpg and PostgreSQL
together for the small statements every replication request runs (the caller's lookup,
loading trees, the batch write, checkpoints).  ``rows`` runs such a statement on the
connection's asyncpg connection instead, with the SQL and parameter order compiled once.
The statement is still declared once, in SQLAlchemy Core, and the behaviour is the same:

* only on PostgreSQL connections in autocommit (``read_transaction`` and
  ``single_statement``), where no transaction of SQLAlchemy's is open; anywhere else (SQLite,
  a write transaction) it is ``conn.execute``;
* or on a ``RawConnection`` (``checkout``): a connection of the engine's own pool, checked
  out without building SQLAlchemy's ``Connection`` around it (about 60 µs of CPU less per
  request: no ``Connection``, no execution options, no isolation-level reset on return).
  It runs statements in autocommit and nothing else; the pool's rules (size, timeout,
  recycling, the checkout check of ``schema.engine``, invalidation) apply to it unchanged;
* only for statements whose parameters and columns need no processing by SQLAlchemy
  (checked when compiled; anything else runs through ``conn.execute``, and on a
  ``RawConnection`` is refused with ``TypeError``: ``tests/schema/test_rawpg.py`` compiles
  every statement the lean paths run);
* errors are translated exactly as SQLAlchemy does (``DBAPIError`` subclasses carrying the
  asyncpg error as ``orig``), and a connection that died is invalidated so the pool drops it.

Statements must be long-lived objects (module-level or built by a cached builder): the
compiled form is cached per statement object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.util.concurrency import greenlet_spawn

_DIALECT = asyncpg_dialect()


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any]  # values of the statement's own literals (``LIMIT 1``)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        defaults = self.defaults
        return [params[n] if n in params else defaults[n] for n in self.names]


_compiled: dict[int, tuple[ClauseElement, Compiled | None]] = {}


def compiled(stmt: ClauseElement) -> Compiled | None:
    """The asyncpg SQL and parameter order of ``stmt``; None when it needs SQLAlchemy's
    processing (expanding parameters, bind or result processors)."""
    hit = _compiled.get(id(stmt))
    if hit is not None and hit[0] is stmt:
        return hit[1]
    out = _compile(stmt)
    _compiled[id(stmt)] = (stmt, out)  # keeps stmt alive, so its id is never reused
    return out


def _compile(stmt: ClauseElement) -> Compiled | None:
    c: Any = stmt.compile(dialect=_DIALECT)
    if c.literal_execute_params or c.post_compile_params or c.positiontup is None:
        return None
    for name in c.positiontup:
        if c._bind_processors.get(name) and not _plain_array(c.binds[name].type):
            return None
    result_columns = getattr(c, "_result_columns", None) or []
    for column in result_columns:
        if column[3].dialect_impl(_DIALECT).result_processor(_DIALECT, None) is not None:
            return None
    defaults = {
        name: bind.value
        for name, bind in ((n, c.binds[n]) for n in c.positiontup)
        if not bind.required and bind.value is not None
    }
    return Compiled(c.string, tuple(c.positiontup), defaults)


def _plain_array(type_: Any) -> bool:
    """An ARRAY of a type asyncpg takes as it is: a list is passed through unchanged."""
    if not isinstance(type_, ARRAY):
        return False
    item = type_.item_type.dialect_impl(_DIALECT)
    return item.bind_processor(_DIALECT) is None


class RawConnection:
    """A pooled PostgreSQL connection lent to ``rows`` alone (see ``checkout``).

    It is its own async context manager (no generator-based wrapper: this runs for nearly
    every request): entering checks a connection out of the engine's pool, leaving returns it.
    """

    __slots__ = ("dialect", "engine", "fairy")

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect: Dialect = engine.dialect
        self.fairy: Any = None  # SQLAlchemy's pooled connection (its _ConnectionFairy)

    async def __aenter__(self) -> RawConnection:
        sync_engine = self.engine.sync_engine
        try:
            self.fairy = await greenlet_spawn(sync_engine.raw_connection)
        except self.dialect.loaded_dbapi.Error as err:
            Connection._handle_dbapi_exception_noconnection(err, self.dialect, sync_engine)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        fairy, self.fairy = self.fairy, None
        await asyncio.shield(greenlet_spawn(fairy.close))


Runner = AsyncConnection | RawConnection  # what ``rows`` runs statements on


def checkout(engine: AsyncEngine) -> RawConnection:
    """Lend a connection of ``engine``'s pool (PostgreSQL) for ``rows`` in autocommit:
    ``async with checkout(engine) as conn``.

    Checking out and in are the pool's own, in a greenlet as SQLAlchemy's ``connect`` and
    ``close`` do (either may open or close a connection); errors are translated as
    ``Engine.connect`` translates them, and the return to the pool is shielded from
    cancellation, as ``AsyncConnection.close`` shields it.
    """
    return RawConnection(engine)


def _driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn`` when it is PostgreSQL in autocommit, else None."""
    if conn.dialect.name != "postgresql":
        return None
    fairy = conn.sync_connection._dbapi_connection if conn.sync_connection else None
    if fairy is None:
        return None
    adapted = fairy.dbapi_connection
    if adapted is None or not getattr(adapted, "autocommit", False):
        return None
    return fairy.driver_connection


async def rows(conn: Runner, stmt: ClauseElement, params: Mapping[str, Any]) -> Sequence[Any]:
    """Run ``stmt`` with ``params`` and return its rows (tuples by position)."""
    if isinstance(conn, RawConnection):
        return await _raw_rows(conn, stmt, params)
    driver = _driver(conn)
    plan = compiled(stmt) if driver is not None else None
    if plan is None:
        return list(await conn.execute(stmt, dict(params)))
    try:
        return await driver.fetch(plan.sql, *plan.args(params))
    except Exception as exc:
        fairy = conn.sync_connection._dbapi_connection if conn.sync_connection else None
        translated, disconnect = _translate(conn.dialect, fairy, plan, exc)
        if disconnect:
            _stale_pool(conn.engine, fairy, translated)
            await conn.invalidate(translated)
        raise translated from exc


async def _raw_rows(
    conn: RawConnection, stmt: ClauseElement, params: Mapping[str, Any]
) -> Sequence[Any]:
    plan = compiled(stmt)
    if plan is None:
        # A programming error, refused at once: running it through SQLAlchemy would need a
        # second connection while this one is held, and requests holding one connection
        # each while waiting for another can exhaust the pool.
        raise TypeError(f"rawpg cannot run this statement on a lean connection: {stmt}")
    fairy = conn.fairy
    try:
        return await fairy.driver_connection.fetch(plan.sql, *plan.args(params))
    except Exception as exc:
        translated, disconnect = _translate(conn.dialect, fairy, plan, exc)
        if disconnect:  # the pool drops it when it is returned
            _stale_pool(conn.engine, fairy, translated)
            await greenlet_spawn(fairy.invalidate, translated)
        raise translated from exc


def _stale_pool(engine: AsyncEngine, fairy: Any, error: Exception) -> None:
    """After a lost connection, every pooled connection made before it is suspect (a server
    restart or failover ends them all): the pool reconnects each at its next checkout, as it
    does when a statement run by SQLAlchemy's ``Connection`` finds its connection gone."""
    engine.sync_engine.pool._invalidate(fairy, error, _checkin=False)


def _translate(
    dialect: Dialect, fairy: Any, plan: Compiled, exc: Exception
) -> tuple[Exception, bool]:
    """The ``DBAPIError`` SQLAlchemy would raise for an asyncpg error, and whether it means
    the connection is gone."""
    adapted = fairy.dbapi_connection if fairy is not None else None
    dbapi_error: Exception = exc
    if adapted is not None:
        try:
            adapted._handle_exception(exc)
        except Exception as translated:
            dbapi_error = translated
    dbapi = dialect.loaded_dbapi
    if not isinstance(dbapi_error, dbapi.Error):
        return exc, False
    disconnect = adapted is not None and (
        dialect.is_disconnect(dbapi_error, adapted, None) or adapted._connection.is_closed()
    )
    error = DBAPIError.instance(
        plan.sql,
        None,
        dbapi_error,
        dbapi.Error,
        hide_parameters=True,
        connection_invalidated=disconnect,
        dialect=dialect,
    )
    return error, disconnect
