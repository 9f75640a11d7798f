"""Timestamps as the API shows them: ISO 8601, always with an offset.

SQLite gives back ``DateTime(timezone=True)`` columns without an offset (it keeps UTC
text); PostgreSQL gives aware datetimes.  Both come out the same here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection


def iso(moment: datetime | None) -> str | None:
    """``moment`` as ISO 8601 with its offset (naive values are UTC), or None."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


async def database_now(conn: AsyncConnection) -> datetime:
    """The time by the database's clock: on PostgreSQL, the start of ``conn``'s transaction
    (one clock for every instance, whatever their own clocks say); on SQLite, this
    machine's (the embedded store is on this machine), both timezone-aware."""
    if conn.dialect.name == "sqlite":
        return datetime.now(UTC)
    return (await conn.execute(select(func.now()))).scalar_one()
