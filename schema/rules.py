"""Per-database rules applied inside the write transaction, whatever route the write took.

The ``inspections`` database has two (SPEC §7):

* **validation**: every edit is checked against the inspection workflow
  (``replication.workflow``), comparing the revision it is based on with the new body; a
  refused edit becomes a per-document ``forbidden`` result, the others go on;
* **the index**: the fields the REST API filters on (status, template, inspector) are
  copied from each written document's winning revision into ``inspection_index``, so lists
  are filtered and paginated in SQL.

Writes to a database with rules take the locking path (``schema.documents.update_docs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from replication import DocEdit, GatewayError
from replication.workflow import check_inspection_edit
from schema.batch import Batch, DocState, WriteResult
from schema.databases import Database
from schema.keys import chunks
from schema.rawpg import Runner
from schema.reads import get_revisions
from schema.tables import inspection_index

INSPECTIONS = "inspections"


def has_rules(db: Database) -> bool:
    return db.name == INSPECTIONS


def _base_rev(edit: DocEdit, state: DocState | None, new_edits: bool) -> str | None:
    """The stored revision an edit is based on (None: it creates the document)."""
    if state is None:
        return None
    if new_edits:  # without a rev it creates (or re-creates a deleted document)
        return edit.rev
    for rev in edit.path[1:] or ():
        if rev in state.tree:
            return rev
    return None


async def validate_edits(
    conn: Runner,
    db: Database,
    states: dict[str, DocState],
    edits: Sequence[DocEdit | WriteResult],
    *,
    new_edits: bool,
    role: str,
    owner_scope: int | None,
) -> list[DocEdit | WriteResult]:
    """Turn every edit the database's rules refuse into a ``forbidden`` result.

    Edits of documents outside ``owner_scope`` are left for the planner to refuse as it
    refuses them everywhere (a ``conflict``), so the rules reveal nothing about them.
    """
    bases: dict[int, tuple[str, str]] = {}
    hidden: set[int] = set()
    for index, edit in enumerate(edits):
        if isinstance(edit, DocEdit):
            state = states.get(edit.doc_id)
            if state is not None and owner_scope is not None and state.owner_id != owner_scope:
                hidden.add(index)
                continue
            base = _base_rev(edit, state, new_edits)
            if base is not None:
                bases[index] = (edit.doc_id, base)
    stored = await get_revisions(conn, db.id, list(bases.values()))
    checked: list[DocEdit | WriteResult] = []
    for index, edit in enumerate(edits):
        if not isinstance(edit, DocEdit) or index in hidden:
            checked.append(edit)
            continue
        row = stored.get(bases[index]) if index in bases else None
        old = orjson.loads(row.body) if row is not None and not row.deleted else None
        try:
            check_inspection_edit(old, None if edit.deleted else edit.body, role)
        except GatewayError as exc:
            checked.append(WriteResult(edit.doc_id, None, exc))
            continue
        checked.append(edit)
    return checked


async def update_index(conn: AsyncConnection, db: Database, batch: Batch, first_seq: int) -> None:
    """Copy the filtered fields of every written document's winner into the index."""
    if not batch.documents:
        return
    new_bodies = {(r["doc_id"], r["rev"]): r["body"] for r in batch.revisions}
    missing = [
        (d.doc_id, d.winning_rev)
        for d in batch.documents
        if (d.doc_id, d.winning_rev) not in new_bodies
    ]
    if missing:
        stored = await get_revisions(conn, db.id, missing)
        new_bodies.update({key: row.body for key, row in stored.items()})
    rows: list[dict[str, Any]] = []
    for offset, doc in enumerate(batch.documents):
        raw = new_bodies.get((doc.doc_id, doc.winning_rev))
        body = orjson.loads(raw) if raw else {}
        rows.append(
            {
                "db_id": db.id,
                "doc_id": doc.doc_id,
                "owner_id": doc.owner_id,
                "status": _text(body.get("status", "draft"), 32),
                "template_id": _text(body.get("template_id"), 200),
                "inspector": _text(body.get("inspector"), 128),
                "deleted": doc.deleted,
                "seq": first_seq + offset,
            }
        )
    for part in chunks(rows):
        await conn.execute(
            delete(inspection_index).where(
                inspection_index.c.db_id == db.id,
                inspection_index.c.doc_id.in_([r["doc_id"] for r in part]),
            )
        )
    await conn.execute(insert(inspection_index), rows)


def _text(value: Any, limit: int) -> str | None:
    """A field as the index holds it: text up to ``limit`` characters, else None.  Text with
    NUL is None too: no filter can name it (a NUL in a query is refused) and PostgreSQL text
    cannot hold it."""
    if not isinstance(value, str) or "\x00" in value:
        return None
    return value[:limit]
