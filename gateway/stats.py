"""Documents in and out per minute, for the dashboard's sync-activity chart.

* **in**: documents written — every row of a write batch that succeeded (``_bulk_docs`` in
  both ``new_edits`` modes, ``PUT``/``DELETE``/``POST`` of a document, the REST API), counted
  in ``gateway.dbctx.write_edits``.
* **out**: documents served to replicating clients — the revisions ``_bulk_get`` returns and
  the rows of ``_changes?include_docs=true``.  Plain ``_changes`` rows are change
  notifications (ids and revs, no bodies) and are not counted: a PouchDB pull shows up once,
  through the ``_bulk_get`` that fetches the bodies.

Counting is synchronous and cheap (a dict update): hooks never wait on I/O.  Every instance
keeps its own counts in process, for the last ``RETENTION_MINUTES`` minutes.  With Redis
configured (``app[REDIS]``) the counts are also added to shared per-minute keys
``gw:stats:{in|out}:{epoch_minute}`` (INCRBY + EXPIRE ``TTL_SECONDS``) by a background flush
(one pipeline per burst, never on the request path), and reads sum every instance's counts
from there.  When Redis fails, the flush drops that batch (the counts never overstate) and
logs one warning per outage; reads then answer with this instance's own counts, trying
Redis again at most every ``RETRY_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.keys import REDIS

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("gateway.stats")

KEY_PREFIX = "gw:stats:"
KINDS = ("in", "out")
MAX_MINUTES = 180  # the longest window a read may ask for
RETENTION_MINUTES = MAX_MINUTES  # kept in process
TTL_SECONDS = 4 * 3600  # Redis keys outlive the longest window
RETRY_SECONDS = 5.0
SHUTDOWN_FLUSH_SECONDS = 2.0

Clock = Callable[[], float]


class ActivityStats:
    """Per-minute "in" and "out" document counts, in process and optionally in Redis."""

    def __init__(
        self, redis: Redis | None, *, clock: Clock = time.time, prefix: str = KEY_PREFIX
    ) -> None:
        self._redis = redis
        self.clock = clock
        self.prefix = prefix
        self._local: dict[tuple[str, int], int] = {}  # (kind, epoch minute) -> count
        self._pending: dict[tuple[str, int], int] = {}  # counted here, not yet in Redis
        self._flushing: asyncio.Task[None] | None = None
        self._down_until: float | None = None  # set while Redis is considered unreachable
        self._pruned_at = 0  # the minute of the last prune

    def minute(self) -> int:
        return int(self.clock() // 60)

    def count(self, kind: str, n: int) -> None:
        """Add ``n`` documents to ``kind`` ("in" or "out") in the current minute."""
        if n <= 0:
            return
        if kind not in KINDS:
            raise ValueError(f"unknown stats kind {kind!r}")
        minute = self.minute()
        key = (kind, minute)
        self._local[key] = self._local.get(key, 0) + n
        if minute != self._pruned_at:
            self._prune(minute)
        if self._redis is not None:
            self._pending[key] = self._pending.get(key, 0) + n
            self._schedule_flush()

    def _prune(self, minute: int) -> None:
        oldest = minute - RETENTION_MINUTES
        for table in (self._local, self._pending):
            for key in [k for k in table if k[1] <= oldest]:
                del table[key]
        self._pruned_at = minute

    def _schedule_flush(self) -> None:
        if self._flushing is not None and not self._flushing.done():
            return  # the running flush loops until nothing is pending
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the next read flushes
            return
        self._flushing = loop.create_task(self._flush())

    def _redis_usable(self) -> bool:
        return self._redis is not None and (
            self._down_until is None or time.monotonic() >= self._down_until
        )

    def _redis_failed(self, exc: BaseException) -> None:
        if self._down_until is None:
            log.warning("redis unreachable, activity stats count in process for now: %s", exc)
        self._down_until = time.monotonic() + RETRY_SECONDS

    def _redis_ok(self) -> None:
        if self._down_until is not None:
            log.warning("redis reachable again, activity stats are shared again")
            self._down_until = None

    async def _flush(self) -> None:
        """Send the pending counts to Redis (loops until none are left or Redis fails)."""
        from redis.exceptions import RedisError

        while self._pending and self._redis is not None:
            batch, self._pending = self._pending, {}
            if not self._redis_usable():
                return  # dropped: this instance's own counts still have them
            pipe = self._redis.pipeline(transaction=False)
            for (kind, minute), n in batch.items():
                key = f"{self.prefix}{kind}:{minute}"
                pipe.incrby(key, n)
                pipe.expire(key, TTL_SECONDS)
            try:
                await pipe.execute()
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                return
            self._redis_ok()

    async def drain(self) -> None:
        """Wait until every count made so far has been sent to Redis (or dropped)."""
        running = self._flushing
        if running is not None and not running.done():
            await asyncio.shield(running)
        await self._flush()

    async def close(self) -> None:
        """Flush what is pending (bounded), on application shutdown."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), SHUTDOWN_FLUSH_SECONDS)
        if self._flushing is not None and not self._flushing.done():
            self._flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flushing

    async def minutes(self, count: int) -> list[dict[str, Any]]:
        """The last ``count`` minutes, oldest first, the current one last:
        ``[{"at": ISO minute, "in": n, "out": n}, ...]`` (every instance's counts with Redis)."""
        count = max(1, min(count, MAX_MINUTES))
        now = self.minute()
        span = range(now - count + 1, now + 1)
        counts = await self._shared(span) if self._redis_usable() else None
        if counts is None:
            counts = self._local
        return [
            {
                "at": datetime.fromtimestamp(m * 60, UTC).isoformat(),
                "in": counts.get(("in", m), 0),
                "out": counts.get(("out", m), 0),
            }
            for m in span
        ]

    async def _shared(self, span: range) -> dict[tuple[str, int], int] | None:
        from redis.exceptions import RedisError

        assert self._redis is not None
        await self.drain()
        keys = [(kind, m) for kind in KINDS for m in span]
        try:
            values = await self._redis.mget([f"{self.prefix}{k}:{m}" for k, m in keys])
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return None
        self._redis_ok()
        return {key: int(v) for key, v in zip(keys, values, strict=True) if v is not None}


STATS: web.AppKey[ActivityStats] = web.AppKey("activity_stats", ActivityStats)


def setup_stats(app: web.Application) -> None:
    """Give ``app`` its counters (call once ``app[REDIS]`` is set); flushed on shutdown."""
    stats = ActivityStats(app.get(REDIS))
    app[STATS] = stats

    async def close(_: web.Application) -> None:  # on_shutdown runs before Redis is closed
        await stats.close()

    app.on_shutdown.append(close)


def count_in(app: web.Application, n: int) -> None:
    """Count ``n`` documents written (no-op for an app without stats)."""
    stats = app.get(STATS)
    if stats is not None and n > 0:
        stats.count("in", n)


def count_out(app: web.Application, n: int) -> None:
    """Count ``n`` documents served (no-op for an app without stats)."""
    stats = app.get(STATS)
    if stats is not None and n > 0:
        stats.count("out", n)
