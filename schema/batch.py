"""Planning a write batch: from loaded trees and edits to the rows to write (no I/O).

    loaded trees ─┐
    edits ────────┼─> plan_batch() ─> Batch(results, documents, revisions, attachments, ...)
    owner scope ──┘

Both writers (``schema.documents`` under a lock, ``schema.write_pg`` in one optimistic
statement) write the same ``Batch``; only how they keep it consistent differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import orjson

from replication import (
    Conflict,
    DocEdit,
    GatewayError,
    RevTree,
    apply_edit,
    leaf_infos,
    rev_pos,
    tree_to_data,
)
from replication.conflicts import needs_records
from replication.winner import Leaf


class WriteResult(NamedTuple):
    """One edit's outcome: the revision it produced, or the error that refused it."""

    doc_id: str
    rev: str | None
    error: GatewayError | None = None


@dataclass(slots=True)
class DocState:
    """A document as loaded (``seq`` is its version: None when it did not exist)."""

    tree: RevTree
    seq: int | None
    was_deleted: bool
    owner_id: int | None


class DocWrite(NamedTuple):
    """The new summary row of one changed document."""

    doc_id: str
    winning_rev: str
    deleted: bool
    leaves: bytes
    rev_tree: bytes
    owner_id: int | None
    expected_seq: int | None  # the version it was loaded at (None: a new document)


@dataclass(frozen=True, slots=True)
class Touched:
    """A written document that has (or had) more than one live leaf."""

    doc_id: str
    tree: RevTree  # after the write
    incoming: frozenset[str]
    owner_id: int | None


@dataclass(slots=True)
class Batch:
    results: list[WriteResult] = field(default_factory=list)
    documents: list[DocWrite] = field(default_factory=list)  # in seq order
    revisions: list[dict[str, Any]] = field(default_factory=list)
    attachments: dict[str, bytes] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    touched: list[Touched] = field(default_factory=list)  # documents with conflicts to record
    author: int | None = None  # the writing user (documents.updated_by)
    doc_delta: int = 0
    del_delta: int = 0


def plan_batch(
    states: dict[str, DocState],
    edits: Sequence[DocEdit | WriteResult],
    *,
    new_edits: bool,
    revs_limit: int,
    user_id: int | None,
    owner_scope: int | None,
) -> Batch:
    """Apply every edit in order to the loaded trees and return what must be written.

    With ``owner_scope`` set, documents owned by someone else are treated as taken ids
    (a per-document ``conflict``), never revealed or changed.
    """
    batch = Batch(author=user_id)
    current = {doc_id: state.tree for doc_id, state in states.items()}
    order: dict[str, None] = {}
    incoming: dict[str, set[str]] = {}
    for edit in edits:
        if isinstance(edit, WriteResult):
            batch.results.append(edit)
            continue
        state = states.get(edit.doc_id)
        if state is not None and owner_scope is not None and state.owner_id != owner_scope:
            batch.results.append(WriteResult(edit.doc_id, None, Conflict()))
            continue
        tree = current.get(edit.doc_id)
        outcome = apply_edit(tree, edit, new_edits=new_edits, revs_limit=revs_limit)
        batch.results.append(WriteResult(edit.doc_id, outcome.rev, outcome.error))
        if outcome.error is not None or outcome.tree is tree:
            continue
        current[edit.doc_id] = outcome.tree
        order.pop(edit.doc_id, None)
        order[edit.doc_id] = None
        if outcome.dropped:
            batch.dropped.extend((edit.doc_id, rev) for rev in outcome.dropped)
        if outcome.rev is not None:
            incoming.setdefault(edit.doc_id, set()).add(outcome.rev)
        if outcome.stored and outcome.rev is not None:
            batch.revisions.append(_revision_row(edit, outcome.rev, batch.attachments, new_edits))
    for doc_id in order:
        state = states.get(doc_id)
        _add_document(batch, doc_id, current[doc_id], state, user_id)
        if needs_records(state.tree if state else None, current[doc_id]):
            batch.touched.append(
                Touched(
                    doc_id,
                    current[doc_id],
                    frozenset(incoming.get(doc_id, ())),
                    batch.documents[-1].owner_id,
                )
            )
    return batch


def _add_document(
    batch: Batch, doc_id: str, tree: RevTree, state: DocState | None, user_id: int | None
) -> None:
    if len(tree) == 1:  # a new document's first revision: the only leaf is the winner
        [(rev, node)] = tree.items()
        winner = Leaf(rev, node.deleted)
        leaves = orjson.dumps([[rev, node.deleted]])
    else:
        infos = leaf_infos(tree)
        winner = infos[0]
        leaves = orjson.dumps([[leaf.rev, leaf.deleted] for leaf in infos])
    batch.documents.append(
        DocWrite(
            doc_id,
            winner.rev,
            winner.deleted,
            leaves,
            orjson.dumps(tree_to_data(tree)),
            state.owner_id if state else user_id,
            state.seq if state else None,
        )
    )
    if state is not None:
        batch.doc_delta -= 0 if state.was_deleted else 1
        batch.del_delta -= 1 if state.was_deleted else 0
    batch.doc_delta += 0 if winner.deleted else 1
    batch.del_delta += 1 if winner.deleted else 0


def _revision_row(
    edit: DocEdit, rev: str, new_attachments: dict[str, bytes], new_edits: bool
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
        "doc_id": edit.doc_id,
        "rev": rev,
        "deleted": edit.deleted,
        "body": orjson.dumps(edit.body),
        "attachments": orjson.dumps(meta) if meta else None,
    }
