"""Documents as the REST API shows them: ``id``, ``version`` (the winning revision's
generation), ``rev``, then the body's own fields; and the timestamps the API writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from replication.revs import rev_pos


def version_of(rev: str) -> int:
    """``3-abc…`` is version 3."""
    return rev_pos(rev)


def represent(doc_id: str, rev: str, body: dict[str, Any]) -> dict[str, Any]:
    """The REST form of a document (``_`` members left out)."""
    out = {"id": doc_id, "version": version_of(rev), "rev": rev}
    out.update({k: v for k, v in body.items() if not k.startswith("_")})
    return out


def now_iso() -> str:
    """Now, as the API stamps ``created_at``/``updated_at`` (UTC, milliseconds, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
