"""Cross-instance feed wake-ups through Redis pub/sub (real Redis at 127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.app import create_app
from gateway.keys import NOTIFIER
from tests.helpers import Couch

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 10.0  # bound on waits for Redis and the relay


async def test_a_longpoll_on_one_instance_wakes_for_a_write_on_another(
    aiohttp_client: Any, settings: Any, engine: Any
) -> None:
    # Polling is set far beyond the longpoll timeout: only a Redis message can wake it.
    redis_settings = dataclasses.replace(settings, redis_url=REDIS_URL, feed_poll_seconds=600)
    first = Couch(await aiohttp_client(create_app(redis_settings, migrate=False)), "admin")
    second = Couch(await aiohttp_client(create_app(redis_settings, migrate=False)), "admin")
    await first.put("/field?access_mode=shared")
    info = await second.get("/field")
    waiting = asyncio.create_task(
        second.get(f"/field/_changes?feed=longpoll&since={info['update_seq']}&timeout=30000")
    )
    for app in (first.client.app, second.client.app):  # both relays listen to Redis
        await asyncio.wait_for(app[NOTIFIER].subscribed.wait(), timeout=WAIT)
    assert not waiting.done()
    written = await first.put("/field/fresh", {"v": 1})
    feed = await asyncio.wait_for(waiting, timeout=60)
    assert [(r["id"], r["changes"][0]["rev"]) for r in feed["results"]] == [
        ("fresh", written["rev"])
    ]


async def test_a_write_published_while_the_subscription_was_lost_still_wakes_the_feed(
    aiohttp_client: Any, settings: Any, engine: Any
) -> None:
    """Redis drops the second instance's subscription while one of its longpolls waits,
    and the first instance's write is published before the relay has subscribed again, so
    that message never arrives: subscribing again checks the waited-on databases at once
    (one query), and the longpoll answers with the write instead of waiting for the slow
    poll (set here beyond the longpoll's timeout).  The lost subscription's connection goes
    back to the pool instead of staying checked out for good."""
    redis_settings = dataclasses.replace(settings, redis_url=REDIS_URL, feed_poll_seconds=600)
    first = Couch(await aiohttp_client(create_app(redis_settings, migrate=False)), "admin")
    second = Couch(await aiohttp_client(create_app(redis_settings, migrate=False)), "admin")
    relay = second.client.app[NOTIFIER]
    await asyncio.wait_for(relay.subscribed.wait(), timeout=WAIT)
    await first.put("/field?access_mode=shared")
    info = await second.get("/field")
    waiting = asyncio.create_task(
        second.get(f"/field/_changes?feed=longpoll&since={info['update_seq']}&timeout=30000")
    )
    admin = aioredis.from_url(REDIS_URL)
    try:
        host, port = relay._pubsub.connection._writer.get_extra_info("sockname")[:2]
        assert await admin.client_kill_filter(_id=None, addr=f"{host}:{port}") == 1
    finally:
        await admin.aclose()
    for _ in range(int(WAIT / 0.05)):  # the relay notices: its listen() fails
        if not relay.subscribed.is_set():
            break
        await asyncio.sleep(0.05)
    assert not relay.subscribed.is_set()
    assert not waiting.done()
    written = await first.put("/field/fresh", {"v": 1})  # its message finds no relay of 2's
    feed = await asyncio.wait_for(waiting, timeout=60)
    assert relay.subscribed.is_set()
    # the lost subscription gave its connection back: only the new one is checked out
    assert len(relay._redis.connection_pool._in_use_connections) == 1
    assert [(r["id"], r["changes"][0]["rev"]) for r in feed["results"]] == [
        ("fresh", written["rev"])
    ]


async def test_feeds_keep_working_when_redis_is_unreachable(
    aiohttp_client: Any, settings: Any, engine: Any
) -> None:
    broken = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0", feed_poll_seconds=0.2)
    couch = Couch(await aiohttp_client(create_app(broken, migrate=False)), "admin")
    await couch.put("/field?access_mode=shared")
    waiting = asyncio.create_task(couch.get("/field/_changes?feed=longpoll&since=0&timeout=30000"))
    written = await couch.put("/field/doc", {"v": 1})
    feed = await asyncio.wait_for(waiting, timeout=60)
    assert feed["results"][0]["changes"][0]["rev"] == written["rev"]


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
