"""``_compact``: drop revision bodies nobody can need, then unreferenced attachments."""

from __future__ import annotations

import orjson
from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from replication import tree_from_data
from replication.compaction import revisions_to_keep
from schema.databases import lock_database
from schema.engine import write_transaction
from schema.keys import chunks
from schema.tables import attachments, documents, revisions

BATCH = 500


async def compact_database(engine: AsyncEngine, name: str) -> dict[str, int]:
    """Compact one database in batches of documents; return what was removed."""
    removed_revs = 0
    after = ""
    while True:
        async with write_transaction(engine) as conn:
            db = await lock_database(conn, name)
            rows = (
                await conn.execute(
                    select(documents.c.doc_id, documents.c.rev_tree)
                    .where(documents.c.db_id == db.id, documents.c.doc_id > after)
                    .order_by(documents.c.doc_id)
                    .limit(BATCH)
                )
            ).all()
            if not rows:
                break
            after = rows[-1][0]
            keep = {
                doc_id: revisions_to_keep(tree_from_data(orjson.loads(raw))) for doc_id, raw in rows
            }
            stored = await conn.execute(
                select(revisions.c.doc_id, revisions.c.rev).where(
                    revisions.c.db_id == db.id, revisions.c.doc_id.in_(list(keep))
                )
            )
            drop = [(d, r) for d, r in stored if r not in keep[d]]
            for part in chunks(drop):
                await conn.execute(
                    delete(revisions).where(
                        revisions.c.db_id == db.id,
                        tuple_(revisions.c.doc_id, revisions.c.rev).in_(list(part)),
                    )
                )
            removed_revs += len(drop)
    removed_atts = await _collect_attachments(engine, name)
    return {"revisions_removed": removed_revs, "attachments_removed": removed_atts}


async def _collect_attachments(engine: AsyncEngine, name: str) -> int:
    async with write_transaction(engine) as conn:
        db = await lock_database(conn, name)
        used: set[str] = set()
        result = await conn.stream(
            select(revisions.c.attachments).where(
                revisions.c.db_id == db.id, revisions.c.attachments.is_not(None)
            )
        )
        async for (raw,) in result:
            used.update(att["digest"] for att in orjson.loads(raw).values())
        digests = (
            await conn.execute(select(attachments.c.digest).where(attachments.c.db_id == db.id))
        ).scalars()
        unused = [d for d in digests if d not in used]
        for part in chunks(unused):
            await conn.execute(
                delete(attachments).where(
                    attachments.c.db_id == db.id, attachments.c.digest.in_(list(part))
                )
            )
        return len(unused)
