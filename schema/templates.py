"""Inspection templates over the ``templates`` database: REST operations as document edits.

A template *is* a document of the ``templates`` database (access mode ``readonly``: every
user reads, only managers and admins write), so PouchDB clients replicate the very same
templates the REST API serves.  As for inspections, its ``version`` is the generation of
the winning revision and a REST write is a new revision like any other.

Client-settable fields: ``name`` (required on create, a non-empty string), ``description``
(a string), ``fields`` (a list of JSON objects) and ``active`` (a boolean); the server sets
``created_at``, ``updated_at`` and ``updated_by``.  Documents written through CouchDB are
served as they are stored (their own members, without the underscore ones).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import and_, or_
from sqlalchemy.ext.asyncio import AsyncConnection

from replication import BadRequest, Conflict, DocEdit, NotFound, winning_rev
from replication.docs import validate_doc_id
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
from schema.tables import documents, revisions

FIELDS = ("name", "description", "fields", "active")
SERVER_FIELDS = ("created_at", "updated_at", "updated_by")
MAX_NAME = 200
MAX_DESCRIPTION = 10_000
MAX_TEMPLATE_FIELDS = 1_000
DESIGN_PREFIX = "_design/"
DESIGN_END = "_design0"  # the first id after every "_design/..." id ("0" follows "/")


class StaleVersion(Conflict):
    """A write based on an old version; ``current`` is the server's template."""

    def __init__(self, reason: str, current: dict[str, Any]) -> None:
        super().__init__(reason)
        self.current = current


def template_id(raw: object) -> str:
    """A template id from a URL: any document id but a design document's."""
    if not isinstance(raw, str):
        raise BadRequest("id must be a string")
    return validate_doc_id(raw, allow_design=False)


def new_template_id(raw: object) -> str:
    """The id of a new template: the client's UUID (canonical form), or a fresh one."""
    if raw is None:
        return str(uuid.uuid4())
    if not isinstance(raw, str):
        raise BadRequest("id must be a UUID string")
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise BadRequest("id must be a UUID") from exc


def check_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Validate the client-settable fields of a template (400 on anything else)."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(f"Unknown or read-only fields: {', '.join(unknown)}")
    if creating and "name" not in data:
        raise BadRequest("name is required")
    name = data.get("name")
    if "name" in data and not (isinstance(name, str) and name.strip() and len(name) <= MAX_NAME):
        raise BadRequest(f"name must be a non-empty string of at most {MAX_NAME} characters")
    description = data.get("description")
    if "description" in data and not (
        isinstance(description, str) and len(description) <= MAX_DESCRIPTION
    ):
        raise BadRequest(f"description must be a string of at most {MAX_DESCRIPTION} characters")
    if "fields" in data:
        fields = data["fields"]
        if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
            raise BadRequest("fields must be a list of JSON objects")
        if len(fields) > MAX_TEMPLATE_FIELDS:
            raise BadRequest(f"A template has at most {MAX_TEMPLATE_FIELDS} fields")
    if "active" in data and not isinstance(data["active"], bool):
        raise BadRequest("active must be true or false")
    return data


# --- writing -----------------------------------------------------------------------------


async def _current(
    conn: AsyncConnection, db: Database, doc_id: str
) -> tuple[str | None, dict[str, Any] | None]:
    """The winning revision of ``doc_id`` and its body (None when deleted or missing)."""
    state = (await load_states(conn, db.id, [doc_id])).get(doc_id)
    if state is None:
        return None, None
    rev = winning_rev(state.tree).rev
    if state.was_deleted:
        return rev, None
    row = (await get_revisions(conn, db.id, [(doc_id, rev)])).get((doc_id, rev))
    return rev, orjson.loads(row.body) if row is not None else {}


async def _write(
    conn: AsyncConnection, db_name: str, edit: DocEdit, *, user_id: int, role: str
) -> str:
    _, [result] = await update_docs(
        conn, db_name, [edit], new_edits=True, user_id=user_id, role=role
    )
    if result.error is not None:
        raise result.error
    assert result.rev is not None
    return result.rev


async def create_template(
    conn: AsyncConnection,
    db_name: str,
    doc_id: str,
    data: dict[str, Any],
    *,
    user_id: int,
    user_name: str,
    role: str,
) -> dict[str, Any]:
    """Create template ``doc_id`` (re-creating a deleted one) inside the caller's write
    transaction; ``Conflict`` if a live one has that id."""
    db = await lock_database(conn, db_name)
    check_fields(data, creating=True)
    rev, current = await _current(conn, db, doc_id)
    if current is not None:
        raise Conflict("A template with this id already exists.")
    stamp = now_iso()
    body = {"description": "", "fields": [], "active": True, **data, "created_at": stamp,
            "updated_at": stamp, "updated_by": user_name}  # fmt: skip
    new_rev = await _write(
        conn, db.name, DocEdit(doc_id, rev, body=body), user_id=user_id, role=role
    )
    return represent(doc_id, new_rev, body)


async def change_template(
    conn: AsyncConnection,
    db_name: str,
    doc_id: str,
    version: int,
    data: dict[str, Any] | None,
    *,
    user_id: int,
    user_name: str,
    role: str,
) -> dict[str, Any]:
    """Update (``data``) or delete (``data`` None) the template at ``version``.

    Returns the new template (``{"id", "version", "rev", "deleted": true}`` once deleted);
    ``StaleVersion`` (409, with the server's
    template) when ``version`` is not the current one, ``NotFound`` when there is none.
    """
    db = await lock_database(conn, db_name)
    if data is not None:
        check_fields(data, creating=False)
    rev, current = await _current(conn, db, doc_id)
    if rev is None or current is None:
        raise NotFound("No such template.")
    if version != version_of(rev):
        reason = f"The template is at version {version_of(rev)}, not {version}."
        raise StaleVersion(reason, represent(doc_id, rev, current))
    if data is None:
        new_rev = await _write(conn, db.name, DocEdit(doc_id, rev, deleted=True),
                               user_id=user_id, role=role)  # fmt: skip
        return {"id": doc_id, "version": version_of(new_rev), "rev": new_rev, "deleted": True}
    body = {**current, **data, "updated_at": now_iso(), "updated_by": user_name}
    new_rev = await _write(conn, db.name, DocEdit(doc_id, rev, body=body), user_id=user_id,
                           role=role)  # fmt: skip
    return represent(doc_id, new_rev, body)


# --- reading -----------------------------------------------------------------------------


async def get_template(
    conn: AsyncConnection, db: Database, doc_id: str, owner: int | None = None
) -> dict[str, Any]:
    """One live template the caller may see, or ``NotFound``."""
    rows = await list_templates(conn, db, owner=owner, doc_id=doc_id, limit=1)
    if not rows:
        raise NotFound("No such template.")
    return rows[0]


async def list_templates(
    conn: AsyncConnection,
    db: Database,
    *,
    owner: int | None = None,
    doc_id: str | None = None,
    after: str = "",
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Live templates (design documents left out) in id order after ``after`` (keyset
    pagination); ``owner`` restricts them to one owner's (None: all, as in ``readonly``)."""
    doc = documents.c
    cond = and_(doc.db_id == db.id, doc.deleted.is_(False), doc.doc_id > after)
    cond = and_(cond, or_(doc.doc_id < DESIGN_PREFIX, doc.doc_id >= DESIGN_END))
    if owner is not None:
        cond = and_(cond, doc.owner_id == owner)
    if doc_id is not None:
        cond = and_(cond, doc.doc_id == doc_id)
    stmt = (
        winner_columns()
        .select_from(documents.join(revisions, winner_revision()))
        .where(cond)
        .order_by(doc.doc_id)
        .limit(limit)
    )
    return await represented(conn, stmt)
