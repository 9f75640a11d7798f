"""The rate limiter itself (``gateway.ratelimit``): window math, key cap, Redis backend."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway import ratelimit
from gateway.app import redis_client
from gateway.ratelimit import (
    Decision,
    MemoryLimiter,
    RedisLimiter,
    Rule,
    client_address,
    key_part,
)
from tests.helpers import FakeClock

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(clock: FakeClock) -> MemoryLimiter:
    return MemoryLimiter(clock=clock)


async def test_a_key_allows_limit_events_per_window_then_says_when(
    memory: MemoryLimiter, clock: FakeClock
) -> None:
    assert [await memory.hit("k", 3, 10) for _ in range(3)] == [
        Decision(True, 0, 2),
        Decision(True, 0, 1),
        Decision(True, 0, 0),
    ]
    assert await memory.hit("k", 3, 10) == Decision(False, 10, 0)
    clock.now += 4.5
    assert await memory.hit("k", 3, 10) == Decision(False, 6, 0)  # rounded up
    assert await memory.check("k", 3, 10) == Decision(False, 6, 0)
    clock.now += 5.4
    assert (await memory.hit("k", 3, 10)).retry_after == 1  # never 0 while refused
    clock.now += 0.1  # the window opened with the first event and has now closed
    assert await memory.hit("k", 3, 10) == Decision(True, 0, 2)


async def test_refused_events_neither_count_nor_extend_the_window(
    memory: MemoryLimiter, clock: FakeClock
) -> None:
    await memory.hit("k", 1, 10)
    for _ in range(5):
        clock.now += 1
        assert not (await memory.hit("k", 1, 10)).allowed
    clock.now += 5
    assert await memory.hit("k", 1, 10) == Decision(True, 0, 0)


async def test_check_counts_nothing_and_stores_nothing(memory: MemoryLimiter) -> None:
    assert await memory.check("probe", 2, 10) == Decision(True, 0, 2)
    assert len(memory) == 0
    await memory.hit("probe", 2, 10)
    assert await memory.check("probe", 2, 10) == Decision(True, 0, 1)
    assert await memory.check("probe", 2, 10) == Decision(True, 0, 1)


async def test_acquire_counts_under_every_key_or_none(
    memory: MemoryLimiter, clock: FakeClock
) -> None:
    user, addr = Rule("user", 2, 100), Rule("addr", 5, 10)
    assert await memory.acquire([user, addr]) == Decision(True, 0, 1)
    assert await memory.acquire([user, addr]) == Decision(True, 0, 0)
    assert await memory.acquire([user, addr]) == Decision(False, 100, 0)
    assert await memory.check("addr", 5, 10) == Decision(True, 0, 3)  # not counted
    await memory.hit("addr", 5, 10)
    await memory.hit("addr", 5, 10)
    await memory.hit("addr", 5, 10)
    clock.now += 1  # both full: wait for the later of the two
    assert await memory.acquire([addr, user]) == Decision(False, 99, 0)
    assert await memory.acquire([]) == Decision(True, 0, 0)


async def test_refund_takes_back_one_event_and_drops_an_empty_window(
    memory: MemoryLimiter,
) -> None:
    await memory.hit("k", 2, 10)
    await memory.hit("k", 2, 10)
    await memory.refund(["k", "unknown"])
    assert await memory.check("k", 2, 10) == Decision(True, 0, 1)
    assert len(memory) == 1
    await memory.refund(["k"])
    assert len(memory) == 0
    await memory.refund(["k"])
    assert await memory.check("k", 2, 10) == Decision(True, 0, 2)


async def test_reset_forgets_a_key(memory: MemoryLimiter) -> None:
    await memory.hit("k", 1, 10)
    await memory.reset("k")
    await memory.reset("never-seen")
    assert await memory.hit("k", 1, 10) == Decision(True, 0, 0)


async def test_the_key_cap_evicts_the_least_recently_used_window(clock: FakeClock) -> None:
    limiter = MemoryLimiter(max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        await limiter.hit(key, 1, 10)
    await limiter.check("a", 1, 10)  # a is used again: b is now the oldest
    await limiter.hit("d", 1, 10)
    assert len(limiter) == 3
    assert (await limiter.check("b", 1, 10)).allowed  # evicted, so counting anew
    for key in ("a", "c", "d"):
        assert not (await limiter.check(key, 1, 10)).allowed


async def test_a_flood_of_keys_stays_within_the_cap(clock: FakeClock) -> None:
    limiter = MemoryLimiter(max_keys=100, clock=clock)
    for i in range(1000):
        await limiter.hit(f"flood-{i}", 1, 10)
    assert len(limiter) == 100


async def test_closed_windows_are_dropped_when_seen(
    memory: MemoryLimiter, clock: FakeClock
) -> None:
    await memory.hit("k", 1, 10)
    clock.now += 10
    assert await memory.check("k", 1, 10) == Decision(True, 0, 1)
    assert len(memory) == 0


def test_a_rule_needs_a_positive_limit_and_window() -> None:
    for limit, window in ((0, 10), (1, 0), (-1, 10)):
        with pytest.raises(ValueError):
            Rule("k", limit, window)


def test_long_key_parts_become_fixed_length_digests() -> None:
    assert key_part("alice") == "alice"
    long = key_part("x" * 10_000)
    assert long.startswith("#") and len(long) == 65
    assert long != key_part("x" * 10_001)


def _request(peer: str | None, headers: dict[str, str] | None = None) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 1234) if peer else None
    return make_mocked_request("GET", "/", headers=headers or {}, transport=transport)


def test_the_client_address_is_the_peer_unless_a_proxy_is_trusted() -> None:
    forwarded = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
    assert client_address(_request("10.0.0.1", forwarded)) == "10.0.0.1"
    assert client_address(_request("10.0.0.1", forwarded), trust_proxy=True) == "203.0.113.7"
    assert client_address(_request("10.0.0.1"), trust_proxy=True) == "10.0.0.1"
    assert client_address(_request(None)) == "unknown"


def test_ipv6_clients_are_grouped_by_their_64() -> None:
    assert client_address(_request("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert client_address(_request("2001:db8:1:2:bbbb::9")) == "2001:db8:1:2::/64"
    assert client_address(_request("::ffff:192.0.2.1")) == "192.0.2.1"
    junk = {"X-Forwarded-For": "not-an-address" * 20}
    assert client_address(_request("10.0.0.1", junk), trust_proxy=True).startswith("#")


# --- Redis backend (real Redis at 127.0.0.1:6379, a unique prefix per test) ---------------


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    client = redis_client(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Any) -> AsyncIterator[str]:
    prefix = f"gw:rl:test:{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis.scan_iter(match=prefix + "*")]
    if keys:
        await redis.delete(*keys)


async def test_redis_counts_match_the_in_process_ones(redis: Any, prefix: str) -> None:
    limiter = RedisLimiter(redis, prefix=prefix)
    assert [(await limiter.hit("k", 2, 60)).allowed for _ in range(3)] == [True, True, False]
    refused = await limiter.hit("k", 2, 60)
    assert not refused.allowed and 59 <= refused.retry_after <= 60
    assert int(await redis.get(prefix + "k")) == 2  # refused events are not counted
    assert 0 < await redis.ttl(prefix + "k") <= 60
    assert (await limiter.check("k", 2, 60)).allowed is False
    assert await limiter.check("other", 2, 60) == Decision(True, 0, 2)
    await limiter.refund(["k"])
    assert await limiter.check("k", 2, 60) == Decision(True, 0, 1)
    await limiter.reset("k")
    assert await redis.exists(prefix + "k") == 0
    await limiter.hit("k", 2, 60)
    await limiter.refund(["k", "never-seen"])
    assert await redis.exists(prefix + "k", prefix + "never-seen") == 0


async def test_redis_acquire_is_all_or_nothing(redis: Any, prefix: str) -> None:
    limiter = RedisLimiter(redis, prefix=prefix)
    user, addr = Rule("user", 1, 60), Rule("addr", 5, 30)
    assert await limiter.acquire([user, addr]) == Decision(True, 0, 0)
    refused = await limiter.acquire([user, addr])
    assert not refused.allowed and 59 <= refused.retry_after <= 60  # a second may pass
    assert int(await redis.get(prefix + "addr")) == 1


async def test_two_redis_limiters_share_their_counts(redis: Any, prefix: str) -> None:
    first, second = RedisLimiter(redis, prefix=prefix), RedisLimiter(redis, prefix=prefix)
    await first.hit("k", 2, 60)
    await second.hit("k", 2, 60)
    assert not (await first.check("k", 2, 60)).allowed


async def test_without_redis_the_limiter_counts_in_process_and_warns_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_client("redis://127.0.0.1:1/0")  # nothing listens there
    limiter = RedisLimiter(client, prefix="gw:rl:unused:", clock=clock)
    with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
        decisions = [await limiter.hit("k", 2, 60) for _ in range(3)]
        clock.now += ratelimit.RETRY_SECONDS + 1  # tries Redis again, still down
        await limiter.check("k", 2, 60)
        await limiter.refund(["k"])
        await limiter.reset("k")
    await client.aclose()
    assert [d.allowed for d in decisions] == [True, True, False]
    warnings = [r for r in caplog.records if r.name == "gateway.ratelimit"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()


async def test_the_limiter_goes_back_to_redis_when_it_answers_again(
    redis: Any, prefix: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RedisLimiter(redis, prefix=prefix, clock=clock)
    real = limiter._acquire
    from redis.exceptions import ConnectionError as RedisConnectionError

    limiter._acquire = mock.AsyncMock(side_effect=RedisConnectionError("down"))  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
        assert (await limiter.hit("k", 5, 60)).allowed  # counted in process
        limiter._acquire = real  # type: ignore[method-assign]
        await limiter.hit("k", 5, 60)  # still within the retry pause: in process
        assert await redis.exists(prefix + "k") == 0
        clock.now += ratelimit.RETRY_SECONDS
        await limiter.hit("k", 5, 60)
    assert int(await redis.get(prefix + "k")) == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.ratelimit"]
    assert len(messages) == 2 and "again" in messages[1]
