"""Feed wake-ups: tell waiting ``_changes`` listeners that a database changed.

In process, a listener grabs the database's current ``asyncio.Event`` *before* it queries,
so a change committed between its query and its wait still wakes it.  With Redis
configured, every write is also published and every instance relays it to its listeners.

Listeners never poll the database themselves.  After its query a listener records how far
it has seen (``floor``); one task per instance then checks, every ``feed_poll_seconds`` and
only while someone is waiting, the databases being waited on — one query for all of them,
however many listeners there are — and wakes those that moved past their floor.  So a lost
notification (a write made by the CLI, a publish that failed) delays a change but never
loses it, and idle listeners cost nothing per listener.  Each time the Redis subscription
is made (at start, and again after it was lost) the same check runs at once, since what
was published while unsubscribed never arrives.

Publishing never holds up the write that caused it: it runs in the background on a client
with short timeouts, and after a failure (Redis down, or hung) it is skipped for
``PUBLISH_RETRY_SECONDS`` (the slow poll covers those changes), so an unreachable Redis
costs a write nothing and a hung one cannot pile up waiting publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sqlalchemy import select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.engine import read_transaction
from schema.tables import databases

log = logging.getLogger("gateway.notifier")
CHANNEL_PREFIX = "gateway:db:"
ANY = "*"  # the event of "any database changed" (no database can be named "*")
PUBLISH_TIMEOUT_SECONDS = 1.0  # connect and reply timeout of one publish
PUBLISH_RETRY_SECONDS = 5.0  # after a failed publish, publishing pauses this long


class FeedNotifier:
    """Per-database wake-up events, optionally relayed through Redis pub/sub."""

    def __init__(self, redis_url: str | None = None, poll_seconds: float = 5.0) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._floors: dict[str, int] = {}  # the lowest position a waiting listener has seen
        self._redis_url = redis_url
        self._redis = None  # the subscription's client
        self._publisher = None  # short timeouts, no retries: publishing is best effort
        self._publishing: set[asyncio.Task[None]] = set()
        self._paused_until: float | None = None  # set while publishing fails
        self._task: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._poll_seconds = poll_seconds
        self.polls = 0  # slow-poll queries run (for tests and metrics)
        self.stopping = False  # the server is shutting down: feeds end instead of waiting
        self.subscribed = asyncio.Event()  # set while the Redis relay is subscribed
        self._engine: AsyncEngine | None = None
        self._pubsub: Any = None  # the relay's subscription (redis.asyncio PubSub)

    def current(self, db: str) -> asyncio.Event:
        """Return the event the next change to ``db`` (``ANY``: to any database) will set."""
        event = self._events.get(db)
        if event is None:
            event = self._events[db] = asyncio.Event()
            if self.stopping:
                event.set()
        return event

    def floor(self, db: str, seen: int) -> None:
        """Record that a listener about to wait on ``db`` has seen up to ``seen`` (its
        ``update_seq``; for ``ANY``, the server-wide change number)."""
        known = self._floors.get(db)
        self._floors[db] = seen if known is None else min(known, seen)

    def _wake(self, db: str) -> None:
        for key in (db, ANY):
            self._floors.pop(key, None)
            event = self._events.pop(key, None)
            if event is not None:
                event.set()

    async def notify(self, db: str) -> None:
        """Wake local listeners of ``db`` and publish the change to other instances (in the
        background: the caller never waits for Redis)."""
        self._wake(db)
        paused = self._paused_until is not None and time.monotonic() < self._paused_until
        if self._publisher is not None and not paused:
            task = asyncio.create_task(self._publish(db))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

    async def _publish(self, db: str) -> None:
        assert self._publisher is not None
        try:
            await self._publisher.publish(CHANNEL_PREFIX + db, b"1")
        except Exception as exc:  # Redis down or hung: local wake-ups and polling still work
            if self._paused_until is None:
                log.warning("redis publish failed (%s); other instances poll meanwhile", exc)
            self._paused_until = time.monotonic() + PUBLISH_RETRY_SECONDS
            return
        if self._paused_until is not None:
            log.warning("redis publish works again")
            self._paused_until = None

    async def start(self, engine: AsyncEngine | None = None) -> None:
        """Start the slow poll over ``engine`` and, with Redis configured, relay its messages."""
        self._engine = engine
        if engine is not None:
            self._poller = asyncio.create_task(self._poll(engine))
        if not self._redis_url:
            return
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(self._redis_url)
        self._publisher = _publishing_client(self._redis_url)
        self._task = asyncio.create_task(self._relay())

    async def _poll(self, engine: AsyncEngine) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            floors = dict(self._floors)
            if not floors:
                continue  # nobody waits: no query
            try:
                await self._check(engine, floors)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: listeners wait on
                log.warning("feed poll failed: %s", exc)

    async def _check(self, engine: AsyncEngine, floors: dict[str, int]) -> None:
        names = [name for name in floors if name != ANY]
        self.polls += 1
        async with read_transaction(engine) as conn:
            rows = (
                await conn.execute(
                    select(databases.c.name, databases.c.update_seq, databases.c.change_seq).where(
                        databases.c.name.in_(names) if ANY not in floors else true()
                    )
                )
            ).all()
        found = {name: seq for name, seq, _ in rows}
        for name in names:
            if name not in found or found[name] > floors[name]:
                self._wake(name)  # moved on (or was deleted: its listeners end)
        if ANY in floors and max((change for _, _, change in rows), default=0) > floors[ANY]:
            self._wake(ANY)

    async def _relay(self) -> None:
        assert self._redis is not None
        while True:
            try:
                pubsub = self._pubsub = self._redis.pubsub()
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                self.subscribed.set()
                await self._catch_up()
                async for message in pubsub.listen():
                    if message.get("type") == "pmessage":
                        channel = message["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        self._wake(channel[len(CHANNEL_PREFIX) :])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                log.warning("redis subscription lost (%s); retrying", exc)
                await self._drop_subscription()
                await asyncio.sleep(1.0)

    async def _drop_subscription(self) -> None:
        """Give the lost subscription's connection back to the pool (a ``PubSub`` keeps it
        checked out until closed: without this, every loss would leave one behind)."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _catch_up(self) -> None:
        """Just (re)subscribed: what other instances published while this one was not
        subscribed is lost, so check the waited-on databases now rather than at the next
        slow poll — one query, and only listeners whose database moved wake."""
        floors = dict(self._floors)
        if self._engine is None or not floors:
            return
        try:
            await self._check(self._engine, floors)
        except Exception as exc:  # the database is away: the slow poll retries
            log.warning("feed catch-up after subscribing failed: %s", exc)

    def stop_listeners(self) -> None:
        """The server is shutting down (``on_shutdown``, after it stopped accepting): wake
        every waiting feed, which then ends its answer as at its timeout (a longpoll with
        what it has, a continuous feed with ``last_seq``), so clients reconnect to another
        instance at once and the shutdown does not wait for feeds to time out."""
        self.stopping = True
        for event in self._events.values():
            event.set()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            await self._drop_subscription()
        for task in list(self._publishing):
            task.cancel()
        await asyncio.gather(*self._publishing, return_exceptions=True)
        for client in (self._redis, self._publisher):
            if client is not None:
                await client.aclose()


def _publishing_client(redis_url: str):  # type: ignore[no-untyped-def]
    """A Redis client for publishing: a dead or hung Redis costs at most the timeout."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return aioredis.from_url(
        redis_url,
        socket_connect_timeout=PUBLISH_TIMEOUT_SECONDS,
        socket_timeout=PUBLISH_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )


async def publish_once(redis_url: str, db: str) -> None:
    """Wake every instance's listeners of ``db`` from outside a server (the CLI); without
    Redis they catch up at their next slow poll."""
    client = _publishing_client(redis_url)
    try:
        await client.publish(CHANNEL_PREFIX + db, b"1")
    except Exception as exc:
        log.warning("redis publish failed: %s", exc)
    finally:
        await client.aclose()
