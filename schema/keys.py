"""Looking rows up by many keys at once, with statements built once per backend.

On PostgreSQL, ``doc_id IN ($1, ..., $n)`` next to ``db_id = $0`` may be planned as a scan of
every document of the database when statistics are stale (a fresh or bulk-loaded table), and
its SQL text changes with n.  A lateral lookup per element of one array parameter makes
the plan a primary-key probe per key whatever the statistics say, with one statement for any
batch size:

    SELECT d.* FROM unnest($2::text[]) AS k(id) CROSS JOIN LATERAL
      (SELECT ... FROM documents WHERE db_id = $1 AND doc_id = k.id COLLATE "C" LIMIT 1) AS d

SQLite plans ``IN`` lists on its primary key well, so it keeps them.  Statements are built
once per (query, backend) and reused, so SQLAlchemy never rebuilds or re-keys them; callers
pass ``db_id`` and ``ids`` (or ``doc_ids`` and ``revs``) as parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Integer, Table, Text, bindparam, func, or_, select, true, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import Select

from schema import rawpg
from schema.engine import is_sqlite
from schema.rawpg import Runner

Builder = Callable[[], Select[Any]]
CHUNK = 500


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """Split ``items`` into slices of at most ``size`` (bound-parameter limits)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def storable(ids: Sequence[str]) -> list[str]:
    """Drop ids no row can have: PostgreSQL text cannot hold NUL (and would refuse the query)."""
    return [i for i in ids if "\x00" not in i]


def owner_param(column: Any) -> Any:
    """``(:owner IS NULL OR column = :owner)``: an optional owner restriction as a parameter."""
    owner = bindparam("owner", type_=Integer)
    return or_(owner.is_(None), column == owner)


def _by_ids(sqlite: bool, stmt: Select[Any], table: Table) -> Select[Any]:
    db_id = bindparam("db_id", type_=Integer)
    if sqlite:
        return stmt.where(
            table.c.db_id == db_id, table.c.doc_id.in_(bindparam("ids", expanding=True))
        )
    keys, found = probe_ids(stmt, table, db_id, bindparam("ids", type_=ARRAY(Text)))
    return select(*found.c).select_from(keys).join(found, true())


def probe_ids(stmt: Select[Any], table: Table, db_id: Any, ids: Any) -> tuple[Any, Any]:
    """The ids of the array ``ids`` (``k``) and, lateral to it, ``stmt``'s row for each in
    database ``db_id`` (``d``), to be joined (PostgreSQL).  One index probe per id, whatever
    the planner believes of the table's size: ``= ANY(array)`` becomes a scan of the whole
    table when its statistics are missing or stale."""
    keys = func.unnest(ids).table_valued("id").render_derived(name="k")
    probe = stmt.where(table.c.db_id == db_id, table.c.doc_id == keys.c.id.collate("C"))
    probe = probe.correlate_except(table)  # the ids, and whatever gives db_id, are outside
    return keys, probe.limit(1).lateral("d")


def _by_revs(sqlite: bool, stmt: Select[Any], table: Table) -> Select[Any]:
    db_id = bindparam("db_id", type_=Integer)
    if sqlite:
        pairs = tuple_(table.c.doc_id, table.c.rev).in_(bindparam("pairs", expanding=True))
        return stmt.where(table.c.db_id == db_id, pairs)
    doc_ids = bindparam("doc_ids", type_=ARRAY(Text))
    revs = bindparam("revs", type_=ARRAY(Text))
    keys = func.unnest(doc_ids, revs).table_valued("id", "rev").render_derived(name="k")
    probe = stmt.where(
        table.c.db_id == db_id,
        table.c.doc_id == keys.c.id.collate("C"),
        table.c.rev == keys.c.rev,
    )
    found = probe.limit(1).lateral("d")
    return select(*found.c).select_from(keys).join(found, true())


@cache
def _statement(builder: Builder, table: Table, sqlite: bool, by: str) -> Select[Any]:
    return (_by_ids if by == "ids" else _by_revs)(sqlite, builder(), table)


async def fetch_by_ids(
    conn: Runner,
    builder: Builder,
    table: Table,
    db_id: int,
    ids: Sequence[str],
    **params: Any,
) -> list[Any]:
    """Run ``builder()``'s select restricted to ``ids`` of database ``db_id``; return rows."""
    stmt = _statement(builder, table, is_sqlite(conn), "ids")
    return list(await rawpg.rows(conn, stmt, {"db_id": db_id, "ids": storable(ids), **params}))


async def fetch_by_revs(
    conn: Runner,
    builder: Builder,
    table: Table,
    db_id: int,
    pairs: Sequence[tuple[str, str]],
) -> list[Any]:
    """Run ``builder()``'s select restricted to ``(doc_id, rev)`` pairs; return rows."""
    sqlite = is_sqlite(conn)
    stmt = _statement(builder, table, sqlite, "revs")
    pairs = [p for p in pairs if "\x00" not in p[0]]
    if sqlite:
        params: dict[str, Any] = {"pairs": list(pairs)}
    else:
        params = {"doc_ids": [p[0] for p in pairs], "revs": [p[1] for p in pairs]}
    return list(await rawpg.rows(conn, stmt, {"db_id": db_id, **params}))
