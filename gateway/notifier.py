"""Feed wake-ups: tell waiting ``_changes`` listeners that a database changed.

In process, a listener grabs the database's current ``asyncio.Event`` *before* it queries,
so a change committed between its query and its wait still wakes it.  With Redis
configured, every write is also published and every instance relays it to its listeners.
Listeners also re-query every ``feed_poll_seconds``, so a lost notification delays a change
but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("gateway.notifier")
CHANNEL_PREFIX = "gateway:db:"
ANY = "*"  # the event of "any database changed" (no database can be named "*")


class FeedNotifier:
    """Per-database wake-up events, optionally relayed through Redis pub/sub."""

    def __init__(self, redis_url: str | None = None) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._redis_url = redis_url
        self._redis = None
        self._task: asyncio.Task[None] | None = None

    def current(self, db: str) -> asyncio.Event:
        """Return the event the next change to ``db`` will set."""
        event = self._events.get(db)
        if event is None:
            event = self._events[db] = asyncio.Event()
        return event

    def _wake(self, db: str) -> None:
        for key in (db, ANY):
            event = self._events.pop(key, None)
            if event is not None:
                event.set()

    async def notify(self, db: str) -> None:
        """Wake local listeners of ``db`` and publish the change to other instances."""
        self._wake(db)
        if self._redis is not None:
            try:
                await self._redis.publish(CHANNEL_PREFIX + db, b"1")
            except Exception as exc:  # Redis down: local wake-ups and polling still work.
                log.warning("redis publish failed: %s", exc)

    async def start(self) -> None:
        """Connect to Redis (if configured) and relay its messages."""
        if not self._redis_url:
            return
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(self._redis_url)
        self._task = asyncio.create_task(self._relay())

    async def _relay(self) -> None:
        assert self._redis is not None
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                async for message in pubsub.listen():
                    if message.get("type") == "pmessage":
                        channel = message["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        self._wake(channel[len(CHANNEL_PREFIX) :])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis subscription lost (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._redis is not None:
            await self._redis.aclose()


async def publish_once(redis_url: str, db: str) -> None:
    """Wake every instance's listeners of ``db`` from outside a server (the CLI); without
    Redis they catch up at their next slow poll."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        await client.publish(CHANNEL_PREFIX + db, b"1")
    except Exception as exc:
        log.warning("redis publish failed: %s", exc)
    finally:
        await client.aclose()
