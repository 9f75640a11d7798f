"""Fixed-window rate limits, kept in process or shared through Redis.

A window opens with the first event counted under a key and lasts ``window`` seconds; a key
allows ``limit`` events per window.  ``acquire(rules)`` counts one event under every rule's
key, atomically and only if *all* of them are under their limit (so concurrent requests
cannot all slip past a check before any of them is counted); ``hit`` is ``acquire`` for one
key; ``check`` asks without counting; ``refund`` takes back one event (a login that turned
out to be good); ``reset`` forgets a key.  Refused events are not counted and do not extend
the window.  Every call returns a ``Decision(allowed, retry_after, remaining)``.

Two backends, chosen at app start by ``make_limiter``:

- ``MemoryLimiter``, the embedded default (no Redis configured): a dict of windows bounded
  to ``max_keys`` (100 000) entries, least recently used evicted first, so a flood of keys
  costs old counts rather than memory.  Counts are per process.  Its clock is injectable.
- ``RedisLimiter`` (``GATEWAY_REDIS_URL`` set): each call is one Lua script, one round trip
  (INCR + PEXPIRE run atomically), keys ``gw:rl:<key>``; every instance shares the counts.
  Multi-key scripts need one Redis node (not Redis Cluster).

When Redis is unreachable the limiter never turns a request into a 500: it logs one warning
per outage and counts in process (per instance, as the embedded default does) until Redis
answers again, trying it at most every ``RETRY_SECONDS``.  It fails *to memory* rather than
fully open, so knocking Redis over does not also lift the login limits.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("gateway.ratelimit")

KEY_PREFIX = "gw:rl:"
MAX_KEYS = 100_000
MAX_KEY_PART = 64  # longer key parts (names, addresses) are hashed
RETRY_SECONDS = 5.0
IPV6_PREFIX = 64  # one IPv6 client usually owns a whole /64

Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rule:
    """``limit`` events per ``window`` seconds under ``key``."""

    key: str
    limit: int
    window: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window < 1:
            raise ValueError("a rate limit needs limit >= 1 and window >= 1 second")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: allowed or not, seconds until it would be, events left in the window."""

    allowed: bool
    retry_after: int
    remaining: int


ALLOWED_EMPTY = Decision(True, 0, 0)


class RateLimiter(Protocol):
    """What both backends offer (see the module docstring)."""

    async def acquire(self, rules: Sequence[Rule]) -> Decision: ...

    async def hit(self, key: str, limit: int, window: int) -> Decision: ...

    async def check(self, key: str, limit: int, window: int) -> Decision: ...

    async def refund(self, keys: Sequence[str]) -> None: ...

    async def reset(self, key: str) -> None: ...


def _wait_seconds(seconds: float) -> int:
    """Whole seconds to wait (at least 1) for ``seconds`` still to run."""
    return max(1, math.ceil(seconds))


def key_part(value: str) -> str:
    """``value`` made safe to use in a key: long values become a digest of fixed length."""
    if len(value) <= MAX_KEY_PART:
        return value
    return "#" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def client_address(request: web.Request, trust_proxy: bool = False) -> str:
    """The client's address for rate limits: IPv4, or the IPv6 /64 it belongs to.

    With ``trust_proxy`` the last ``X-Forwarded-For`` entry wins (the one the proxy in front
    appended; entries to its left are whatever the client sent), else the peer address.
    """
    address = request.remote or ""
    if trust_proxy:
        hops = [
            h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",")
        ]
        hops = [h for h in hops if h]
        if hops:
            address = hops[-1]
    return _address_bucket(address) if address else "unknown"


def _address_bucket(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return key_part(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Window:
    count: int
    ends: float


class MemoryLimiter:
    """In-process windows, at most ``max_keys`` of them (least recently used evicted)."""

    def __init__(self, max_keys: int = MAX_KEYS, clock: Clock = time.monotonic) -> None:
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self.max_keys = max_keys
        self.clock = clock

    def __len__(self) -> int:
        return len(self._windows)

    def _live(self, key: str, now: float) -> _Window | None:
        """The open window of ``key`` (marked recently used), dropping a closed one."""
        window = self._windows.get(key)
        if window is None:
            return None
        if window.ends <= now:
            del self._windows[key]
            return None
        self._windows.move_to_end(key)
        return window

    def _open(self, key: str, rule: Rule, now: float) -> _Window:
        window = self._windows[key] = _Window(0, now + rule.window)
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
        return window

    async def acquire(self, rules: Sequence[Rule]) -> Decision:
        """Count one event under every rule's key if all are under their limit."""
        if not rules:
            return ALLOWED_EMPTY
        now = self.clock()
        windows = [self._live(rule.key, now) for rule in rules]
        waits = [
            w.ends - now for w, r in zip(windows, rules, strict=True) if w and w.count >= r.limit
        ]
        if waits:
            return Decision(False, _wait_seconds(max(waits)), 0)
        remaining = []
        for window, rule in zip(windows, rules, strict=True):
            window = window or self._open(rule.key, rule, now)
            window.count += 1
            remaining.append(rule.limit - window.count)
        return Decision(True, 0, min(remaining))

    async def hit(self, key: str, limit: int, window: int) -> Decision:
        """Count one event under ``key`` if it is under ``limit``."""
        return await self.acquire([Rule(key, limit, window)])

    async def check(self, key: str, limit: int, window: int) -> Decision:
        """Whether one more event would be allowed, without counting it."""
        rule = Rule(key, limit, window)
        now = self.clock()
        live = self._live(rule.key, now)
        count = live.count if live else 0
        if live and count >= rule.limit:
            return Decision(False, _wait_seconds(live.ends - now), 0)
        return Decision(True, 0, rule.limit - count)

    async def refund(self, keys: Sequence[str]) -> None:
        """Take back one event under each key (a window back at zero is dropped)."""
        now = self.clock()
        for key in keys:
            window = self._live(key, now)
            if window and window.count > 1:
                window.count -= 1
            elif window:
                del self._windows[key]

    async def reset(self, key: str) -> None:
        """Forget ``key``."""
        self._windows.pop(key, None)


# KEYS: the keys; ARGV: limit and window (ms) of each key in turn.
# Returns {allowed (0|1), wait_ms, remaining}.
_ACQUIRE_LUA = """
local wait = 0
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[2 * i - 1]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      ttl = tonumber(ARGV[2 * i])
      redis.call('PEXPIRE', key, ttl)
    end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return {0, wait, 0} end
local remaining = nil
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[2 * i]) end
  local left = tonumber(ARGV[2 * i - 1]) - count
  if remaining == nil or left < remaining then remaining = left end
end
return {1, 0, remaining}
"""

# KEYS: one key. Returns {count, ttl_ms}.
_CHECK_LUA = """
return {tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('PTTL', KEYS[1])}
"""

# A window back at zero events is the same as none: drop it.
_REFUND_LUA = """
for _, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count > 1 then redis.call('DECR', key) else redis.call('DEL', key) end
end
return 0
"""


class RedisLimiter:
    """Windows in Redis, shared by every instance; in process while Redis is unreachable."""

    def __init__(
        self,
        redis: Redis,
        prefix: str | None = None,
        clock: Clock = time.monotonic,
        fallback: MemoryLimiter | None = None,
    ) -> None:
        self._redis = redis
        self.prefix = KEY_PREFIX if prefix is None else prefix
        self.clock = clock
        self.fallback = fallback if fallback is not None else MemoryLimiter(clock=clock)
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._check = redis.register_script(_CHECK_LUA)
        self._refund = redis.register_script(_REFUND_LUA)
        self._down_until: float | None = None  # set while Redis is considered unreachable

    async def _call(
        self, op: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        """Run ``op`` against Redis, or ``fallback`` in process while Redis is unreachable."""
        from redis.exceptions import RedisError

        if self._down_until is not None and self.clock() < self._down_until:
            return await fallback()
        try:
            result = await op()
        except (RedisError, OSError) as exc:
            if self._down_until is None:
                log.warning("redis unreachable, rate limits count in process for now: %s", exc)
            self._down_until = self.clock() + RETRY_SECONDS
            return await fallback()
        if self._down_until is not None:
            log.warning("redis reachable again, rate limits are shared again")
            self._down_until = None
        return result

    async def acquire(self, rules: Sequence[Rule]) -> Decision:
        """Count one event under every rule's key if all are under their limit."""
        if not rules:
            return ALLOWED_EMPTY

        async def op() -> Decision:
            args: list[Any] = []
            for rule in rules:
                args += [rule.limit, rule.window * 1000]
            keys = [self.prefix + rule.key for rule in rules]
            allowed, wait_ms, remaining = await self._acquire(keys=keys, args=args)
            if allowed:
                return Decision(True, 0, int(remaining))
            return Decision(False, _wait_seconds(int(wait_ms) / 1000), 0)

        return await self._call(op, lambda: self.fallback.acquire(rules))

    async def hit(self, key: str, limit: int, window: int) -> Decision:
        """Count one event under ``key`` if it is under ``limit``."""
        return await self.acquire([Rule(key, limit, window)])

    async def check(self, key: str, limit: int, window: int) -> Decision:
        """Whether one more event would be allowed, without counting it."""
        rule = Rule(key, limit, window)

        async def op() -> Decision:
            count, ttl_ms = await self._check(keys=[self.prefix + key])
            count = int(count)
            if count >= rule.limit:
                ttl = int(ttl_ms) / 1000 if int(ttl_ms) > 0 else rule.window
                return Decision(False, _wait_seconds(ttl), 0)
            return Decision(True, 0, rule.limit - count)

        return await self._call(op, lambda: self.fallback.check(key, limit, window))

    async def refund(self, keys: Sequence[str]) -> None:
        """Take back one event under each key (a window back at zero is dropped)."""
        if not keys:
            return

        async def op() -> None:
            await self._refund(keys=[self.prefix + key for key in keys])

        await self._call(op, lambda: self.fallback.refund(keys))

    async def reset(self, key: str) -> None:
        """Forget ``key`` (in Redis and in the in-process fallback)."""

        async def op() -> None:
            await self._redis.delete(self.prefix + key)

        await self.fallback.reset(key)
        await self._call(op, _nothing)


async def _nothing() -> None:
    return None


def make_limiter(redis: Redis | None) -> RateLimiter:
    """The Redis limiter when a client is configured, else the in-process one."""
    if redis is None:
        return MemoryLimiter()
    return RedisLimiter(redis)
