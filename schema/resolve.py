"""Resolving a ConflictRecord: one new revision on the kept branch, tombstones on the others.

``resolve_record`` runs inside the caller's write transaction (the database row lock is
taken first, so a resolution and a push of the same document are serialized); the write
goes through ``update_docs``, which closes every record of the document with the
resolution's status and strategy.  ``apply_policy`` resolves the records a write has just
opened, according to the database's ``conflict_policy``.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from replication import Attachment, Conflict, MergeConflict, NotFound, merge_or_raise
from replication.conflicts import POLICY_STRATEGY, STRATEGIES, live_leaves, resolution_edits
from schema.conflicts import (
    OPEN,
    Closing,
    ConflictRecord,
    ConflictTally,
    get_conflict,
    mark_resolved,
)
from schema.databases import Database, lock_database
from schema.documents import load_states, update_docs
from schema.reads import RevisionRow, get_revisions


async def resolve_record(
    conn: AsyncConnection,
    record_id: int,
    strategy: str,
    *,
    body: dict[str, Any] | None = None,
    user_id: int | None,
    role: str | None = None,
    status: str = "resolved",
    tally: ConflictTally | None = None,
) -> tuple[ConflictRecord, str]:
    """Resolve one open record; return it as it was and the revision the document now has.

    ``role`` is the resolver's: the database's rules check the resolution like any other
    write of theirs (an inspector cannot approve an inspection, or undo an approval, by
    resolving a conflict); None for the policy and the operator's CLI.

    ``Conflict`` if it is no longer open; ``MergeConflict`` (with the field paths) if a
    ``merge`` without ``body`` finds both sides changed a field differently.
    """
    if strategy not in STRATEGIES:
        raise ValueError(strategy)
    first = await get_conflict(conn, record_id)
    db = await lock_database(conn, first.db)
    record = await get_conflict(conn, record_id)  # re-read under the lock
    if record.status != OPEN:
        raise Conflict("This conflict is already resolved.")
    states = await load_states(conn, db.id, [record.doc_id])
    if record.doc_id not in states:
        raise NotFound("The document of this conflict no longer exists.")
    tree = states[record.doc_id].tree
    live = live_leaves(tree)
    if not live:
        raise Conflict("The document was deleted; nothing is left to resolve.")
    winner = live[0]
    mine_rev, theirs_rev = record.mine_rev, record.theirs_rev
    if mine_rev is None:  # a refused REST update: "theirs" is whatever the server has now
        theirs_rev = winner
    elif mine_rev not in live or theirs_rev not in live:
        raise Conflict("This conflict changed while it was being resolved; read it again.")
    stored = await get_revisions(
        conn, db.id, [(record.doc_id, r) for r in (mine_rev, theirs_rev) if r is not None]
    )
    mine_body = _body(stored.get((record.doc_id, mine_rev or "")), record.mine_body)
    theirs_body = _body(stored.get((record.doc_id, theirs_rev)), record.theirs_body)
    closing = Closing(status, strategy, user_id)
    if strategy == "keep_theirs" and mine_rev is None:  # the server's version stays as it is
        await mark_resolved(conn, record.id, closing, winner, tally)
        return record, winner
    if strategy == "keep_mine":
        keep = mine_rev or winner
        new_body = mine_body
    elif strategy == "keep_theirs":
        keep, new_body = theirs_rev, theirs_body
    else:
        keep = winner
        ancestor = orjson.loads(record.ancestor_body) if record.ancestor_body else None
        new_body = body if body is not None else merge_or_raise(ancestor, mine_body, theirs_body)
    attachments = _stubs(stored.get((record.doc_id, keep)) or (await _row(conn, db, record, keep)))
    edits = resolution_edits(tree, record.doc_id, keep, new_body, attachments)
    _, results = await update_docs(
        conn, db.name, edits, new_edits=True, user_id=user_id, closing=closing, tally=tally,
        role=role,
    )  # fmt: skip
    for result in results:
        if result.error is not None:
            raise result.error
    new_rev = results[0].rev
    assert new_rev is not None
    await mark_resolved(conn, record.id, closing, new_rev, tally)
    return record, new_rev


async def _row(
    conn: AsyncConnection, db: Database, record: ConflictRecord, rev: str
) -> RevisionRow | None:
    return (await get_revisions(conn, db.id, [(record.doc_id, rev)])).get((record.doc_id, rev))


def _body(row: RevisionRow | None, fallback: bytes | None) -> dict[str, Any]:
    raw = row.body if row is not None else fallback
    return orjson.loads(raw) if raw else {}


def _stubs(row: RevisionRow | None) -> list[Attachment]:
    """The kept revision's attachments, as stubs the write resolves against it."""
    if row is None or not row.attachments:
        return []
    return [
        Attachment(name, meta["content_type"], meta["digest"], meta["length"], meta["revpos"],
                   stub=True)
        for name, meta in row.attachments.items()
    ]  # fmt: skip


async def apply_policy(
    conn: AsyncConnection, db: Database, opened: list[int], tally: ConflictTally | None = None
) -> None:
    """Resolve just-opened records by the database's policy, recorded as ``auto_resolved``;
    a ``merge`` that is not clean stays open for a person to resolve."""
    strategy = POLICY_STRATEGY.get(db.conflict_policy)
    if strategy is None:
        return
    for record_id in opened:
        record = await get_conflict(conn, record_id)
        if record.status != OPEN:  # closed by resolving an earlier one of the same document
            continue
        try:
            await resolve_record(
                conn, record_id, strategy, user_id=None, status="auto_resolved", tally=tally
            )
        except MergeConflict:
            continue
