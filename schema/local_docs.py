"""``_local/`` documents: replication checkpoints, private to one (database, user).

They never replicate and never appear in ``_changes``; their revisions are ``"0-N"`` with N
counting updates, as in CouchDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from replication import BadRequest, Conflict, NotFound, checkpoint_seq
from schema.engine import insert_ignore
from schema.tables import local_docs


@dataclass(frozen=True, slots=True)
class LocalDoc:
    doc_id: str
    rev: str
    body: bytes


def _parse_local_rev(rev: object) -> int:
    if not isinstance(rev, str) or not rev.startswith("0-") or not rev[2:].isdigit():
        raise BadRequest("Invalid rev format")
    return int(rev[2:])


async def get_local(conn: AsyncConnection, db_id: int, user_id: int, doc_id: str) -> LocalDoc:
    """Return a local document or raise ``NotFound``."""
    row = (
        await conn.execute(
            select(local_docs.c.rev, local_docs.c.body).where(
                local_docs.c.db_id == db_id,
                local_docs.c.user_id == user_id,
                local_docs.c.doc_id == doc_id,
            )
        )
    ).first()
    if row is None:
        raise NotFound("missing")
    return LocalDoc(doc_id, f"0-{row[0]}", row[1])


async def put_local(
    conn: AsyncConnection,
    db_id: int,
    user_id: int,
    doc_id: str,
    rev: object,
    body: dict[str, Any],
) -> str:
    """Create or update a local document in one statement; ``Conflict`` on a stale ``rev``."""
    sent = _parse_local_rev(rev) if rev is not None else 0
    values = {
        "body": orjson.dumps(body),
        "checkpoint_seq": checkpoint_seq(body),
        "updated_at": func.now(),
    }
    if sent == 0:
        stmt = (
            insert_ignore(conn, local_docs)
            .values(db_id=db_id, user_id=user_id, doc_id=doc_id, rev=1, **values)
            .returning(local_docs.c.rev)
        )
    else:
        stmt = (
            update(local_docs)
            .where(
                local_docs.c.db_id == db_id,
                local_docs.c.user_id == user_id,
                local_docs.c.doc_id == doc_id,
                local_docs.c.rev == sent,
            )
            .values(rev=sent + 1, **values)
            .returning(local_docs.c.rev)
        )
    new_rev = (await conn.execute(stmt)).scalar_one_or_none()
    if new_rev is None:
        raise Conflict()
    return f"0-{new_rev}"


async def delete_local(
    conn: AsyncConnection, db_id: int, user_id: int, doc_id: str, rev: object
) -> str:
    """Delete a local document at ``rev``."""
    current = await get_local(conn, db_id, user_id, doc_id)
    if rev is None or _parse_local_rev(rev) != int(current.rev[2:]):
        raise Conflict()
    await conn.execute(
        delete(local_docs).where(
            local_docs.c.db_id == db_id,
            local_docs.c.user_id == user_id,
            local_docs.c.doc_id == doc_id,
        )
    )
    return "0-0"
