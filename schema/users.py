"""Users: creation, lookup and password hashing (scrypt, salted, constant-time compare)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    String,
    Text,
    bindparam,
    func,
    insert,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select
from sqlalchemy.types import NullType

from replication import BadRequest, Conflict, NotFound
from schema import rawpg
from schema.databases import DATABASE_COLUMNS, Database
from schema.documents import STATE_COLUMNS
from schema.engine import is_sqlite
from schema.keys import probe_ids, storable
from schema.rawpg import Runner
from schema.tables import databases, documents, local_docs, revoked_tokens, users

ROLES = ("admin", "manager", "inspector")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool
    password_hash: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str) -> str:
    """Return ``scrypt$n$r$p$salt$hash`` for ``password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return "$".join(
        [
            "scrypt",
            str(_SCRYPT_N),
            str(_SCRYPT_R),
            str(_SCRYPT_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def verify_password(password: str, stored: str) -> bool:
    """Check ``password`` against a stored hash in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


def validate_user_name(name: str) -> str:
    """Return a usable user name or raise ``BadRequest``."""
    if not name or len(name) > 128 or not name.isprintable() or ":" in name:
        raise BadRequest("User name must be 1-128 printable characters without ':'")
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequest(f"Role must be one of {', '.join(ROLES)}")
    return role


_COLUMNS = (users.c.id, users.c.name, users.c.role, users.c.disabled, users.c.password_hash)


async def create_user(conn: AsyncConnection, name: str, password: str, role: str) -> User:
    """Create a user; ``Conflict`` if the name is taken."""
    validate_user_name(name)
    validate_role(role)
    if not password:
        raise BadRequest("Password may not be empty")
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(users).values(name=name, password_hash=hash_password(password), role=role)
            )
    except IntegrityError as exc:
        raise Conflict(f"User {name!r} already exists") from exc
    return await get_user_by_name(conn, name)


async def get_user_by_name(conn: AsyncConnection, name: str) -> User:
    row = (await conn.execute(select(*_COLUMNS).where(users.c.name == name))).first()
    if row is None:
        raise NotFound(f"No user {name!r}")
    return User(*row)


async def get_user_by_id(conn: AsyncConnection, user_id: int) -> User | None:
    """Return the user with ``user_id``, or None."""
    row = (await conn.execute(select(*_COLUMNS).where(users.c.id == user_id))).first()
    return User(*row) if row else None


async def find_user(conn: AsyncConnection, name: str) -> User | None:
    """Return the user called ``name``, or None."""
    row = (await conn.execute(select(*_COLUMNS).where(users.c.name == name))).first()
    return User(*row) if row else None


@dataclass(frozen=True, slots=True)
class Caller:
    """What one request needs to know about its caller, read in one round trip."""

    user: User | None
    db: Database | None = None
    local: tuple[int, bytes] | None = None  # (rev, body) of the requested _local doc
    revoked: bool = False  # the access token's jti was revoked by a logout
    # the asked-for documents that exist, as ``schema.documents.STATE_COLUMNS`` rows
    docs: list[tuple[str, bytes, bool, int | None, int]] | None = None


@cache
def _caller_statement(
    with_db: bool, with_local: bool, with_jti: bool, with_docs: bool = False
) -> Select[Any]:
    joined: Any = users
    cols: list[Any] = list(_COLUMNS)
    if with_db:
        db = (
            select(*DATABASE_COLUMNS)
            .where(databases.c.name == bindparam("db_name", type_=String))
            .subquery("db")
        )
        joined = joined.outerjoin(db, true())
        cols += list(db.c)
        if with_local:  # a checkpoint read: the caller's _local document in the same trip
            joined = joined.outerjoin(
                local_docs,
                (local_docs.c.db_id == db.c.id)
                & (local_docs.c.user_id == users.c.id)
                & (local_docs.c.doc_id == bindparam("local_id", type_=String)),
            )
            cols += [local_docs.c.rev, local_docs.c.body]
        if with_docs:  # a _revs_diff (PostgreSQL): the documents' trees in the same trip
            ids = bindparam("doc_ids", type_=ARRAY(Text))
            keys, rows = probe_ids(select(*STATE_COLUMNS), documents, db.c.id, ids)
            found = (
                select(*(_aggregate(c) for c in rows.c))
                .select_from(keys)
                .join(rows, true())
                .lateral("docs")
            )
            joined = joined.outerjoin(found, true())
            cols += list(found.c)
    if with_jti:
        joined = joined.outerjoin(
            revoked_tokens, revoked_tokens.c.jti == bindparam("jti", type_=String)
        )
        cols.append(revoked_tokens.c.jti)
    return select(*cols).select_from(joined).where(users.c.name == bindparam("name", type_=String))


def _aggregate(column: Any) -> Any:
    """``array_agg(column)``, typed so that the driver's arrays come back as they are (the
    aggregates of one query see its rows in one order, so the arrays line up)."""
    return type_coerce(func.array_agg(column), NullType()).label(column.name)


async def find_caller(
    conn: Runner,
    name: str,
    *,
    db_name: str | None = None,
    local_id: str | None = None,
    jti: str | None = None,
    doc_ids: list[str] | None = None,
) -> Caller:
    """Read the user and, as asked, the URL's database, a _local doc, a token revocation and
    (PostgreSQL only: ``doc_ids`` is ignored on SQLite) the stored state of some documents."""
    with_db, with_local = db_name is not None, db_name is not None and local_id is not None
    with_docs = with_db and doc_ids is not None and not is_sqlite(conn)
    stmt = _caller_statement(with_db, with_local, jti is not None, with_docs)
    params = {
        "name": name,
        "db_name": db_name,
        "local_id": local_id,
        "jti": jti,
        "doc_ids": storable(doc_ids) if with_docs and doc_ids is not None else None,
    }
    found = await rawpg.rows(conn, stmt, {k: v for k, v in params.items() if v is not None})
    row = found[0] if found else None
    if row is None:
        return Caller(None)
    values = list(row)
    user = User(*values[: len(_COLUMNS)])
    rest = values[len(_COLUMNS) :]
    db = local = None
    docs: list[Any] = []
    if with_db:
        db_row, rest = rest[: len(DATABASE_COLUMNS)], rest[len(DATABASE_COLUMNS) :]
        db = Database(*db_row) if db_row[0] is not None else None
        if with_local:
            local = (rest[0], rest[1]) if rest[0] is not None else None
            rest = rest[2:]
        if with_docs:
            columns, rest = rest[: len(STATE_COLUMNS)], rest[len(STATE_COLUMNS) :]
            docs = list(zip(*columns, strict=True)) if columns[0] is not None else []
    revoked = jti is not None and rest[0] is not None
    return Caller(user, db, local, revoked, docs if with_docs else None)


async def list_users(conn: AsyncConnection) -> list[User]:
    rows = await conn.execute(select(*_COLUMNS).order_by(users.c.name))
    return [User(*row) for row in rows]


async def set_role(conn: AsyncConnection, name: str, role: str) -> None:
    validate_role(role)
    result = await conn.execute(update(users).where(users.c.name == name).values(role=role))
    if result.rowcount == 0:
        raise NotFound(f"No user {name!r}")


async def set_disabled(conn: AsyncConnection, name: str, disabled: bool = True) -> None:
    result = await conn.execute(update(users).where(users.c.name == name).values(disabled=disabled))
    if result.rowcount == 0:
        raise NotFound(f"No user {name!r}")
