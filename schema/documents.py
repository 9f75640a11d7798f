"""The write path: load trees, merge edits (replication core), write, in one transaction.

This module plays the part of CouchDB's ``couch_db_updater``: for a batch of edits it

1. locks the database's counter row (commits are serialized in seq order),
2. loads the revision trees of every document in the batch with one query,
3. resolves attachment stubs against stored ancestors with one query,
4. plans the batch (``schema.batch.plan_batch``: the pure core applies every edit),
5. writes new revisions, attachments and document rows with one statement each.

No statement runs per document.  On PostgreSQL, ``schema.write_pg`` writes the same plan in
a single optimistic statement and falls back to this path under contention.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from replication import (
    Attachment,
    DocEdit,
    MissingStub,
    leaf_infos,
    tree_from_data,
)
from schema.batch import Batch, DocState, WriteResult, plan_batch
from schema.conflicts import Closing, ConflictTally, sync_records
from schema.databases import Database, advance_database, lock_database
from schema.engine import insert_ignore
from schema.keys import chunks, fetch_by_ids, fetch_by_revs
from schema.rawpg import Runner
from schema.rules import has_rules, update_index, validate_edits
from schema.tables import attachments, documents, revisions

# Built once: these run on every write.
_INSERT_DOCS = insert(documents).values(
    db_id=bindparam("b_db_id"),
    doc_id=bindparam("b_doc_id"),
    seq=bindparam("seq"),
    winning_rev=bindparam("winning_rev"),
    deleted=bindparam("deleted"),
    leaves=bindparam("leaves"),
    rev_tree=bindparam("rev_tree"),
    owner_id=bindparam("owner_id"),
    updated_by=bindparam("updated_by"),
)
_UPDATE_DOCS = (
    update(documents)
    .where(documents.c.db_id == bindparam("b_db_id"), documents.c.doc_id == bindparam("b_doc_id"))
    .values(
        seq=bindparam("seq"),
        winning_rev=bindparam("winning_rev"),
        deleted=bindparam("deleted"),
        leaves=bindparam("leaves"),
        rev_tree=bindparam("rev_tree"),
        updated_at=func.now(),
        updated_by=bindparam("updated_by"),
    )
)


# What a document's stored state is read from, in the order ``states_from_rows`` takes it.
STATE_COLUMNS = (
    documents.c.doc_id,
    documents.c.rev_tree,
    documents.c.deleted,
    documents.c.owner_id,
    documents.c.seq,
)


def _tree_select() -> Select[Any]:
    return select(*STATE_COLUMNS)


def _stub_select() -> Select[Any]:
    return select(revisions.c.doc_id, revisions.c.rev, revisions.c.attachments)


async def load_states(conn: Runner, db_id: int, doc_ids: Sequence[str]) -> dict[str, DocState]:
    """Return the stored state (tree, version, owner) of the documents that exist."""
    found: dict[str, DocState] = {}
    for part in chunks(doc_ids):
        rows = await fetch_by_ids(conn, _tree_select, documents, db_id, part)
        found.update(states_from_rows(rows))
    return found


def states_from_rows(rows: Iterable[Sequence[Any]]) -> dict[str, DocState]:
    """``(doc_id, rev_tree, deleted, owner_id, seq)`` rows as loaded states, by id."""
    return {
        doc_id: DocState(tree_from_data(orjson.loads(raw_tree)), seq, deleted, owner_id)
        for doc_id, raw_tree, deleted, owner_id, seq in rows
    }


async def prepare_batch(
    conn: Runner,
    db: Database,
    edits: Sequence[DocEdit],
    *,
    new_edits: bool,
    user_id: int | None,
    owner_scope: int | None,
    role: str | None = None,
    assume_new: bool = False,
) -> Batch:
    """Load what the edits touch (one query, plus one for attachment stubs) and plan them.

    With ``role`` set, the database's rules (``schema.rules``) check every edit first.
    ``assume_new`` plans the edits as if none of their documents existed, without reading:
    only for a writer that refuses the plan should one exist (``schema.write_pg``).
    """
    ids = list(dict.fromkeys(e.doc_id for e in edits))
    states = {} if assume_new else await load_states(conn, db.id, ids)
    resolved = await _resolve_stubs(conn, db.id, edits, states, new_edits, owner_scope)
    if role is not None and has_rules(db):
        resolved = await validate_edits(
            conn, db, states, resolved, new_edits=new_edits, role=role, owner_scope=owner_scope
        )
    return plan_batch(
        states,
        resolved,
        new_edits=new_edits,
        revs_limit=db.revs_limit,
        user_id=user_id,
        owner_scope=owner_scope,
    )


async def update_docs(
    conn: AsyncConnection,
    db_name: str,
    edits: Sequence[DocEdit],
    *,
    new_edits: bool,
    user_id: int | None,
    owner_scope: int | None = None,
    device: str | None = None,
    closing: Closing | None = None,
    role: str | None = None,
    tally: ConflictTally | None = None,
) -> tuple[Database, list[WriteResult]]:
    """Apply a batch of edits to one database inside the caller's write transaction.

    ConflictRecords of the documents it touches are kept in step in the same transaction,
    and the database's ``conflict_policy`` is applied to the conflicts it opens.
    ``closing`` says how records the write closes are marked (default: resolved by a
    replicated edit).  ``role`` (the writer's) turns on the database's rules.
    """
    db = await lock_database(conn, db_name)
    batch = await prepare_batch(
        conn,
        db,
        edits,
        new_edits=new_edits,
        user_id=user_id,
        owner_scope=owner_scope,
        role=role,
    )
    if batch.documents:
        await _write(conn, db, batch)
        if has_rules(db):
            await update_index(conn, db, batch, db.update_seq + 1)
    if batch.touched:
        opened = await sync_records(
            conn,
            db,
            batch.touched,
            user_id=user_id,
            device=device,
            closing=closing or Closing(user_id=user_id),
            tally=tally,
        )
        if opened and db.conflict_policy != "manual":
            from schema.resolve import apply_policy  # resolving writes through update_docs

            await apply_policy(conn, db, opened, tally)
    return db, batch.results


async def _write(conn: AsyncConnection, db: Database, batch: Batch) -> None:
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for offset, doc in enumerate(batch.documents, start=1):
        row = {
            "b_db_id": db.id,
            "b_doc_id": doc.doc_id,
            "seq": db.update_seq + offset,
            "winning_rev": doc.winning_rev,
            "deleted": doc.deleted,
            "leaves": doc.leaves,
            "rev_tree": doc.rev_tree,
            "updated_by": batch.author,
        }
        if doc.expected_seq is None:
            inserts.append({**row, "owner_id": doc.owner_id})
        else:
            updates.append(row)
    await advance_database(
        conn,
        db,
        seqs=len(batch.documents),
        doc_delta=batch.doc_delta,
        del_delta=batch.del_delta,
    )
    if inserts:
        await conn.execute(_INSERT_DOCS, inserts)
    if updates:
        await conn.execute(_UPDATE_DOCS, updates)
    if batch.attachments:
        await conn.execute(
            insert_ignore(conn, attachments),
            [
                {"db_id": db.id, "digest": digest, "length": len(data), "data": data}
                for digest, data in batch.attachments.items()
            ],
        )
    if batch.revisions:
        await conn.execute(
            insert_ignore(conn, revisions), [{"db_id": db.id, **r} for r in batch.revisions]
        )
    for part in chunks(batch.dropped):
        await conn.execute(
            delete(revisions).where(
                revisions.c.db_id == db.id,
                tuple_(revisions.c.doc_id, revisions.c.rev).in_(list(part)),
            )
        )


async def _resolve_stubs(
    conn: Runner,
    db_id: int,
    edits: Sequence[DocEdit],
    states: dict[str, DocState],
    new_edits: bool,
    owner_scope: int | None = None,
) -> list[DocEdit | WriteResult]:
    """Fill attachment stubs from the nearest stored ancestor (one query for the batch).

    Another owner's document (``owner_scope``) has no ancestors to offer: its stubs are
    missing exactly as for a document that does not exist, so they reveal nothing of it.
    """
    wanted: dict[int, list[str]] = {}
    for index, edit in enumerate(edits):
        if any(att.stub for att in edit.attachments):
            state = states.get(edit.doc_id)
            hidden = state is not None and owner_scope not in (None, state.owner_id)
            wanted[index] = [] if hidden else _ancestor_candidates(edit, states, new_edits)
    if not wanted:
        return list(edits)
    keys = list({(edits[i].doc_id, rev) for i, revs in wanted.items() for rev in revs})
    metas: dict[tuple[str, str], dict[str, Any]] = {}
    for part in chunks(keys):
        rows = await fetch_by_revs(conn, _stub_select, revisions, db_id, part)
        for doc_id, rev, raw in rows:
            metas[(doc_id, rev)] = orjson.loads(raw) if raw else {}
    resolved: list[DocEdit | WriteResult] = []
    for index, edit in enumerate(edits):
        if index not in wanted:
            resolved.append(edit)
            continue
        try:
            atts = tuple(
                _fill_stub(att, [metas.get((edit.doc_id, rev)) for rev in wanted[index]])
                if att.stub
                else att
                for att in edit.attachments
            )
        except MissingStub as exc:
            resolved.append(WriteResult(edit.doc_id, None, exc))
            continue
        resolved.append(replace(edit, attachments=atts))
    return resolved


def _ancestor_candidates(edit: DocEdit, states: dict[str, DocState], new_edits: bool) -> list[str]:
    if new_edits:
        if edit.rev:
            return [edit.rev]
        state = states.get(edit.doc_id)
        return [leaf.rev for leaf in leaf_infos(state.tree)[:1]] if state else []
    return list(edit.path[1:]) or ([edit.rev] if edit.rev else [])


def _fill_stub(att: Attachment, candidates: list[dict[str, Any] | None]) -> Attachment:
    for meta in candidates:
        if meta and att.name in meta:
            stored = meta[att.name]
            if att.digest is not None and att.digest != stored["digest"]:
                continue
            return Attachment(
                att.name,
                stored["content_type"],
                stored["digest"],
                stored["length"],
                stored["revpos"],
                stub=True,
            )
    raise MissingStub(f"Invalid attachment stub in {att.name!r}")
