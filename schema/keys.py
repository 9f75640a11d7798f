"""Looking rows up by many keys at once, in a shape each backend plans well.

On PostgreSQL, ``doc_id IN ($1, ..., $n)`` next to ``db_id = $0`` may be planned as a scan of
every document of the database when statistics are stale (a fresh or bulk-loaded table), and
its SQL text changes with n.  A lateral lookup per element of one array parameter makes
the plan a primary-key probe per key whatever the statistics say, with one statement for any
batch size:

    SELECT d.* FROM unnest($2::text[]) AS k(id) CROSS JOIN LATERAL
      (SELECT ... FROM documents WHERE db_id = $1 AND doc_id = k.id COLLATE "C" LIMIT 1) AS d

SQLite plans ``IN`` lists on its primary key well, so it keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, Text, func, literal, select, true, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from schema.engine import is_sqlite


def where_doc_ids(
    conn: AsyncConnection, stmt: Select[Any], table: Table, db_id: int, ids: Sequence[str]
) -> Select[Any]:
    """Restrict ``stmt`` (selecting from ``table``) to one database's ``ids``."""
    if is_sqlite(conn):
        return stmt.where(table.c.db_id == db_id, table.c.doc_id.in_(list(ids)))
    keys = func.unnest(literal(list(ids), ARRAY(Text))).table_valued("id").render_derived(name="k")
    probe = stmt.where(table.c.db_id == db_id, table.c.doc_id == keys.c.id.collate("C"))
    found = probe.limit(1).lateral("d")
    return select(*found.c).select_from(keys).join(found, true())


def where_doc_revs(
    conn: AsyncConnection,
    stmt: Select[Any],
    table: Table,
    db_id: int,
    pairs: Sequence[tuple[str, str]],
) -> Select[Any]:
    """Restrict ``stmt`` (selecting from ``table``) to one database's ``(doc_id, rev)`` pairs."""
    if is_sqlite(conn):
        return stmt.where(
            table.c.db_id == db_id, tuple_(table.c.doc_id, table.c.rev).in_(list(pairs))
        )
    doc_ids = literal([p[0] for p in pairs], ARRAY(Text))
    revs = literal([p[1] for p in pairs], ARRAY(Text))
    keys = func.unnest(doc_ids, revs).table_valued("id", "rev").render_derived(name="k")
    probe = stmt.where(
        table.c.db_id == db_id,
        table.c.doc_id == keys.c.id.collate("C"),
        table.c.rev == keys.c.rev,
    )
    found = probe.limit(1).lateral("d")
    return select(*found.c).select_from(keys).join(found, true())
