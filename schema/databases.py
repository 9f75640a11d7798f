"""Databases: create, look up, lock for writing, delete, and their info."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from replication.errors import BadRequest, FileExists, NotFound
from schema.engine import is_sqlite
from schema.tables import databases

DB_NAME_RE = re.compile(r"^[a-z][a-z0-9_$()+-]{0,237}$")
# Server routes that would shadow a database of the same name on GET.
RESERVED_NAMES = frozenset({"dashboard", "healthz", "readyz", "metrics"})
ACCESS_MODES = ("owned", "shared", "readonly")
CONFLICT_POLICIES = ("manual", "merge", "server_wins", "client_wins")


@dataclass(frozen=True, slots=True)
class Database:
    id: int
    name: str
    access_mode: str
    conflict_policy: str
    revs_limit: int
    update_seq: int
    doc_count: int
    doc_del_count: int
    instance_start_time: str
    purge_seq: int = 0


DATABASE_COLUMNS = (
    databases.c.id,
    databases.c.name,
    databases.c.access_mode,
    databases.c.conflict_policy,
    databases.c.revs_limit,
    databases.c.update_seq,
    databases.c.doc_count,
    databases.c.doc_del_count,
    databases.c.instance_start_time,
    databases.c.purge_seq,
)


# Built once: these run on every write.
_SELECT_BY_NAME = select(*DATABASE_COLUMNS).where(
    databases.c.name == bindparam("name", type_=String)
)
_LOCK_BY_NAME = _SELECT_BY_NAME.with_for_update()


def next_change_seq(sqlite: bool) -> Any:
    """The next server-wide change number: a sequence on PostgreSQL; on SQLite (one writer
    at a time) the highest so far plus one."""
    if sqlite:
        return (
            select(func.coalesce(func.max(databases.c.change_seq), 0) + 1)
            .select_from(databases)
            .scalar_subquery()
        )
    return func.nextval("gateway_change_seq")


def _advance(sqlite: bool) -> Any:
    return (
        update(databases)
        .where(databases.c.id == bindparam("db", type_=Integer))
        .values(
            update_seq=databases.c.update_seq + bindparam("seqs", type_=BigInteger),
            doc_count=databases.c.doc_count + bindparam("docs", type_=BigInteger),
            doc_del_count=databases.c.doc_del_count + bindparam("dels", type_=BigInteger),
            change_seq=next_change_seq(sqlite),
        )
    )


_ADVANCE = {True: _advance(True), False: _advance(False)}


def validate_db_name(name: str) -> str:
    """Return ``name`` if CouchDB would accept it as a database name (no ``/``)."""
    if not DB_NAME_RE.match(name):
        raise BadRequest(
            f"Name: '{name}'. Only lowercase characters (a-z), digits (0-9), and any of the "
            "characters _, $, (, ), +, and - are allowed. Must begin with a letter."
        )
    return name


def validate_policy(policy: object) -> str:
    """Return a valid ``conflict_policy`` or raise ``BadRequest``."""
    if not isinstance(policy, str) or policy not in CONFLICT_POLICIES:
        raise BadRequest(f"conflict_policy must be one of {', '.join(CONFLICT_POLICIES)}")
    return policy


async def create_database(
    conn: AsyncConnection,
    name: str,
    *,
    access_mode: str = "owned",
    conflict_policy: str = "manual",
) -> Database:
    """Create a database; ``FileExists`` if the name is taken."""
    validate_db_name(name)
    if name in RESERVED_NAMES:
        raise BadRequest(f"{name!r} is reserved for a server route; choose another name.")
    if access_mode not in ACCESS_MODES:
        raise BadRequest(f"access_mode must be one of {', '.join(ACCESS_MODES)}")
    validate_policy(conflict_policy)
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(databases).values(
                    name=name,
                    access_mode=access_mode,
                    conflict_policy=conflict_policy,
                    change_seq=next_change_seq(is_sqlite(conn)),
                    instance_start_time=str(int(time.time() * 1_000_000)),
                )
            )
    except IntegrityError as exc:
        raise FileExists() from exc
    return await get_database(conn, name)


async def ensure_database(conn: AsyncConnection, name: str, *, access_mode: str) -> Database:
    """Return database ``name``, creating it with ``access_mode`` if it does not exist."""
    try:
        return await get_database(conn, name)
    except NotFound:
        pass
    try:
        return await create_database(conn, name, access_mode=access_mode)
    except FileExists:  # created meanwhile by another instance
        return await get_database(conn, name)


async def get_database(conn: AsyncConnection, name: str) -> Database:
    """Return a database by name, or raise ``NotFound``."""
    row = (await conn.execute(select(*DATABASE_COLUMNS).where(databases.c.name == name))).first()
    if row is None:
        raise NotFound("Database does not exist.")
    return Database(*row)


async def lock_database(conn: AsyncConnection, name: str) -> Database:
    """Lock a database's counter row for the rest of the transaction and return it.

    Every writer takes this lock first, so commits are serialized in seq order.
    """
    # SQLite's BEGIN IMMEDIATE already holds the write lock.
    query = _SELECT_BY_NAME if is_sqlite(conn) else _LOCK_BY_NAME
    row = (await conn.execute(query, {"name": name})).first()
    if row is None:
        raise NotFound("Database does not exist.")
    return Database(*row)


async def advance_database(
    conn: AsyncConnection, db: Database, *, seqs: int, doc_delta: int, del_delta: int
) -> None:
    """Record ``seqs`` new changes and the document-count deltas of one write."""
    await conn.execute(
        _ADVANCE[is_sqlite(conn)],
        {"db": db.id, "seqs": seqs, "docs": doc_delta, "dels": del_delta},
    )


async def set_conflict_policy(conn: AsyncConnection, name: str, policy: str) -> None:
    """Set how the database resolves the conflicts writes open (applies to later writes)."""
    result = await conn.execute(
        update(databases)
        .where(databases.c.name == name)
        .values(conflict_policy=validate_policy(policy))
    )
    if result.rowcount == 0:
        raise NotFound("Database does not exist.")


async def set_revs_limit(conn: AsyncConnection, name: str, limit: int) -> None:
    """Set how many revisions of history each document keeps."""
    result = await conn.execute(
        update(databases).where(databases.c.name == name).values(revs_limit=limit)
    )
    if result.rowcount == 0:
        raise NotFound("Database does not exist.")


async def delete_database(conn: AsyncConnection, name: str) -> None:
    """Delete a database and everything in it."""
    db = await lock_database(conn, name)
    await conn.execute(delete(databases).where(databases.c.id == db.id))


async def list_databases(conn: AsyncConnection) -> list[str]:
    """Return every database name, sorted."""
    rows = await conn.execute(select(databases.c.name).order_by(databases.c.name))
    return [row[0] for row in rows]
