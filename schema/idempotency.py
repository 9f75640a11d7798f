"""Stored answers of ``Idempotency-Key`` requests (the ``idempotency_keys`` table).

A request claims its (user, key) with an insert-ignore in its own committed transaction
before its handler runs, so two instances racing on one database agree on a single winner
(the primary key decides).  The claim row has ``status`` NULL while the request runs and
expires after a short lease (``claim_key``'s ``lease``) that the running request renews
(``renew_claim``), so a claim left behind by a crashed instance frees itself within one
lease; the final answer is stored on the same row by ``store_response``, which also extends
``expires_at`` to the key's full lifetime.  ``store_response`` may run inside the request's
own write transaction: then the write and its stored answer commit together or not at all,
and a request whose claim was taken over (its lease ran out) cannot commit its write.  The
claim's ``created_at`` (set here, to the microsecond) is its token: storing, renewing and
releasing only touch the row this request claimed, never a newer claim of the same key.
An expired row counts as absent.

Every time here is the database's (``schema.times.database_now``), never an instance's:
with instance clocks, an instance whose clock ran a lease ahead of another's would take
over that instance's live claim (and its client would get a spurious 409).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schema.engine import insert_ignore
from schema.tables import idempotency_keys as t
from schema.times import database_now

CLAIM_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A live row of another request with the same (user, key)."""

    request_hash: str
    status: int | None  # None: that request is still running
    content_type: str | None
    body: bytes | None
    headers: bytes | None = None  # the answer's replayed headers, JSON


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of ``claim_key``: either this request owns the key (``token`` set), or
    ``existing`` holds the row that was there (None if it vanished while we looked)."""

    token: datetime | None = None
    existing: StoredKey | None = None


def _row(user_id: int, key: str, token: datetime) -> ColumnElement[bool]:
    return (t.c.user_id == user_id) & (t.c.key == key) & (t.c.created_at == token)


async def claim_key(
    conn: AsyncConnection,
    user_id: int,
    key: str,
    request_hash: str,
    *,
    lease: timedelta,
) -> Claim:
    """Claim (user_id, key) for a request with ``request_hash``, replacing an expired row.

    Commit right after: the claim must be visible to every other instance before the
    handler runs.
    """
    now = await database_now(conn)
    for _ in range(CLAIM_ATTEMPTS):
        await conn.execute(
            delete(t).where(t.c.user_id == user_id, t.c.key == key, t.c.expires_at < now)
        )
        inserted = await conn.execute(
            insert_ignore(conn, t).values(
                user_id=user_id, key=key, request_hash=request_hash, status=None,
                created_at=now, expires_at=now + lease,
            )
        )  # fmt: skip
        if inserted.rowcount == 1:
            return Claim(token=now)
        found = (
            await conn.execute(
                select(t.c.request_hash, t.c.status, t.c.content_type, t.c.body, t.c.headers).where(
                    t.c.user_id == user_id, t.c.key == key
                )
            )
        ).first()
        if found is not None:
            return Claim(existing=StoredKey(*found))
        # The row was released between our insert and select (its request failed): retry.
    return Claim()


async def store_response(
    conn: AsyncConnection,
    user_id: int,
    key: str,
    token: datetime,
    *,
    status: int,
    content_type: str | None,
    body: bytes,
    headers: bytes | None = None,
    ttl: timedelta,
) -> bool:
    """Record the final answer on the row this request claimed, kept for ``ttl``; False if
    it is gone (the lease ran out and the key was claimed again, or purged)."""
    expires_at = await database_now(conn) + ttl
    result = await conn.execute(
        update(t)
        .where(_row(user_id, key, token), t.c.status.is_(None))
        .values(
            status=status,
            content_type=content_type,
            body=body,
            headers=headers,
            expires_at=expires_at,
        )
    )
    return result.rowcount == 1


async def renew_claim(
    conn: AsyncConnection, user_id: int, key: str, token: datetime, *, lease: timedelta
) -> bool:
    """Extend this request's claim (still without an answer) by ``lease`` from now; False
    once it holds an answer or is gone (nothing left to keep alive)."""
    expires_at = await database_now(conn) + lease
    result = await conn.execute(
        update(t)
        .where(_row(user_id, key, token), t.c.status.is_(None))
        .values(expires_at=expires_at)
    )
    return result.rowcount == 1


async def release_key(conn: AsyncConnection, user_id: int, key: str, token: datetime) -> None:
    """Drop this request's claim (it failed), so a retry with the same key runs again."""
    await conn.execute(delete(t).where(_row(user_id, key, token), t.c.status.is_(None)))


async def purge_expired(conn: AsyncConnection, *, dry_run: bool = False) -> int:
    """Delete (or with ``dry_run`` count) the rows expired by now."""
    expired = t.c.expires_at < await database_now(conn)
    if dry_run:
        counted = await conn.execute(select(func.count()).select_from(t).where(expired))
        return int(counted.scalar_one())
    return (await conn.execute(delete(t).where(expired))).rowcount
