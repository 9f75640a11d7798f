"""The write path: load trees, merge edits (replication core), write, in one transaction.

This module plays the part of CouchDB's ``couch_db_updater``: for a batch of edits it

1. locks the database's counter row (commits are serialized in seq order),
2. loads the revision trees of every document in the batch with one query,
3. resolves attachment stubs against stored ancestors with one query,
4. applies each edit with ``replication.apply_edit`` (pure),
5. writes new revisions, attachments and document rows with one statement each.

No statement runs per document.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from replication import (
    Attachment,
    Conflict,
    DocEdit,
    GatewayError,
    MissingStub,
    RevTree,
    apply_edit,
    leaf_infos,
    rev_pos,
    tree_from_data,
    tree_to_data,
)
from schema.databases import Database, advance_database, lock_database
from schema.engine import insert_ignore
from schema.keys import fetch_by_ids, fetch_by_revs
from schema.tables import attachments, documents, revisions

CHUNK = 500


@dataclass(frozen=True, slots=True)
class WriteResult:
    """One edit's outcome: the revision it produced, or the error that refused it."""

    doc_id: str
    rev: str | None
    error: GatewayError | None = None


@dataclass(slots=True)
class _DocState:
    tree: RevTree
    existed: bool
    was_deleted: bool
    owner_id: int | None
    changed: bool = False


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
    )
)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """Split ``items`` into slices of at most ``size`` (bound-parameter limits)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _tree_select() -> Select[Any]:
    return select(
        documents.c.doc_id, documents.c.rev_tree, documents.c.deleted, documents.c.owner_id
    )


def _stub_select() -> Select[Any]:
    return select(revisions.c.doc_id, revisions.c.rev, revisions.c.attachments)


async def load_trees(
    conn: AsyncConnection, db_id: int, doc_ids: Sequence[str]
) -> dict[str, tuple[RevTree, bool, int | None]]:
    """Return ``{doc_id: (tree, deleted, owner_id)}`` for the documents that exist."""
    found: dict[str, tuple[RevTree, bool, int | None]] = {}
    for part in chunks(doc_ids):
        rows = await fetch_by_ids(conn, _tree_select, documents, db_id, part)
        for doc_id, raw_tree, deleted, owner_id in rows:
            found[doc_id] = (tree_from_data(orjson.loads(raw_tree)), deleted, owner_id)
    return found


async def update_docs(
    conn: AsyncConnection,
    db_name: str,
    edits: Sequence[DocEdit],
    *,
    new_edits: bool,
    user_id: int | None,
    owner_scope: int | None = None,
) -> tuple[Database, list[WriteResult]]:
    """Apply a batch of edits to one database inside the caller's write transaction.

    With ``owner_scope`` set, documents owned by someone else are treated as taken ids
    (a per-document ``conflict``), never revealed or changed.
    """
    db = await lock_database(conn, db_name)
    doc_ids = list(dict.fromkeys(edit.doc_id for edit in edits))
    loaded = await load_trees(conn, db.id, doc_ids)
    states = {
        doc_id: _DocState(tree, True, deleted, owner)
        for doc_id, (tree, deleted, owner) in loaded.items()
    }
    edits = await _resolve_stubs(conn, db.id, edits, states, new_edits)

    results: list[WriteResult] = []
    new_revisions: list[dict[str, Any]] = []
    new_attachments: dict[str, bytes] = {}
    dropped: list[tuple[str, str]] = []
    order: dict[str, None] = {}
    for edit in edits:
        if isinstance(edit, WriteResult):
            results.append(edit)
            continue
        state = states.get(edit.doc_id)
        if state is not None and owner_scope is not None and state.owner_id != owner_scope:
            results.append(WriteResult(edit.doc_id, None, Conflict()))
            continue
        outcome = apply_edit(
            state.tree if state else None, edit, new_edits=new_edits, revs_limit=db.revs_limit
        )
        results.append(WriteResult(edit.doc_id, outcome.rev, outcome.error))
        if outcome.error is not None or outcome.tree is (state.tree if state else None):
            continue
        if state is None:
            state = states[edit.doc_id] = _DocState(outcome.tree, False, False, user_id)
        state.tree = outcome.tree
        state.changed = True
        order.pop(edit.doc_id, None)
        order[edit.doc_id] = None
        dropped.extend((edit.doc_id, rev) for rev in outcome.dropped)
        if outcome.stored and outcome.rev is not None:
            new_revisions.append(
                _revision_row(db.id, edit, outcome.rev, new_attachments, new_edits)
            )

    if order:
        await _write(conn, db, states, list(order), new_revisions, new_attachments, dropped)
    return db, results


def _revision_row(
    db_id: int, edit: DocEdit, rev: str, new_attachments: dict[str, bytes], new_edits: bool
) -> dict[str, Any]:
    meta: dict[str, Any] | None = None
    if edit.attachments:
        meta = {}
        for att in edit.attachments:
            if att.data is not None and att.digest is not None:
                new_attachments.setdefault(att.digest, att.data)
            # Like CouchDB, a replicated revision (new_edits=false) keeps the revpos it
            # arrives with even when the data is inline (PouchDB always sends data).
            keep = (att.stub or not new_edits) and att.revpos and 0 < att.revpos <= rev_pos(rev)
            revpos = att.revpos if keep else rev_pos(rev)
            meta[att.name] = replace(att, revpos=revpos).meta()
    return {
        "db_id": db_id,
        "doc_id": edit.doc_id,
        "rev": rev,
        "deleted": edit.deleted,
        "body": orjson.dumps(edit.body),
        "attachments": orjson.dumps(meta) if meta else None,
    }


async def _write(
    conn: AsyncConnection,
    db: Database,
    states: dict[str, _DocState],
    changed: list[str],
    new_revisions: list[dict[str, Any]],
    new_attachments: dict[str, bytes],
    dropped: list[tuple[str, str]],
) -> None:
    seq = db.update_seq
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    doc_delta = del_delta = 0
    for doc_id in changed:
        state = states[doc_id]
        seq += 1
        infos = leaf_infos(state.tree)
        winner = infos[0]
        row = {
            "b_db_id": db.id,
            "b_doc_id": doc_id,
            "seq": seq,
            "winning_rev": winner.rev,
            "deleted": winner.deleted,
            "leaves": orjson.dumps([[leaf.rev, leaf.deleted] for leaf in infos]),
            "rev_tree": orjson.dumps(tree_to_data(state.tree)),
        }
        if state.existed:
            updates.append(row)
            doc_delta -= 0 if state.was_deleted else 1
            del_delta -= 1 if state.was_deleted else 0
        else:
            row["owner_id"] = state.owner_id
            inserts.append(row)
        doc_delta += 0 if winner.deleted else 1
        del_delta += 1 if winner.deleted else 0

    await advance_database(
        conn, db, seqs=seq - db.update_seq, doc_delta=doc_delta, del_delta=del_delta
    )
    if inserts:
        await conn.execute(_INSERT_DOCS, inserts)
    if updates:
        await conn.execute(_UPDATE_DOCS, updates)
    if new_attachments:
        await conn.execute(
            insert_ignore(conn, attachments),
            [
                {"db_id": db.id, "digest": digest, "length": len(data), "data": data}
                for digest, data in new_attachments.items()
            ],
        )
    if new_revisions:
        await conn.execute(insert_ignore(conn, revisions), new_revisions)
    for part in chunks(dropped):
        await conn.execute(
            delete(revisions).where(
                revisions.c.db_id == db.id,
                tuple_(revisions.c.doc_id, revisions.c.rev).in_(list(part)),
            )
        )


async def _resolve_stubs(
    conn: AsyncConnection,
    db_id: int,
    edits: Sequence[DocEdit],
    states: dict[str, _DocState],
    new_edits: bool,
) -> list[DocEdit | WriteResult]:
    """Fill attachment stubs from the nearest stored ancestor (one query for the batch)."""
    wanted: dict[int, list[str]] = {}
    for index, edit in enumerate(edits):
        if any(att.stub for att in edit.attachments):
            wanted[index] = _ancestor_candidates(edit, states, new_edits)
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


def _ancestor_candidates(edit: DocEdit, states: dict[str, _DocState], new_edits: bool) -> list[str]:
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
