"""Timestamps as the API shows them: ISO 8601, always with an offset.

SQLite gives back ``DateTime(timezone=True)`` columns without an offset (it keeps UTC
text); PostgreSQL gives aware datetimes.  Both come out the same here.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime | None) -> str | None:
    """``moment`` as ISO 8601 with its offset (naive values are UTC), or None."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()
