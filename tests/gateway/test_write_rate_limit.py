"""Rate limits on the field API's sync and write routes: per user, per device, shared
through Redis by every instance, 429 with ``Retry-After``."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from gateway import ratelimit
from gateway.app import create_app, redis_client
from gateway.settings import Settings
from tests.helpers import Couch, FakeClock, start_limited

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
API = "/api/v1/inspections"
BATCH = "/api/v1/sync/batch"
NEW = {"template_id": "tpl-1", "title": "Boiler room", "site": "Block C", "responses": {}}
WINDOW = 3600  # far longer than any test: nothing here depends on time passing
LIMITED = {
    "error": "too_many_requests",
    "reason": f"Too many requests; retry in {WINDOW} seconds.",
}

Answer = tuple[int, Any, str | None]  # status, JSON body, Retry-After
Start = Callable[..., Awaitable[Any]]


async def call(
    client: Any,
    user: str,
    method: str = "POST",
    path: str = BATCH,
    body: Any = None,
    *,
    device: str | None = None,
    key: str | None = None,
) -> Answer:
    couch = Couch(client, user)
    extra = {}
    if device is not None:
        extra["X-Device-Id"] = device
    if key is not None:
        extra["Idempotency-Key"] = key
    if body is None and method == "POST" and path == BATCH:
        body = {"operations": []}
    data = orjson.dumps(body) if body is not None else None
    async with client.request(method, path, data=data, headers=couch.headers(extra)) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw) if raw else None, resp.headers.get("Retry-After")


LIMITS = {
    "write_rate_per_user": 3,
    "write_rate_per_device": 100,
    "write_rate_window_seconds": WINDOW,
}


def limited(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **{**LIMITS, **changes})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(aiohttp_client: Any, settings: Settings, engine: Any, clock: FakeClock) -> Start:
    """Start an app with small write limits and the fake clock (in-process limiter)."""

    async def start_app(**changes: Any) -> Any:
        return await start_limited(aiohttp_client, settings, clock, LIMITS, **changes)

    return start_app


async def test_a_user_over_the_limit_gets_429_with_retry_after(
    start: Start, clock: FakeClock
) -> None:
    client = await start()
    assert (await call(client, "alice", path=API, body=NEW))[0] == 201
    assert (await call(client, "alice"))[0] == 207
    assert (await call(client, "alice", "GET", "/api/v1/sync/changes"))[0] == 200
    assert await call(client, "alice") == (429, LIMITED, str(WINDOW))
    assert await call(client, "alice", path=API, body=NEW) == (429, LIMITED, str(WINDOW))
    clock.now += 600
    assert (await call(client, "alice", "GET", "/api/v1/sync/changes"))[2] == str(WINDOW - 600)
    clock.now += WINDOW - 600  # a new window
    assert (await call(client, "alice"))[0] == 207
    assert len((await Couch(client, "alice").get(API))["results"]) == 1  # refused: not written


async def test_other_users_are_unaffected(start: Start) -> None:
    client = await start()
    for _ in range(3):
        assert (await call(client, "alice"))[0] == 207
    assert (await call(client, "alice"))[0] == 429
    for _ in range(3):
        assert (await call(client, "bob"))[0] == 207
    assert (await call(client, "bob"))[0] == 429


async def test_reads_auth_and_replication_routes_are_not_counted(start: Start) -> None:
    client = await start(write_rate_per_user=1)
    assert (await call(client, "alice"))[0] == 207
    assert (await call(client, "alice"))[0] == 429
    assert (await call(client, "alice", "GET", API))[0] == 200
    assert (await call(client, "alice", "GET", "/api/v1/auth/me"))[0] == 200
    login = {"username": "alice", "password": Couch(client, "alice").password}
    status, tokens, _ = await call(client, "alice", "POST", "/api/v1/auth/login", login)
    assert status == 200
    refresh = {"refresh_token": tokens["refresh_token"]}
    assert (await call(client, "alice", "POST", "/api/v1/auth/refresh", refresh))[0] == 200
    doc = {**NEW, "_id": str(uuid.uuid4())}
    assert (await call(client, "alice", "POST", "/inspections", doc))[0] == 201  # CouchDB


async def test_a_device_has_its_own_limit_within_its_users(start: Start) -> None:
    client = await start(write_rate_per_user=100, write_rate_per_device=2)
    for _ in range(2):
        assert (await call(client, "alice", device="tablet-1"))[0] == 207
    assert await call(client, "alice", device="tablet-1") == (429, LIMITED, str(WINDOW))
    # The user's other devices, and requests without a device id, go on.
    assert (await call(client, "alice", device="tablet-2"))[0] == 207
    assert (await call(client, "alice"))[0] == 207
    # A device id names a device of the caller: bob sending the same id is not blocked.
    assert (await call(client, "bob", device="tablet-1"))[0] == 207
    assert (await call(client, "alice", device="tablet-1"))[0] == 429


async def test_the_user_limit_covers_every_device(start: Start) -> None:
    client = await start(write_rate_per_user=3, write_rate_per_device=2)
    assert (await call(client, "alice", device="a"))[0] == 207
    assert (await call(client, "alice", device="b"))[0] == 207
    assert (await call(client, "alice", device="c"))[0] == 207
    assert (await call(client, "alice", device="d"))[0] == 429


async def test_zero_disables_a_limit(start: Start) -> None:
    client = await start(write_rate_per_user=0, write_rate_per_device=1)
    for _ in range(5):
        assert (await call(client, "alice"))[0] == 207
    assert (await call(client, "alice", device="x"))[0] == 207
    assert (await call(client, "alice", device="x"))[0] == 429
    client = await start(write_rate_window_seconds=0, write_rate_per_user=1)
    for _ in range(5):
        assert (await call(client, "bob", device="x"))[0] == 207


async def test_replays_count_and_a_refused_request_claims_no_key(
    start: Start, clock: FakeClock
) -> None:
    client = await start(write_rate_per_user=2)
    first = await call(client, "alice", path=API, body=NEW, key="k1")
    assert first[0] == 201
    assert await call(client, "alice", path=API, body=NEW, key="k1") == first  # a replay
    assert (await call(client, "alice", path=API, body=NEW, key="k2"))[0] == 429
    clock.now += WINDOW
    made = await call(client, "alice", path=API, body=NEW, key="k2")  # runs, not a 409
    assert made[0] == 201 and made[1]["id"] != first[1]["id"]


# --- Redis: one budget shared by every instance --------------------------------------------


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
async def test_two_instances_on_one_redis_share_one_budget(
    aiohttp_client: Any, settings: Settings, engine: Any, redis_prefix: str
) -> None:
    shared = limited(settings, redis_url=REDIS_URL, write_rate_per_user=4, write_rate_per_device=3)
    first = await aiohttp_client(create_app(shared, migrate=False))
    second = await aiohttp_client(create_app(shared, migrate=False))
    for client in (first, second, first, second):
        assert (await call(client, "alice"))[0] == 207
    for client in (first, second):
        status, body, retry_after = await call(client, "alice")
        assert (status, body["error"]) == (429, "too_many_requests")
        assert retry_after is not None and 1 <= int(retry_after) <= WINDOW
    assert (await call(second, "bob"))[0] == 207
    # Per device too: three from one device across both instances, the fourth is refused.
    for client in (first, second, first):
        assert (await call(client, "bob", device="tablet"))[0] == 207
    assert (await call(second, "bob", device="tablet"))[0] == 429
    assert (await call(first, "bob"))[0] == 429  # bob's fifth: the user budget
    redis = redis_client(REDIS_URL)
    assert redis is not None
    user_keys = [key async for key in redis.scan_iter(match=redis_prefix + "api:user:*")]
    assert sorted([int(await redis.get(key)) for key in user_keys]) == [4, 4]
    await redis.aclose()
