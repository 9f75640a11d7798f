"""Reading documents: rows, revisions, attachments and ``_all_docs`` ranges (batched)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Integer, Text, and_, bindparam, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from replication import RevTree, tree_from_data
from schema import rawpg
from schema.engine import is_sqlite
from schema.keys import chunks, fetch_by_ids, fetch_by_revs, owner_param
from schema.rawpg import Runner
from schema.tables import attachments, documents, revisions


# not frozen: built for every row read, and a frozen dataclass costs about five times as
# much to build (its __init__ goes through object.__setattr__); never changed after it is built
@dataclass(slots=True)
class DocRow:
    """A document's summary row: winner, leaves (winner first) and its latest seq."""

    doc_id: str
    seq: int
    winning_rev: str
    deleted: bool
    leaves: list[list[Any]]
    raw_tree: bytes
    owner_id: int | None

    def tree(self) -> RevTree:
        """Parse the full revision tree (only where history is needed)."""
        return tree_from_data(orjson.loads(self.raw_tree))

    def conflicts(self) -> list[str]:
        return [rev for rev, deleted in self.leaves[1:] if not deleted]

    def deleted_conflicts(self) -> list[str]:
        return [rev for rev, deleted in self.leaves[1:] if deleted]


# not frozen: built for every row read, and a frozen dataclass costs about five times as
# much to build (its __init__ goes through object.__setattr__); never changed after it is built
@dataclass(slots=True)
class RevisionRow:
    """One stored revision: its body bytes (no underscore members) and attachment meta."""

    rev: str
    deleted: bool
    body: bytes
    attachments: dict[str, dict[str, Any]] | None


_DOC_COLUMNS = (
    documents.c.doc_id,
    documents.c.seq,
    documents.c.winning_rev,
    documents.c.deleted,
    documents.c.leaves,
    documents.c.rev_tree,
    documents.c.owner_id,
)


def _doc_row(row: Any) -> DocRow:
    return DocRow(row[0], row[1], row[2], row[3], orjson.loads(row[4]), row[5], row[6])


def _doc_select() -> Select[Any]:
    return select(*_DOC_COLUMNS).where(owner_param(documents.c.owner_id))


def _revision_select() -> Select[Any]:
    return select(
        revisions.c.doc_id,
        revisions.c.rev,
        revisions.c.deleted,
        revisions.c.body,
        revisions.c.attachments,
    )


def owner_clause(owner_id: int | None) -> Any:
    """Restrict to one owner's documents (None: no restriction)."""
    return documents.c.owner_id == owner_id if owner_id is not None else True


async def get_doc_rows(
    conn: Runner, db_id: int, doc_ids: Sequence[str], owner_id: int | None = None
) -> dict[str, DocRow]:
    """Return the rows of the given documents that exist (and that ``owner_id`` may see)."""
    found: dict[str, DocRow] = {}
    for part in chunks(list(dict.fromkeys(doc_ids))):
        rows = await fetch_by_ids(conn, _doc_select, documents, db_id, part, owner=owner_id)
        for row in rows:
            found[row[0]] = _doc_row(row)
    return found


async def get_revisions(
    conn: Runner, db_id: int, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], RevisionRow]:
    """Return stored revisions for ``(doc_id, rev)`` keys; missing ones are left out."""
    found: dict[tuple[str, str], RevisionRow] = {}
    unique = list(dict.fromkeys(keys))
    for part in chunks(unique):
        rows = await fetch_by_revs(conn, _revision_select, revisions, db_id, part)
        for doc_id, rev, deleted, body, atts in rows:
            found[(doc_id, rev)] = RevisionRow(
                rev, deleted, body, orjson.loads(atts) if atts else None
            )
    return found


async def get_attachment_data(conn: Runner, db_id: int, digests: Sequence[str]) -> dict[str, bytes]:
    """Return attachment bytes by digest."""
    found: dict[str, bytes] = {}
    stmt = _attachment_data_statement(is_sqlite(conn))
    for part in chunks(list(dict.fromkeys(digests))):
        rows = await rawpg.rows(conn, stmt, {"db_id": db_id, "digests": list(part)})
        found.update({digest: data for digest, data in rows})
    return found


@cache
def _attachment_data_statement(sqlite: bool) -> Select[Any]:
    stmt = select(attachments.c.digest, attachments.c.data).where(
        attachments.c.db_id == bindparam("db_id", type_=Integer)
    )
    if sqlite:
        return stmt.where(attachments.c.digest.in_(bindparam("digests", expanding=True)))
    return stmt.where(attachments.c.digest == bindparam("digests", type_=ARRAY(Text)).any_())


@dataclass(frozen=True, slots=True)
class AllDocsQuery:
    start: str | None = None
    end: str | None = None
    inclusive_end: bool = True
    descending: bool = False
    skip: int = 0
    limit: int | None = None


async def all_docs_range(
    conn: AsyncConnection, db_id: int, query: AllDocsQuery, owner_id: int | None = None
) -> list[DocRow]:
    """Return live documents in raw id order between the query's keys."""
    col = documents.c.doc_id
    conds = [documents.c.db_id == db_id, documents.c.deleted.is_(False), owner_clause(owner_id)]
    if query.start is not None:
        conds.append(col <= query.start if query.descending else col >= query.start)
    if query.end is not None:
        if query.descending:
            conds.append(col >= query.end if query.inclusive_end else col > query.end)
        else:
            conds.append(col <= query.end if query.inclusive_end else col < query.end)
    stmt = select(*_DOC_COLUMNS).where(and_(*conds))
    stmt = stmt.order_by(col.desc() if query.descending else col.asc())
    if query.skip:
        stmt = stmt.offset(query.skip)
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    return [_doc_row(row) for row in await conn.execute(stmt)]


async def count_rows(conn: Runner, db_id: int, owner_id: int | None = None) -> int:
    """Count live documents (visible to ``owner_id``)."""
    params = {"db_id": db_id, "owner": owner_id}
    [(counted,)] = await rawpg.rows(conn, _count_rows_statement(owner_id is not None), params)
    return int(counted)


@cache
def _count_rows_statement(owned: bool) -> Select[Any]:
    stmt = select(func.count()).where(
        documents.c.db_id == bindparam("db_id", type_=Integer), documents.c.deleted.is_(False)
    )
    if owned:
        stmt = stmt.where(documents.c.owner_id == bindparam("owner", type_=Integer))
    return stmt


@cache
def _docs_with_revisions_statement() -> Select[Any]:
    """PostgreSQL: document rows and the wanted revision of each, in one round trip."""
    db_id = bindparam("db_id", type_=Integer)
    keys = (
        func.unnest(bindparam("ids", type_=ARRAY(Text)), bindparam("revs", type_=ARRAY(Text)))
        .table_valued("id", "rev")
        .render_derived(name="k")
    )
    doc = (
        select(*_DOC_COLUMNS)
        .where(
            documents.c.db_id == db_id,
            documents.c.doc_id == keys.c.id.collate("C"),
            owner_param(documents.c.owner_id),
        )
        .limit(1)
        .lateral("d")
    )
    rev = (
        select(revisions.c.rev, revisions.c.deleted, revisions.c.body, revisions.c.attachments)
        .where(
            revisions.c.db_id == db_id,
            revisions.c.doc_id == doc.c.doc_id,
            revisions.c.rev == func.coalesce(keys.c.rev, doc.c.winning_rev),
        )
        .limit(1)
        .lateral("r")
    )
    return select(*doc.c, *rev.c).select_from(keys).join(doc, true()).outerjoin(rev, true())


async def get_docs_with_revisions(
    conn: Runner,
    db_id: int,
    pairs: Sequence[tuple[str, str | None]],
    owner_id: int | None = None,
) -> tuple[dict[str, DocRow], dict[tuple[str, str], RevisionRow]]:
    """PostgreSQL only: rows of the documents and their wanted revisions (None: the winner)."""
    rows: dict[str, DocRow] = {}
    stored: dict[tuple[str, str], RevisionRow] = {}
    wanted = [p for p in dict.fromkeys(pairs) if "\x00" not in p[0]]
    for part in chunks(wanted):
        result = await rawpg.rows(
            conn,
            _docs_with_revisions_statement(),
            {
                "db_id": db_id,
                "ids": [p[0] for p in part],
                "revs": [p[1] for p in part],
                "owner": owner_id,
            },
        )
        width = len(_DOC_COLUMNS)
        for row in result:
            doc = rows.get(row[0]) or _doc_row(row[:width])
            rows[doc.doc_id] = doc
            rev, deleted, body, atts = row[width:]
            if rev is not None:
                stored[(doc.doc_id, rev)] = RevisionRow(
                    rev, deleted, body, orjson.loads(atts) if atts else None
                )
    return rows, stored
