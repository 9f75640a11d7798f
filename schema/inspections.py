"""Inspections over the ``inspections`` database: REST operations as document edits.

An inspection *is* a document: its id is the document id, its ``version`` is the
generation of the winning revision (``3-abc…`` is version 3), and a REST write is a new
revision like any other, visible to every PouchDB pull (and the reverse).

``apply_operations`` runs a list of create / update / delete operations in one write
transaction with a fixed number of queries (not one per operation): it locks the
database, loads every document and its winning body, turns each operation into an edit
(or a per-operation error), writes all edits at once through ``update_docs`` (which
applies the workflow rules and keeps the index), and opens a ConflictRecord for each
update that arrived with a stale ``version``.  One operation's failure never undoes
another's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from replication import (
    BadRequest,
    Conflict,
    DocEdit,
    GatewayError,
    NotFound,
    rev_path,
    winning_rev,
)
from replication.edits import new_child_rev
from replication.workflow import check_inspection_edit
from schema.conflicts import ConflictTally
from schema.databases import Database, lock_database
from schema.documents import load_states, update_docs
from schema.reads import get_revisions
from schema.restdocs import (
    now_iso,
    represent,
    represented,
    version_of,
    winner_columns,
    winner_revision,
)
from schema.tables import conflicts, documents, inspection_index, revisions

FIELDS = ("template_id", "title", "site", "status", "responses", "submitted_at")
SERVER_FIELDS = ("inspector", "created_at", "updated_at")
MAX_OPERATIONS = 100


@dataclass(frozen=True, slots=True)
class Operation:
    op: str  # "create" | "update" | "delete"
    id: str | None = None
    version: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class OpResult:
    """One operation's answer; the HTTP layer turns ``exc`` into its status code."""

    index: int
    outcome: str  # created | updated | deleted | conflict | error
    id: str | None = None
    version: int | None = None
    exc: GatewayError | None = None
    conflict_id: int | None = None
    inspection: dict[str, Any] | None = None  # the new state (or the server's, on conflict)

    def as_json(self, status: int, *, with_body: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "status": status,
            "outcome": self.outcome,
            "id": self.id,
            "version": self.version,
        }
        if self.exc is not None:
            out["error"] = self.exc.error
            out["reason"] = self.exc.reason
        if self.conflict_id is not None:
            out["conflict_id"] = self.conflict_id
            out["current"] = self.inspection
        elif with_body and self.inspection is not None:
            out["inspection"] = self.inspection
        return out


def canonical_id(raw: object) -> str:
    """An inspection id: a UUID, in its canonical lower-case form."""
    if not isinstance(raw, str):
        raise BadRequest("id must be a UUID string")
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise BadRequest("id must be a UUID") from exc


def check_fields(data: object) -> dict[str, Any]:
    """Validate the client-settable fields of an inspection (400 on anything else)."""
    if not isinstance(data, dict):
        raise BadRequest("data must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(f"Unknown or read-only fields: {', '.join(unknown)}")
    for key in ("template_id", "title", "status"):
        if key in data and not (isinstance(data[key], str) and len(data[key]) <= 500):
            raise BadRequest(f"{key} must be a string of at most 500 characters")
    if "responses" in data and not isinstance(data["responses"], dict):
        raise BadRequest("responses must be a JSON object")
    submitted = data.get("submitted_at")
    if submitted is not None and not isinstance(submitted, str):
        raise BadRequest("submitted_at must be an ISO 8601 string or null")
    return data


@dataclass(slots=True)
class _Current:
    rev: str | None
    body: dict[str, Any] | None  # None: deleted
    visible: bool  # the caller may see it (their own, or any for staff)
    tree: Any = None  # the stored revision tree (None once edited in this batch)


async def apply_operations(
    conn: AsyncConnection,
    db_name: str,
    ops: Sequence[Operation],
    *,
    user_id: int,
    user_name: str,
    role: str,
    owner: int | None,
    device: str | None = None,
    tally: ConflictTally | None = None,
) -> list[OpResult]:
    """Apply ``ops`` in order inside the caller's write transaction; one result each.

    ConflictRecords it opens or closes (stale versions, policies) are counted in ``tally``.
    """
    db = await lock_database(conn, db_name)
    ids = [doc_id for doc_id in map(_loadable_id, ops) if doc_id is not None]
    states = await load_states(conn, db.id, list(dict.fromkeys(ids)))
    winners = {doc_id: winning_rev(s.tree).rev for doc_id, s in states.items() if not s.was_deleted}
    stored = await get_revisions(conn, db.id, list(winners.items()))
    current: dict[str, _Current] = {}
    for doc_id, state in states.items():
        rev = winning_rev(state.tree).rev
        row = stored.get((doc_id, rev))
        body = orjson.loads(row.body) if row is not None and not state.was_deleted else None
        visible = owner is None or state.owner_id == owner
        current[doc_id] = _Current(rev, body, visible, state.tree)

    results: list[OpResult | None] = [None] * len(ops)
    edits: list[DocEdit] = []
    edit_of: list[int] = []  # operation index of each edit
    stale: list[tuple[int, Operation, _Current]] = []
    stamp = now_iso()
    for index, op in enumerate(ops):
        try:
            edit = _edit_for(op, current, owner, user_name, stamp)
            # the same check update_docs makes, here too: a refused operation must not
            # move the version later operations of the batch are checked against
            old = current.get(edit.doc_id)
            check_inspection_edit(
                old.body if old is not None else None, None if edit.deleted else edit.body, role
            )
        except _Stale as found:
            stale.append((index, op, found.current))
            continue
        except GatewayError as exc:
            results[index] = _error(index, op.id, exc)
            continue
        parent = edit.rev
        new_rev = new_child_rev(parent, edit)
        current[edit.doc_id] = _Current(new_rev, None if edit.deleted else dict(edit.body), True)
        edits.append(edit)
        edit_of.append(index)

    if edits:
        _, written = await update_docs(
            conn, db.name, edits, new_edits=True, user_id=user_id, owner_scope=owner,
            device=device, role=role, tally=tally,
        )  # fmt: skip
        for edit, index, result in zip(edits, edit_of, written, strict=True):
            op = ops[index]
            if result.error is not None:
                results[index] = _error(index, edit.doc_id, result.error)
                continue
            assert result.rev is not None
            outcome = {"create": "created", "update": "updated", "delete": "deleted"}[op.op]
            results[index] = OpResult(
                index,
                outcome,
                edit.doc_id,
                version_of(result.rev),
                inspection=None if edit.deleted else represent(edit.doc_id, result.rev,
                                                                dict(edit.body)),
            )  # fmt: skip
    # A stale update may name an inspection an earlier operation of this batch created
    # (absent from ``states``): its owner is read back, and if that creation failed, so
    # that nothing is stored, the update is answered 404 like any unknown inspection.
    made_here = [i for i in {canonical_id(op.id) for _, op, _ in stale} if i not in states]
    made = await load_states(conn, db.id, made_here) if made_here else {}
    for index, op, found in stale:
        doc_id = canonical_id(op.id)
        state = states.get(doc_id) or made.get(doc_id)
        if state is None:
            results[index] = _error(index, doc_id, NotFound("No such inspection."))
            continue
        result = await _record_stale(conn, db, index, op, found, user_id, device, state.owner_id)
        if tally is not None and result.conflict_id is not None:
            tally.opened += 1
        results[index] = result
    return [r for r in results if r is not None]


class _Stale(Exception):
    def __init__(self, current: _Current) -> None:
        self.current = current


def _loadable_id(op: Operation) -> str | None:
    """The stored id an operation names (canonical, as ``_edit_for`` looks it up), or None
    when it names none (a create without id) or a malformed one (refused in its result)."""
    try:
        return canonical_id(op.id) if op.id is not None else None
    except BadRequest:
        return None


def _edit_for(
    op: Operation,
    current: dict[str, _Current],
    owner: int | None,
    user_name: str,
    stamp: str,
) -> DocEdit:
    if op.op == "create":
        doc_id = canonical_id(op.id) if op.id is not None else str(uuid.uuid4())
        found = current.get(doc_id)
        if found is not None and (found.body is not None or not found.visible):
            raise Conflict("An inspection with this id already exists.")
        data = check_fields(op.data)
        body = {**data, "status": data.get("status", "draft"), "inspector": user_name,
                "created_at": stamp, "updated_at": stamp}  # fmt: skip
        _stamp_submitted(body, None, stamp)
        return DocEdit(doc_id, found.rev if found is not None else None, body=body)
    if op.id is None:
        raise BadRequest(f"{op.op} needs the inspection id")
    doc_id = canonical_id(op.id)
    found = current.get(doc_id)
    if found is None or found.body is None or not found.visible:
        raise NotFound("No such inspection.")
    if not isinstance(op.version, int) or isinstance(op.version, bool) or op.version < 1:
        raise BadRequest("version (a positive integer) is required")
    assert found.rev is not None
    if op.version != version_of(found.rev):
        if op.op == "update":
            raise _Stale(found)
        raise Conflict("The inspection changed since that version.")
    if op.op == "delete":
        return DocEdit(doc_id, found.rev, deleted=True)
    data = check_fields(op.data)
    body = {**found.body, **data, "updated_at": stamp}
    _stamp_submitted(body, found.body, stamp)
    return DocEdit(doc_id, found.rev, body=body)


def _stamp_submitted(body: dict[str, Any], old: dict[str, Any] | None, stamp: str) -> None:
    """Set ``submitted_at`` when an inspection is first submitted without one."""
    was = (old or {}).get("status")
    if body.get("status") == "submitted" and was != "submitted" and not body.get("submitted_at"):
        body["submitted_at"] = stamp


def _error(index: int, doc_id: str | None, exc: GatewayError) -> OpResult:
    return OpResult(index, "error", doc_id, exc=exc)


async def _record_stale(
    conn: AsyncConnection,
    db: Database,
    index: int,
    op: Operation,
    found: _Current,
    user_id: int,
    device: str | None,
    owner_id: int | None,
) -> OpResult:
    """Open a ConflictRecord for an update based on an old version; answer 409 with it."""
    assert found.rev is not None and found.body is not None and op.id is not None
    doc_id = canonical_id(op.id)
    try:
        data = check_fields(op.data)
    except GatewayError as exc:
        return _error(index, doc_id, exc)
    path = rev_path(found.tree, found.rev) if found.tree is not None else []
    base = next((r for r in path if version_of(r) == op.version), None)
    base_body: dict[str, Any] | None = None
    if base is not None:
        row = (await get_revisions(conn, db.id, [(doc_id, base)])).get((doc_id, base))
        base_body = orjson.loads(row.body) if row is not None else None
    mine = {**(base_body if base_body is not None else found.body), **data}
    record_id = (
        await conn.execute(
            insert(conflicts)
            .values(
                db_id=db.id, doc_id=doc_id, owner_id=owner_id, mine_rev=None,
                mine_body=orjson.dumps(mine), theirs_rev=found.rev,
                theirs_body=orjson.dumps(found.body), ancestor_rev=base,
                ancestor_body=orjson.dumps(base_body) if base_body is not None else None,
                pushed_by=user_id, device=device, status="open",
            )
            .returning(conflicts.c.id)
        )
    ).scalar_one()  # fmt: skip
    reason = f"The inspection is at version {version_of(found.rev)}, not {op.version}."
    return OpResult(
        index, "conflict", doc_id, version_of(found.rev), exc=Conflict(reason),
        conflict_id=record_id, inspection=represent(doc_id, found.rev, found.body),
    )  # fmt: skip


# --- reading -----------------------------------------------------------------------------


async def get_inspection(
    conn: AsyncConnection, db: Database, doc_id: str, owner: int | None
) -> dict[str, Any]:
    """One live inspection the caller may see, or ``NotFound``."""
    rows = await list_inspections(conn, db, owner=owner, doc_id=doc_id, limit=1)
    if not rows:
        raise NotFound("No such inspection.")
    return rows[0]


async def list_inspections(
    conn: AsyncConnection,
    db: Database,
    *,
    owner: int | None,
    status: str | None = None,
    template_id: str | None = None,
    inspector: str | None = None,
    doc_id: str | None = None,
    after: str = "",
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Live inspections in id order after ``after`` (keyset pagination), filtered in SQL."""
    idx = inspection_index.c
    cond = and_(idx.db_id == db.id, idx.deleted.is_(False), idx.doc_id > after)
    if owner is not None:
        cond = and_(cond, idx.owner_id == owner)
    if status is not None:
        cond = and_(cond, idx.status == status)
    if template_id is not None:
        cond = and_(cond, idx.template_id == template_id)
    if inspector is not None:
        cond = and_(cond, idx.inspector == inspector)
    if doc_id is not None:
        cond = and_(cond, idx.doc_id == doc_id)
    stmt = (
        winner_columns()
        .select_from(
            inspection_index.join(
                documents,
                (documents.c.db_id == idx.db_id) & (documents.c.doc_id == idx.doc_id),
            ).join(revisions, winner_revision())
        )
        .where(cond)
        .order_by(idx.doc_id)
        .limit(limit)
    )
    return await represented(conn, stmt)
