"""Idle feed listeners cost no database queries of their own, and a change whose
notification was lost (a write from outside the server, a Redis restart) still arrives."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import pytest
from sqlalchemy import event

from gateway.app import create_app
from gateway.keys import ENGINE, NOTIFIER
from replication import DocEdit
from schema.documents import update_docs
from schema.engine import write_transaction
from tests.helpers import Couch

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LISTENERS = 40


async def _until(probe: Any, attempts: int = 600) -> None:
    for _ in range(attempts):
        if probe():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


async def test_many_idle_listeners_share_one_slow_poll(
    aiohttp_client: Any, settings: Any, engine: Any
) -> None:
    app = create_app(dataclasses.replace(settings, feed_poll_seconds=0.2), migrate=False)
    couch = Couch(await aiohttp_client(app), "admin")
    await couch.put("/field?access_mode=shared")
    since = (await couch.get("/field"))["update_seq"]
    notifier = app[NOTIFIER]
    ready: list[str] = []
    record_floor = notifier.floor

    def floor(db: str, seen: int) -> None:  # each listener calls this right before it waits
        ready.append(db)
        record_floor(db, seen)

    notifier.floor = floor  # type: ignore[method-assign]
    path = f"/field/_changes?feed=longpoll&since={since}&timeout=60000"
    waiting = [asyncio.ensure_future(couch.get(path)) for _ in range(LISTENERS)]
    await _until(lambda: len(ready) == LISTENERS)
    statements: list[str] = []
    sync_engine = app[ENGINE].sync_engine

    def count(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("SELECT"):  # SQLite adds a BEGIN each
            statements.append(args[2])

    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        start = notifier.polls
        await _until(lambda: notifier.polls >= start + 5)
        polls = notifier.polls - start
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    # one query per poll for all forty listeners (a per-listener poll would be 40 a round)
    assert len(statements) <= polls + 1, statements
    assert not any(w.done() for w in waiting)
    written = await couch.put("/field/fresh", {"v": 1})
    results = await asyncio.wait_for(asyncio.gather(*waiting), 60)
    assert all(r["results"][0]["changes"][0]["rev"] == written["rev"] for r in results)


async def test_a_write_nobody_announced_still_reaches_a_waiting_listener(
    aiohttp_client: Any, settings: Any, engine: Any
) -> None:
    app = create_app(dataclasses.replace(settings, feed_poll_seconds=0.2), migrate=False)
    couch = Couch(await aiohttp_client(app), "admin")
    await couch.put("/field?access_mode=shared")
    waiting = asyncio.ensure_future(
        couch.get("/field/_changes?feed=longpoll&since=0&timeout=60000")
    )
    await _until(lambda: "field" in app[NOTIFIER]._floors)
    async with write_transaction(engine) as conn:  # as the CLI or another process would
        _, [result] = await update_docs(
            conn, "field", [DocEdit("silent", body={"v": 1})], new_edits=True, user_id=None
        )
    feed = await asyncio.wait_for(waiting, 60)
    assert [r["id"] for r in feed["results"]] == ["silent"]
    assert feed["results"][0]["changes"][0]["rev"] == result.rev


async def test_feeds_survive_a_redis_restart(
    aiohttp_client: Any, settings: Any, engine: Any
) -> None:
    import redis.asyncio as aioredis

    redis_settings = dataclasses.replace(settings, redis_url=REDIS_URL, feed_poll_seconds=0.5)
    first = Couch(await aiohttp_client(create_app(redis_settings, migrate=False)), "admin")
    second_app = create_app(redis_settings, migrate=False)
    second = Couch(await aiohttp_client(second_app), "admin")
    await first.put("/field?access_mode=shared")
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # subscribers drop
    finally:
        await client.aclose()
    since = (await second.get("/field"))["update_seq"]
    waiting = asyncio.ensure_future(
        second.get(f"/field/_changes?feed=longpoll&since={since}&timeout=60000")
    )
    await _until(lambda: "field" in second_app[NOTIFIER]._floors)
    written = await first.put("/field/after-restart", {"v": 1})
    feed = await asyncio.wait_for(waiting, 60)
    assert [(r["id"], r["changes"][0]["rev"]) for r in feed["results"]] == [
        ("after-restart", written["rev"])
    ]


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
