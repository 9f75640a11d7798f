"""A graceful shutdown (SIGTERM, as a deploy or a scale-down sends) ends waiting feeds.

Without it, aiohttp waits for every open handler up to its shutdown timeout (60 s) and
then cuts what is still open: a longpoll or continuous feed that waits for changes would
hold the shutdown for a minute and then reach its client truncated.  On shutdown the
gateway stops accepting, wakes every waiting feed, and each answers as at its timeout: a
longpoll with its (empty) results and ``last_seq``, a continuous feed with its closing
``last_seq`` line, so clients reconnect at once, to another instance behind the balancer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import basic
from tests.processes import Instance, start_instances, stop_all

pytestmark = [pytest.mark.interop]

DB = "shutdown"
FEED_TIMEOUT_MS = 600_000  # far past aiohttp's shutdown timeout: only the wake-up ends them
BOUND_S = 120.0  # a hang detector, not a speed assertion


async def read_feed(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url, headers={"Authorization": basic("admin")}) as resp:
        return resp.status, await resp.read()


async def listeners(session: aiohttp.ClientSession, instance: Instance) -> float:
    async with session.get(f"{instance.url}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_feed_listeners{")
    )


async def test_sigterm_ends_waiting_feeds_with_complete_answers_and_exits(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    started: list[Instance] = []
    try:
        (instance,) = await start_instances(started, 1, database_url, tmp_path)
        async with aiohttp.ClientSession() as session:
            admin = {"Authorization": basic("admin")}
            async with session.put(f"{instance.url}/{DB}", headers=admin) as resp:
                assert resp.status == 201, await resp.text()
            async with session.put(f"{instance.url}/{DB}/a", json={"x": 1}, headers=admin) as r:
                assert r.status == 201
            base = f"{instance.url}/{DB}/_changes?since=now&timeout={FEED_TIMEOUT_MS}"
            longpoll = asyncio.ensure_future(read_feed(session, base + "&feed=longpoll"))
            continuous = asyncio.ensure_future(read_feed(session, base + "&feed=continuous"))
            for _ in range(600):  # bounded: until both feeds wait
                if await listeners(session, instance) >= 2:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the feeds never started waiting")

            assert instance.proc is not None
            instance.proc.terminate()
            status, body = await asyncio.wait_for(longpoll, BOUND_S)
            assert status == 200
            assert orjson.loads(body) == {"results": [], "last_seq": 1, "pending": 0}
            status, body = await asyncio.wait_for(continuous, BOUND_S)
            assert status == 200
            assert [orjson.loads(line) for line in body.splitlines()] == [{"last_seq": 1}]
            assert await asyncio.wait_for(instance.proc.wait(), BOUND_S) == 0
    finally:
        await stop_all(started)
