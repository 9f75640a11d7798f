"""Refresh tokens (stored hashed, rotated on every use, reuse revokes the family) and the
list of access tokens revoked before they expire."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from replication import Unauthorized
from schema.engine import insert_ignore
from schema.tables import refresh_tokens, revoked_tokens


@dataclass(frozen=True, slots=True)
class Rotation:
    user_id: int
    family: str


def token_hash(token: str) -> str:
    """Return what is stored for a refresh token: its sha256 (the token itself never is)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_refresh(
    conn: AsyncConnection, user_id: int, ttl: timedelta, family: str | None = None
) -> str:
    """Create a refresh token (in a new family unless ``family`` is given) and return it."""
    token = secrets.token_urlsafe(32)
    await conn.execute(
        insert(refresh_tokens).values(
            user_id=user_id,
            family=family or uuid.uuid4().hex,
            token_hash=token_hash(token),
            expires_at=datetime.now(UTC) + ttl,
        )
    )
    return token


async def use_refresh(conn: AsyncConnection, token: str) -> Rotation | Unauthorized:
    """Spend a refresh token once; a second use revokes its whole family.

    Returns the error instead of raising it, so the caller commits the revocation.
    """
    digest = token_hash(token)
    now = datetime.now(UTC)
    spent = (
        await conn.execute(
            update(refresh_tokens)
            .where(
                refresh_tokens.c.token_hash == digest,
                refresh_tokens.c.used_at.is_(None),
                refresh_tokens.c.revoked_at.is_(None),
                refresh_tokens.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(refresh_tokens.c.user_id, refresh_tokens.c.family)
        )
    ).first()
    if spent is not None:
        return Rotation(spent[0], spent[1])
    known = (
        await conn.execute(
            select(refresh_tokens.c.family, refresh_tokens.c.used_at).where(
                refresh_tokens.c.token_hash == digest
            )
        )
    ).first()
    if known is not None and known[1] is not None:
        await revoke_family(conn, known[0])  # a spent token came back: assume it was stolen
        return Unauthorized("Refresh token reuse detected; every session of it is revoked.")
    return Unauthorized("Invalid or expired refresh token.")


async def revoke_family(conn: AsyncConnection, family: str) -> None:
    await conn.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.family == family, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


async def family_of(conn: AsyncConnection, token: str, user_id: int) -> str | None:
    """Return the family of one of ``user_id``'s refresh tokens (None if not theirs)."""
    row = (
        await conn.execute(
            select(refresh_tokens.c.family).where(
                refresh_tokens.c.token_hash == token_hash(token),
                refresh_tokens.c.user_id == user_id,
            )
        )
    ).first()
    return row[0] if row else None


async def revoke_access(conn: AsyncConnection, jti: str, expires_at: datetime) -> None:
    """Refuse an access token from now on, until it would have expired anyway."""
    await conn.execute(insert_ignore(conn, revoked_tokens).values(jti=jti, expires_at=expires_at))
    await conn.execute(
        delete(revoked_tokens).where(revoked_tokens.c.expires_at < datetime.now(UTC))
    )
