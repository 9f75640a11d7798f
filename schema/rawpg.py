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
* only for statements whose parameters and columns need no processing by SQLAlchemy
  (checked when compiled; anything else runs through ``conn.execute``);
* errors are translated exactly as SQLAlchemy does (``DBAPIError`` subclasses carrying the
  asyncpg error as ``orig``), and a connection that died is invalidated so the pool drops it.

Statements must be long-lived objects (module-level or built by a cached builder): the
compiled form is cached per statement object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement

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


async def rows(
    conn: AsyncConnection, stmt: ClauseElement, params: Mapping[str, Any]
) -> Sequence[Any]:
    """Run ``stmt`` with ``params`` and return its rows (tuples by position)."""
    driver = _driver(conn)
    plan = compiled(stmt) if driver is not None else None
    if plan is None:
        return list(await conn.execute(stmt, dict(params)))
    try:
        return await driver.fetch(plan.sql, *plan.args(params))
    except Exception as exc:
        raise await _translate(conn, plan, exc) from exc


async def _translate(conn: AsyncConnection, plan: Compiled, exc: Exception) -> Exception:
    """Turn an asyncpg error into the ``DBAPIError`` SQLAlchemy would raise for it."""
    fairy = conn.sync_connection._dbapi_connection if conn.sync_connection else None
    adapted = fairy.dbapi_connection if fairy is not None else None
    dbapi_error: Exception = exc
    if adapted is not None:
        try:
            adapted._handle_exception(exc)
        except Exception as translated:
            dbapi_error = translated
    dbapi = conn.dialect.loaded_dbapi
    if not isinstance(dbapi_error, dbapi.Error):
        return exc
    disconnect = adapted is not None and (
        conn.dialect.is_disconnect(dbapi_error, adapted, None) or adapted._connection.is_closed()
    )
    if disconnect:
        await conn.invalidate(dbapi_error)
    return DBAPIError.instance(
        plan.sql,
        None,
        dbapi_error,
        dbapi.Error,
        hide_parameters=True,
        connection_invalidated=disconnect,
        dialect=conn.dialect,
    )
