"""A cache of rendered responses (JSON body + ETag), in Redis when configured, else in process.

Keys are chosen by the caller so that a change of the underlying data changes the key
(``gateway.handlers.templates`` puts the database's ``update_seq`` in every key): entries are
never invalidated, they stop being asked for and expire after their TTL.  The cache is only
ever a cache: a miss, a flushed Redis or an unreachable one all mean "read the database".

Two backends, chosen per application by ``response_cache(app)``:

- ``MemoryCache``, the embedded default (no Redis configured): least recently used entries
  are evicted first once ``max_bytes`` of bodies are held; entries expire after their TTL
  (the clock is injectable).  Per process.
- ``RedisCache`` (``GATEWAY_REDIS_URL`` set): ``SET key value EX ttl`` / ``GET key`` under
  ``gw:`` on the shared client (short timeouts, see ``gateway.app.redis_client``), shared by
  every instance.  On a Redis error or timeout it logs one warning per outage and answers
  "miss" (and stores nothing) for ``RETRY_SECONDS`` before trying Redis again, so a request
  never fails, nor waits a timeout each time, because of the cache.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from gateway.keys import REDIS

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("gateway.cache")

KEY_PREFIX = "gw:"
RETRY_SECONDS = 5.0
MAX_ENTRY_BYTES = 1 << 20  # larger responses are not cached
MAX_MEMORY_BYTES = 32 << 20

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A rendered response: its ETag (quoted, as sent) and its body."""

    etag: str
    body: bytes

    def encode(self) -> bytes:
        """One value for a byte store: the ETag, a newline, the body."""
        return self.etag.encode("ascii") + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> CachedResponse | None:
        """The response ``encode`` made (None for anything else)."""
        etag, sep, body = raw.partition(b"\n")
        if not sep:
            return None
        try:
            return cls(etag.decode("ascii"), body)
        except UnicodeDecodeError:
            return None


class ResponseCache(Protocol):
    """What both backends offer (see the module docstring)."""

    async def get(self, key: str) -> CachedResponse | None: ...

    async def set(self, key: str, value: CachedResponse, ttl: int) -> None: ...


@dataclass(slots=True)
class _Entry:
    value: CachedResponse
    expires: float


class MemoryCache:
    """In-process entries, at most ``max_bytes`` of bodies (least recently used evicted)."""

    def __init__(self, max_bytes: int = MAX_MEMORY_BYTES, clock: Clock = time.monotonic) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes
        self.clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedResponse | None:
        """The live entry under ``key`` (marked recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    async def set(self, key: str, value: CachedResponse, ttl: int) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds (too large ones are not kept)."""
        self._drop(key)
        size = len(value.body)
        if size > MAX_ENTRY_BYTES or size > self.max_bytes:
            return
        self._entries[key] = _Entry(value, self.clock() + ttl)
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.value.body)


class RedisCache:
    """Entries in Redis, shared by every instance; a miss while Redis is unreachable."""

    def __init__(
        self, redis: Redis, prefix: str | None = None, clock: Clock = time.monotonic
    ) -> None:
        self._redis = redis
        self.prefix = KEY_PREFIX if prefix is None else prefix
        self.clock = clock
        self._down_until: float | None = None  # set while Redis is considered unreachable

    def _skipping(self) -> bool:
        return self._down_until is not None and self.clock() < self._down_until

    def _failed(self, exc: Exception) -> None:
        if self._down_until is None:
            log.warning("redis unreachable, responses are not cached for now: %s", exc)
        self._down_until = self.clock() + RETRY_SECONDS

    def _answered(self) -> None:
        if self._down_until is not None:
            log.warning("redis reachable again, responses are cached again")
            self._down_until = None

    async def get(self, key: str) -> CachedResponse | None:
        """The entry under ``key``, or None (a miss, or Redis unreachable)."""
        from redis.exceptions import RedisError

        if self._skipping():
            return None
        try:
            raw = await self._redis.get(self.prefix + key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._answered()
        return CachedResponse.decode(raw) if isinstance(raw, bytes) else None

    async def set(self, key: str, value: CachedResponse, ttl: int) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds (nothing while Redis is down)."""
        from redis.exceptions import RedisError

        if self._skipping() or len(value.body) > MAX_ENTRY_BYTES:
            return
        try:
            await self._redis.set(self.prefix + key, value.encode(), ex=max(1, ttl))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._answered()


def make_cache(redis: Redis | None) -> ResponseCache:
    """The Redis cache when a client is configured, else the in-process one."""
    if redis is None:
        return MemoryCache()
    return RedisCache(redis)


_CACHES: weakref.WeakKeyDictionary[web.Application, ResponseCache] = weakref.WeakKeyDictionary()


def response_cache(app: web.Application) -> ResponseCache:
    """The application's cache, made on first use from its shared Redis client."""
    cache = _CACHES.get(app)
    if cache is None:
        cache = _CACHES[app] = make_cache(app[REDIS])
    return cache
