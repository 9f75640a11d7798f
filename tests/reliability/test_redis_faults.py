"""Redis taken away under the gateway: killed (SIGKILL) and hung (SIGSTOP) under load.

Two real ``gateway serve`` processes (``tests.processes``) on the test database share a
private redis-server (``tests.reliability.services``) that the test kills, starts and
freezes at will, under the load of ``tests.reliability.fault_load`` (PouchDB replicating
live, ``_bulk_docs``, edits and REST writes through both instances, a continuous feed
reader).  Redis is only ever a helper (README, "Running in production"): without it feeds
fall back to the slow poll, rate limits count per instance and caches miss; nothing fails.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import PASSWORD
from tests.processes import Instance, start_instances
from tests.reliability.fault_load import (
    DB,
    REQUEST_TIMEOUT,
    WAIT,
    Answer,
    Load,
    Traffic,
    create_databases,
    kill_all,
    until_async,
)
from tests.reliability.services import BlackHole, PrivateRedis

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


QUIET = ("quiet0", "quiet1")  # one per instance; only the wake-up checks write to them


@pytest.fixture
async def redis_server() -> AsyncIterator[PrivateRedis]:
    """A private redis-server the test may kill, freeze and start again (same port)."""
    if PrivateRedis.binary() is None:
        pytest.skip("redis-server is not on PATH")
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.destroy()


async def check_wakeups_published(
    redis_url: str, traffic: Traffic, urls: list[str], tag: str
) -> None:
    """Every instance relays (holds a pattern subscription) and publishes: a write to
    ``quiet<i>`` through instance i reaches a subscriber of our own (writes are repeated
    until one is published: publishing pauses a few seconds after a failure)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, socket_timeout=5)

    async def relaying() -> bool:
        clients = await client.client_list()
        return sum(1 for c in clients if int(c.get("psub", 0)) > 0) >= len(urls)

    try:
        await until_async(relaying, f"{tag}: every instance subscribed")
        pubsub = client.pubsub()
        await pubsub.psubscribe("gateway:db:quiet*")
        for url, db in zip(urls, QUIET, strict=True):

            async def published(url: str = url, db: str = db) -> bool:
                doc = f"{url}/{db}/{tag}-{uuid.uuid4().hex[:8]}"
                answer = await traffic.call(tag, "PUT", doc, {"tag": tag})
                assert answer is not None and answer.status == 201, answer
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                return message is not None and message["channel"] == f"gateway:db:{db}".encode()

            await until_async(published, f"{tag}: a wake-up published by {url}")
        await pubsub.aclose()
    finally:
        await client.aclose()


async def check_feed_without_redis(traffic: Traffic, urls: list[str], tag: str) -> None:
    """A longpoll on instance 0 still gets a write made through instance 1 (by the slow
    poll: nobody else writes to ``quiet0`` and Redis is of no help)."""
    info = await traffic.call("quiet", "GET", f"{urls[0]}/{QUIET[0]}")
    assert info is not None and info.status == 200, info
    since = info.body["update_seq"]
    feed = f"{urls[0]}/{QUIET[0]}/_changes?feed=longpoll&timeout=30000&since={since}"
    waiting = asyncio.create_task(traffic.call("quiet", "GET", feed))
    written = await traffic.call("quiet", "PUT", f"{urls[1]}/{QUIET[0]}/{tag}", {"v": 1})
    assert written is not None and written.status == 201, written
    answer = await waiting
    assert answer is not None and answer.status == 200, answer
    changes = [(r["id"], r["changes"][0]["rev"]) for r in answer.body["results"]]
    assert changes == [(tag, written.body["rev"])]


async def check_limits_and_caches_without_redis(traffic: Traffic, urls: list[str]) -> None:
    """Failed logins are still limited, per instance (429 with Retry-After after the
    configured 3 on one instance; the other counts its own), good logins work; templates
    come from the database and a write on one instance is seen on the other."""

    async def login(url: str, name: str, password: str) -> Answer:
        body = {"username": name, "password": password}
        answer = await traffic.call("login", "POST", f"{url}/api/v1/auth/login", body)
        assert answer is not None
        return answer

    statuses = [(await login(urls[0], "manager", "wrong")).status for _ in range(3)]
    refused = await login(urls[0], "manager", "wrong")
    assert (statuses, refused.status) == ([401, 401, 401], 429), (statuses, refused.body)
    assert int(refused.headers["Retry-After"]) > 0
    assert (await login(urls[1], "manager", "wrong")).status == 401  # its own count
    for url in urls:
        good = await login(url, "alice", PASSWORD)
        assert good.status == 200 and good.body["access_token"], good

    templates = "/api/v1/templates"
    listed = await traffic.call("templates", "GET", urls[0] + templates, user="alice")
    assert listed is not None and listed.status == 200, listed
    made = await traffic.call("templates", "POST", urls[1] + templates,
                              {"name": "No Redis", "fields": []}, user="manager")  # fmt: skip
    assert made is not None and made.status == 201, made
    fresh = await traffic.call("templates", "GET", urls[0] + templates, user="alice",
                               headers={"If-None-Match": listed.headers["ETag"]})  # fmt: skip
    assert fresh is not None and fresh.status == 200, fresh
    assert made.body["id"] in [t["id"] for t in fresh.body["results"]]
    again = await traffic.call("templates", "GET", urls[0] + templates, user="alice",
                               headers={"If-None-Match": fresh.headers["ETag"]})  # fmt: skip
    assert again is not None and again.status == 304, again


async def check_limits_counted_in_redis(redis_url: str, traffic: Traffic, url: str) -> None:
    """Failed logins are counted in Redis again (the limiter goes back to it by itself)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, socket_timeout=5)

    async def counted() -> bool:
        body = {"username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "wrong"}
        await traffic.call("login", "POST", f"{url}/api/v1/auth/login", body)
        return bool(await client.keys("gw:rl:*"))

    try:
        await until_async(counted, "login failures counted in Redis again")
    finally:
        await client.aclose()


@pytest.mark.postgres_only
@pytest.mark.interop
async def test_redis_killed_and_hung_under_load(
    engine: Any, database_url: str, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    """Redis SIGKILLed while PouchDB replicates live, documents are pushed, edited and
    created over REST through two instances and a continuous feed is read: not one request
    fails (no 503, no 500); a longpoll on one instance still gets a write made on the other
    (slow poll); failed logins are still limited (per instance), good ones succeed;
    templates come from the database and a write on one instance is seen on the other.
    Redis started again: both instances subscribe and publish again by themselves, login
    failures are counted in Redis again.  Redis then hung (SIGSTOP: connections open,
    nothing answers): writes and feeds go on the same way.  Every acknowledged write is
    stored once, PouchDB and the feed miss nothing, the store keeps its invariants."""
    started: list[Instance] = []
    redis_url = redis_server.url()
    env = {"GATEWAY_FEED_POLL_SECONDS": "1", "GATEWAY_LOGIN_MAX_FAILURES_PER_USER": "3"}
    try:
        await start_instances(started, 2, database_url, tmp_path, redis_url, extra_env=env)
        urls = [instance.url for instance in started]
        await create_databases(urls, DB, *QUIET)
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
            traffic = Traffic(session, urls)
            await check_wakeups_published(redis_url, traffic, urls, "before")
            load = await Load.start(session, urls, tmp_path)
            try:
                await load.progress("writes with Redis up")
                await redis_server.stop()
                await load.progress("writes with Redis killed")
                await check_feed_without_redis(traffic, urls, "killed")
                await check_limits_and_caches_without_redis(traffic, urls)
                await redis_server.start()
                await check_wakeups_published(redis_url, traffic, urls, "after")
                await check_limits_counted_in_redis(redis_url, traffic, urls[0])
                await load.progress("writes with Redis back")
                redis_server.freeze()
                await load.progress("writes with Redis hung")
                await check_feed_without_redis(traffic, urls, "hung")
                redis_server.thaw()
                await check_wakeups_published(redis_url, traffic, urls, "thawed")
                figures = await load.finish(database_url, never=set())
            finally:
                await load.cancel()
            assert traffic.problems == [], traffic.problems[:10]
    finally:
        await kill_all(started)
    assert figures["503s"] == {}, figures
    print(f"\n[Redis killed, then hung] {figures}")


async def test_a_hung_redis_never_holds_up_a_write() -> None:
    """Publishing a wake-up to a Redis that accepts connections but never answers: the
    writer's ``notify`` returns at once (the publish runs in the background) and local
    listeners are woken; closing the notifier ends the pending publish."""
    from gateway.notifier import FeedNotifier

    hole = BlackHole()
    port = await hole.start()
    notifier = FeedNotifier(f"redis://127.0.0.1:{port}/0", poll_seconds=600)
    await notifier.start()
    try:
        listener = notifier.current("field")
        notifying = asyncio.create_task(notifier.notify("field"))
        for _ in range(20):  # a few turns of the loop, not a timeout: nothing answers, ever
            await asyncio.sleep(0)
        assert notifying.done() and listener.is_set()
        await notifying
    finally:
        await asyncio.wait_for(notifier.close(), WAIT)
        await hole.stop()
