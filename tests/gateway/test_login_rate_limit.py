"""Failed logins are rate-limited per name and per address, on every password route."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import update

from gateway import ratelimit
from gateway.app import create_app, redis_client
from gateway.keys import ENGINE, RATE_LIMITER
from gateway.ratelimit import MemoryLimiter
from gateway.settings import Settings
from schema.tables import users
from tests.helpers import PASSWORD, FakeClock, basic, start_limited

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROUTES = ("basic", "session", "api")
WINDOW = 60
LOCKED = {
    "error": "too_many_requests",
    "reason": f"Too many failed login attempts; retry in {WINDOW} seconds.",
}

Result = tuple[int, Any, str | None]  # status, body, Retry-After
Start = Callable[..., Awaitable[Any]]


async def attempt(
    client: Any, route: str, name: str, password: str, address: str | None = None
) -> Result:
    """One login through ``route``; ``address`` goes out as X-Forwarded-For."""
    headers = {"X-Forwarded-For": address} if address else {}
    if route == "basic":
        headers["Authorization"] = basic(name, password)
        resp = await client.get("/_all_dbs", headers=headers)
    elif route == "session":
        body = {"name": name, "password": password}
        resp = await client.post("/_session", json=body, headers=headers)
    else:
        body = {"username": name, "password": password}
        resp = await client.post("/api/v1/auth/login", json=body, headers=headers)
    async with resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def fail(client: Any, route: str, name: str, times: int, address: str | None = None) -> None:
    """``times`` wrong passwords for ``name``, each refused with a plain 401."""
    for _ in range(times):
        status, body, _ = await attempt(client, route, name, "wrong", address)
        assert status == 401 and body["error"] == "unauthorized", body


LIMITS = {
    "login_max_failures_per_user": 3,
    "login_max_failures_per_address": 100,
    "login_failure_window_seconds": WINDOW,
}


def limited(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **{**LIMITS, **changes})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(aiohttp_client: Any, settings: Settings, engine: Any, clock: FakeClock) -> Start:
    """Start an app with small login limits and the fake clock (in-process limiter)."""

    async def start_app(**changes: Any) -> Any:
        return await start_limited(aiohttp_client, settings, clock, LIMITS, **changes)

    return start_app


@pytest.mark.parametrize("route", ROUTES)
async def test_a_name_is_locked_after_n_failures_even_for_the_right_password(
    start: Start, route: str
) -> None:
    client = await start()
    await fail(client, route, "alice", 3)
    assert await attempt(client, route, "alice", PASSWORD) == (429, LOCKED, str(WINDOW))
    assert await attempt(client, route, "alice", "wrong") == (429, LOCKED, str(WINDOW))


@pytest.mark.parametrize("route", ROUTES)
async def test_unknown_names_are_limited_exactly_like_known_ones(start: Start, route: str) -> None:
    client = await start()
    known = [await attempt(client, route, "alice", "wrong") for _ in range(5)]
    unknown = [await attempt(client, route, "zed", "wrong") for _ in range(5)]
    assert known == unknown
    assert [status for status, _, _ in known] == [401, 401, 401, 429, 429]


async def test_the_name_is_limited_whatever_its_case(start: Start) -> None:
    client = await start()
    await fail(client, "session", "ALICE", 2)
    await fail(client, "api", "Alice", 1)
    assert (await attempt(client, "basic", "alice", PASSWORD))[0] == 429


@pytest.mark.parametrize("route", ROUTES)
async def test_other_names_are_unaffected(start: Start, route: str) -> None:
    client = await start()
    await fail(client, route, "alice", 3)
    assert (await attempt(client, route, "bob", PASSWORD))[0] == 200
    await fail(client, route, "bob", 1)


@pytest.mark.parametrize("route", ROUTES)
async def test_an_address_is_locked_after_failures_across_many_names(
    start: Start, route: str
) -> None:
    client = await start(login_max_failures_per_address=5, trust_proxy=True)
    attacker, other = "203.0.113.7", "198.51.100.9"
    for i in range(5):
        await fail(client, route, f"user{i}", 1, address=attacker)
    assert await attempt(client, route, "bob", PASSWORD, attacker) == (429, LOCKED, str(WINDOW))
    assert (await attempt(client, route, "bob", PASSWORD, other))[0] == 200
    await fail(client, route, "someone", 1, address=other)


async def test_without_trust_proxy_x_forwarded_for_is_ignored(start: Start) -> None:
    client = await start(login_max_failures_per_address=3)
    for i in range(3):
        await fail(client, "session", f"user{i}", 1, address=f"192.0.2.{i}")
    assert (await attempt(client, "session", "bob", PASSWORD, "192.0.2.99"))[0] == 429


@pytest.mark.parametrize("route", ROUTES)
async def test_a_successful_login_does_not_count(start: Start, route: str) -> None:
    client = await start()
    await fail(client, route, "alice", 2)
    assert (await attempt(client, route, "alice", PASSWORD))[0] == 200
    await fail(client, route, "alice", 1)  # 3rd failure: a counted success would make it 429
    assert (await attempt(client, route, "bob", PASSWORD))[0] == 200


async def test_a_good_login_does_not_reset_its_addresses_failures(start: Start) -> None:
    client = await start(login_max_failures_per_address=3, trust_proxy=True)
    attacker = "203.0.113.7"
    await fail(client, "session", "victim1", 2, address=attacker)
    assert (await attempt(client, "session", "bob", PASSWORD, attacker))[0] == 200
    await fail(client, "session", "victim2", 1, address=attacker)
    assert (await attempt(client, "api", "victim3", "guess", attacker))[0] == 429


@pytest.mark.parametrize("route", ROUTES)
async def test_access_returns_when_the_window_has_passed(
    start: Start, clock: FakeClock, route: str
) -> None:
    client = await start()
    await fail(client, route, "alice", 3)
    clock.now += WINDOW - 1
    assert await attempt(client, route, "alice", PASSWORD) == (429, _locked(1), "1")
    clock.now += 1
    assert (await attempt(client, route, "alice", PASSWORD))[0] == 200


def _locked(seconds: int) -> dict[str, str]:
    return {**LOCKED, "reason": f"Too many failed login attempts; retry in {seconds} seconds."}


class CountingLimiter(MemoryLimiter):
    """An in-process limiter that counts how often it is asked."""

    calls = 0

    async def acquire(self, rules: Any) -> Any:
        self.calls += 1
        return await super().acquire(rules)


async def test_cached_basic_requests_never_reach_the_limiter(
    aiohttp_client: Any, settings: Settings, engine: Any
) -> None:
    app = create_app(limited(settings), migrate=False)
    limiter = app[RATE_LIMITER] = CountingLimiter()
    client = await aiohttp_client(app)
    for _ in range(5):
        assert (await attempt(client, "basic", "alice", PASSWORD))[0] == 200
    assert limiter.calls == 1  # the first request verified the password; the rest hit the cache


async def test_a_replicator_already_verified_keeps_working_during_an_attack(start: Start) -> None:
    client = await start()
    assert (await attempt(client, "basic", "alice", PASSWORD))[0] == 200
    await fail(client, "session", "alice", 3)
    assert (await attempt(client, "session", "alice", "another guess"))[0] == 429
    assert (await attempt(client, "basic", "alice", PASSWORD))[0] == 200  # cached: known


async def test_a_disabled_user_is_limited_like_an_unknown_one(start: Start) -> None:
    client = await start()
    async with client.app[ENGINE].begin() as conn:
        await conn.execute(update(users).where(users.c.name == "bob").values(disabled=True))
    for _ in range(3):
        assert (await attempt(client, "api", "bob", PASSWORD))[0] == 401
    assert (await attempt(client, "api", "bob", PASSWORD))[0] == 429


# --- Redis: counts shared by every instance; logins survive Redis being down ---------------


@pytest.fixture
async def redis_prefix(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    prefix = f"gw:rl:test:{uuid.uuid4().hex}:"
    monkeypatch.setattr(ratelimit, "KEY_PREFIX", prefix)
    yield prefix
    client = redis_client(REDIS_URL)
    assert client is not None
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.mark.usefixtures("patient_redis")
async def test_two_instances_on_one_redis_share_the_counts(
    aiohttp_client: Any, settings: Settings, engine: Any, redis_prefix: str
) -> None:
    shared = limited(settings, redis_url=REDIS_URL)
    first = await aiohttp_client(create_app(shared, migrate=False))
    second = await aiohttp_client(create_app(shared, migrate=False))
    await fail(first, "session", "alice", 2)
    await fail(second, "api", "alice", 1)
    status, body, retry_after = await attempt(first, "basic", "alice", PASSWORD)
    assert status == 429 and body["error"] == "too_many_requests"
    assert retry_after is not None and 0 < int(retry_after) <= WINDOW
    assert (await attempt(second, "session", "alice", PASSWORD))[0] == 429
    assert (await attempt(second, "session", "bob", PASSWORD))[0] == 200
    client = redis_client(REDIS_URL)
    assert client is not None
    assert int(await client.get(redis_prefix + "login:user:alice")) == 3
    await client.aclose()


@pytest.mark.usefixtures("patient_redis")
async def test_concurrent_guesses_cannot_slip_past_the_limit(
    aiohttp_client: Any, settings: Settings, engine: Any, redis_prefix: str
) -> None:
    client = await aiohttp_client(create_app(limited(settings, redis_url=REDIS_URL), migrate=False))
    guesses = [attempt(client, "api", "alice", f"guess{i}") for i in range(12)]
    statuses = sorted(status for status, _, _ in await asyncio.gather(*guesses))
    assert statuses == [401] * 3 + [429] * 9


@pytest.mark.parametrize("route", ROUTES)
async def test_logins_work_when_redis_is_unreachable(
    aiohttp_client: Any, settings: Settings, engine: Any, route: str, caplog: Any
) -> None:
    broken = limited(settings, redis_url="redis://127.0.0.1:1/0")
    client = await aiohttp_client(create_app(broken, migrate=False))
    with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
        assert (await attempt(client, route, "bob", PASSWORD))[0] == 200
        await fail(client, route, "alice", 3)  # still limited, in process
        assert (await attempt(client, route, "alice", PASSWORD))[0] == 429
    warnings = [r for r in caplog.records if r.name == "gateway.ratelimit"]
    assert len(warnings) == 1


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
