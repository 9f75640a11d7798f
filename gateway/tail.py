"""``gateway changes --db D [--follow]``: print a database's changes feed in the terminal.

One JSON object per line (``seq``, ``id``, ``rev``, ``deleted``, and ``user`` — who wrote
it), read straight from the database.  With ``--follow`` it keeps waiting for new changes:
woken through Redis when ``GATEWAY_REDIS_URL`` is set (the same channel the servers
publish on), and polling every ``feed_poll_seconds`` either way, so it never misses one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import select

from gateway.notifier import CHANNEL_PREFIX
from gateway.settings import Settings
from schema.databases import get_database
from schema.engine import make_engine, read_transaction
from schema.tables import documents, users

BATCH = 500


async def tail_changes(
    settings: Settings,
    db_name: str,
    *,
    since: int | str,
    follow: bool,
    limit: int | None,
    emit: Callable[[bytes], None],
) -> int:
    """Emit the changes after ``since`` (``"now"``: from the current end); return the last
    seq emitted (or ``since``).  With ``follow`` it only returns when cancelled."""
    engine = make_engine(settings.database_url)
    wake = asyncio.Event()
    listener = (
        asyncio.ensure_future(_listen(settings.redis_url, db_name, wake))
        if follow and settings.redis_url
        else None
    )
    emitted = 0
    try:
        async with read_transaction(engine) as conn:
            db = await get_database(conn, db_name)
        position = db.update_seq if since == "now" else int(since)
        while True:
            wake.clear()
            async with read_transaction(engine) as conn:
                rows = (
                    await conn.execute(
                        select(
                            documents.c.seq, documents.c.doc_id, documents.c.winning_rev,
                            documents.c.deleted, users.c.name,
                        )
                        .select_from(
                            documents.outerjoin(users, users.c.id == documents.c.updated_by)
                        )
                        .where(documents.c.db_id == db.id, documents.c.seq > position)
                        .order_by(documents.c.seq)
                        .limit(BATCH)
                    )
                ).all()  # fmt: skip
            for seq, doc_id, rev, deleted, user in rows:
                line: dict[str, Any] = {"seq": seq, "id": doc_id, "rev": rev, "user": user}
                if deleted:
                    line["deleted"] = True
                emit(orjson.dumps(line))
                position = seq
                emitted += 1
                if limit is not None and emitted >= limit:
                    return position
            if len(rows) == BATCH:
                continue
            if not follow:
                return position
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), settings.feed_poll_seconds)
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        await engine.dispose()


async def _listen(redis_url: str, db_name: str, wake: asyncio.Event) -> None:
    """Set ``wake`` whenever a server publishes a change to ``db_name`` (retrying)."""
    import redis.asyncio as aioredis

    while True:
        client = aioredis.from_url(redis_url)
        try:
            pubsub = client.pubsub()
            await pubsub.subscribe(CHANNEL_PREFIX + db_name)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    wake.set()
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis away: polling goes on; try again shortly
            await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
