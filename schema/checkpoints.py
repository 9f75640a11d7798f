"""The checkpoint registry: every ``_local/`` document, reported and reset per user.

Replicators keep their checkpoints in ``_local/{replication_id}`` documents, which the
gateway stores per (database, user) with the sequence they record parsed out
(``local_docs.checkpoint_seq``).  This module lists them against each database's current
sequence, and resets them: deleting one makes the user's next replication start over;
rewinding one to N makes it resume from N.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from replication import NotFound, checkpoint_seq
from replication.checkpoint import HISTORY_SEQ_FIELDS, SEQ_FIELDS, seq_value
from schema.tables import databases, local_docs, users
from schema.times import iso


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One replication checkpoint and how far behind its database it is."""

    user: str
    db: str
    id: str  # the full "_local/..." id
    seq: int | None  # the sequence it records (None if it records none)
    db_seq: int  # the database's current update sequence
    updated_at: datetime | None

    @property
    def lag(self) -> int | None:
        """Changes the checkpoint has not passed yet (meaningful for pulls from the gateway,
        where the recorded sequence is this database's)."""
        return None if self.seq is None else max(self.db_seq - self.seq, 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "db": self.db,
            "id": self.id,
            "seq": self.seq,
            "db_seq": self.db_seq,
            "lag": self.lag,
            "updated_at": iso(self.updated_at),
        }


def local_id(raw: str) -> str:
    """Accept a checkpoint id with or without its ``_local/`` prefix."""
    return raw if raw.startswith("_local/") else "_local/" + raw


def _query(user: str | None, db: str | None, doc_id: str | None) -> Select[Any]:
    stmt = (
        select(
            users.c.name,
            databases.c.name,
            local_docs.c.doc_id,
            local_docs.c.checkpoint_seq,
            databases.c.update_seq,
            local_docs.c.updated_at,
            local_docs.c.db_id,
            local_docs.c.user_id,
            local_docs.c.body,
            local_docs.c.rev,
        )
        .select_from(
            local_docs.join(users, users.c.id == local_docs.c.user_id).join(
                databases, databases.c.id == local_docs.c.db_id
            )
        )
        .order_by(users.c.name, databases.c.name, local_docs.c.doc_id)
    )
    if user is not None:
        stmt = stmt.where(users.c.name == user)
    if db is not None:
        stmt = stmt.where(databases.c.name == db)
    if doc_id is not None:
        stmt = stmt.where(local_docs.c.doc_id == local_id(doc_id))
    return stmt


def _checkpoint(row: Any, seq: int | None = None, rewound: bool = False) -> Checkpoint:
    return Checkpoint(row[0], row[1], row[2], seq if rewound else row[3], row[4], row[5])


async def list_checkpoints(
    conn: AsyncConnection, user: str | None = None, db: str | None = None
) -> list[Checkpoint]:
    """Every checkpoint, optionally of one user and/or one database, ordered."""
    return [_checkpoint(row) for row in await conn.execute(_query(user, db, None))]


async def _require_user(conn: AsyncConnection, name: str) -> None:
    found = (await conn.execute(select(users.c.id).where(users.c.name == name))).first()
    if found is None:
        raise NotFound(f"No user named {name!r}.")


def rewind_body(body: dict[str, Any], to_seq: int) -> dict[str, Any]:
    """The checkpoint ``body`` with every recorded sequence lowered to at most ``to_seq``.

    The session ids are kept, so PouchDB's checkpointer (which takes the source's
    ``last_seq`` when both sides share the session) resumes a pull from ``to_seq``.
    """
    out = dict(body)
    for field in SEQ_FIELDS:  # PouchDB's last_seq, CouchDB's source_last_seq
        if field in out:
            out[field] = _lowered(out[field], to_seq)
    history = out.get("history")
    if isinstance(history, list):
        out["history"] = [_rewound_entry(h, to_seq) for h in history]
    return out


def _rewound_entry(entry: Any, to_seq: int) -> Any:
    if not isinstance(entry, dict):
        return entry
    return {k: _lowered(v, to_seq) if k in HISTORY_SEQ_FIELDS else v for k, v in entry.items()}


def _lowered(raw: Any, to_seq: int) -> Any:
    seq = seq_value(raw)
    if seq is None or seq <= to_seq:
        return raw
    return str(to_seq) if isinstance(raw, str) else to_seq


async def reset_checkpoints(
    conn: AsyncConnection,
    user: str,
    db: str | None = None,
    doc_id: str | None = None,
    to_seq: int | None = None,
    dry_run: bool = False,
) -> list[Checkpoint]:
    """Delete (or, with ``to_seq``, rewind) a user's checkpoints; return what changed.

    Rewinding leaves checkpoints already at or before ``to_seq`` alone; each rewound
    document gets a new ``_rev`` so a replicator holding the old one re-reads it.
    """
    await _require_user(conn, user)
    rows = list(await conn.execute(_query(user, db, doc_id)))
    if to_seq is None:
        if rows and not dry_run:
            keys = [(row[6], row[7], row[2]) for row in rows]
            await conn.execute(
                delete(local_docs).where(
                    tuple_(local_docs.c.db_id, local_docs.c.user_id, local_docs.c.doc_id).in_(keys)
                )
            )
        return [_checkpoint(row) for row in rows]
    changed = [row for row in rows if row[3] is not None and row[3] > to_seq]
    if not dry_run:
        for row in changed:  # usually one or two per user and database
            body = rewind_body(orjson.loads(row[8]), to_seq)
            await conn.execute(
                update(local_docs)
                .where(
                    local_docs.c.db_id == row[6],
                    local_docs.c.user_id == row[7],
                    local_docs.c.doc_id == row[2],
                )
                .values(
                    body=orjson.dumps(body),
                    rev=row[9] + 1,
                    checkpoint_seq=checkpoint_seq(body),
                    updated_at=func.now(),
                )
            )
    return [_checkpoint(row, to_seq, rewound=True) for row in changed]
