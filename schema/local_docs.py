"""``_local/`` documents: replication checkpoints, private to one (database, user).

They never replicate and never appear in ``_changes``; their revisions are ``"0-N"`` with N
counting updates, as in CouchDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Integer,
    LargeBinary,
    String,
    bindparam,
    delete,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from replication import BadRequest, Conflict, NotFound, checkpoint_seq
from schema import rawpg
from schema.callers import CallerCheck, RecheckCaller, caller_clause
from schema.engine import is_sqlite
from schema.rawpg import Runner
from schema.tables import local_docs


@dataclass(frozen=True, slots=True)
class LocalDoc:
    doc_id: str
    rev: str
    body: bytes


MAX_LOCAL_REV = 2**31 - 1  # the rev column is a 32-bit integer


def _parse_local_rev(rev: object) -> int:
    """``"0-N"`` -> N; ``BadRequest`` if malformed, ``Conflict`` past any stored revision."""
    digits = rev[2:] if isinstance(rev, str) and rev.startswith("0-") else ""
    if not (digits.isascii() and digits.isdigit()):  # "0-²": "²".isdigit() is True
        raise BadRequest("Invalid rev format")
    if len(digits) > 10 or int(digits) > MAX_LOCAL_REV:
        raise Conflict()  # no local document reaches it: a stale rev, not a database error
    return int(digits)


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


@cache
def _put_statement(sqlite: bool, *, create: bool, checked: bool = False) -> Any:
    """Create at rev 1 (if absent), or move from rev ``sent`` to ``sent + 1`` (with
    ``checked``, only if the remembered caller still holds: ``schema.callers``)."""
    values = {
        "body": bindparam("p_body", type_=LargeBinary),
        "checkpoint_seq": bindparam("p_checkpoint_seq", type_=BigInteger),
        "updated_at": func.now(),
    }
    key = {
        "db_id": bindparam("p_db_id", type_=Integer),
        "user_id": bindparam("p_user_id", type_=Integer),
        "doc_id": bindparam("p_doc_id", type_=String),
    }
    if create:
        insert = sqlite_insert if sqlite else pg_insert
        if checked:
            row = {"rev": literal(1, Integer), **key, **values}
            source = select(*(value.label(name) for name, value in row.items()))
            stmt = insert(local_docs).from_select(list(row), source.where(caller_clause()))
        else:
            stmt = insert(local_docs).values(rev=1, **key, **values)
        return stmt.on_conflict_do_nothing().returning(local_docs.c.rev)
    sent = bindparam("p_sent", type_=Integer)
    stmt = (
        update(local_docs)
        .where(*(local_docs.c[name] == value for name, value in key.items()))
        .where(local_docs.c.rev == sent)
    )
    if checked:
        stmt = stmt.where(caller_clause())
    return stmt.values(rev=sent + 1, **values).returning(local_docs.c.rev)


async def put_local(
    conn: Runner,
    db_id: int,
    user_id: int,
    doc_id: str,
    rev: object,
    body: dict[str, Any],
    *,
    check: CallerCheck | None = None,
) -> str:
    """Create or update a local document in one statement; ``Conflict`` on a stale ``rev``.

    ``check``: a remembered caller, confirmed by the statement itself; ``RecheckCaller`` (and
    nothing written) when no row was written, whatever the reason (the full authentication
    that follows then tells a changed caller from a stale ``rev``).
    """
    sent = _parse_local_rev(rev) if rev is not None else 0
    stmt = _put_statement(is_sqlite(conn), create=sent == 0, checked=check is not None)
    params = {
        "p_db_id": db_id,
        "p_user_id": user_id,
        "p_doc_id": doc_id,
        "p_sent": sent,
        "p_body": orjson.dumps(body),
        "p_checkpoint_seq": checkpoint_seq(body),
    }
    if check is not None:
        params.update(check.params())
    found = await rawpg.rows(conn, stmt, params)
    new_rev = found[0][0] if found else None
    if new_rev is None:
        raise RecheckCaller() if check is not None else Conflict()
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
