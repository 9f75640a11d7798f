"""Documents as the REST API shows them: ``id``, ``version`` (the winning revision's
generation), ``rev``, then the body's own fields; and the timestamps the API writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from replication.revs import rev_pos
from schema.tables import documents, revisions


def version_of(rev: str) -> int:
    """``3-abc…`` is version 3."""
    return rev_pos(rev)


# What the REST form says about the document itself: never taken from its body (a body
# written over CouchDB may hold a "version" of its own, which must not pass for the real one).
SERVER_FIELDS = frozenset({"id", "version", "rev"})


def represent(doc_id: str, rev: str, body: dict[str, Any]) -> dict[str, Any]:
    """The REST form of a document (``_`` members and body fields named like the server's
    own left out)."""
    out = {"id": doc_id, "version": version_of(rev), "rev": rev}
    out.update({k: v for k, v in body.items() if not k.startswith("_") and k not in SERVER_FIELDS})
    return out


def now_iso() -> str:
    """Now, as the API stamps ``created_at``/``updated_at`` (UTC, milliseconds, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def winner_columns() -> Select[Any]:
    """``SELECT doc_id, winning_rev, body`` of documents and their winning revisions; the
    caller adds its ``select_from`` root (joined to ``documents``) and its filters."""
    return select(documents.c.doc_id, documents.c.winning_rev, revisions.c.body)


def winner_revision() -> ColumnElement[bool]:
    """The join condition from ``documents`` to the row of its winning revision."""
    return (
        (revisions.c.db_id == documents.c.db_id)
        & (revisions.c.doc_id == documents.c.doc_id)
        & (revisions.c.rev == documents.c.winning_rev)
    )


async def represented(conn: AsyncConnection, stmt: Select[Any]) -> list[dict[str, Any]]:
    """Run a ``winner_columns()`` query; its rows in their REST form."""
    rows = await conn.execute(stmt)
    return [represent(doc_id, rev, orjson.loads(body)) for doc_id, rev, body in rows]
