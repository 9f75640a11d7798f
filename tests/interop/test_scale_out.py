"""Scale-out proof: three real gateway processes on one PostgreSQL and one Redis, 20 PouchDB
clients replicating through all of them at once.

Each process is ``python -m gateway serve`` on its own port, sharing the test's PostgreSQL
database (migrated and truncated by the ``engine`` fixture, which also creates the users) and
Redis (database ``SCALE_REDIS_URL``, flushed first) for cross-instance feed wake-ups.  Every
client (``js/scale_client.js``) writes its own documents and edits three shared ones (so
there are conflicts), and for several rounds pushes through one instance and pulls through
another; two clients keep a live pull open on one instance while the others push through the
other instances (their feeds are woken through Redis).  When every client has pushed, each
one does a final pull, and the test checks that every replica and every instance hold exactly
the same documents, winners, conflicts and bodies, that nothing was lost or duplicated, that
every losing leaf has an open ConflictRecord, and that the changes feed has one entry per
document in strictly increasing seq order.  No timing is asserted; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import PASSWORD, basic, describe_diff
from tests.interop.conftest import NodeProcess, start_node
from tests.processes import Instance, flushed_redis, start_instances, stop_all

pytestmark = [pytest.mark.interop, pytest.mark.postgres_only]

SCALE_REDIS_URL = os.environ.get("GATEWAY_TEST_SCALE_REDIS_URL", "redis://127.0.0.1:6379/9")
DB = "scaleout"
INSTANCES = 3
CLIENTS = 20
DOCS_PER_CLIENT = 25
ROUNDS = 3
SHARED_IDS = ("shared-0", "shared-1", "shared-2")
LIVE_CLIENTS = tuple(i for i in range(CLIENTS) if i % 10 == 0)  # as in scale_client.js
NODE_TIMEOUT = 180.0  # per awaited line / exit of one client (a loaded 2-CPU box: ~80 s)


@pytest.fixture
async def redis_db() -> AsyncIterator[Any]:
    """A client of ``SCALE_REDIS_URL``, flushed; skips the test when Redis is not reachable."""
    async with flushed_redis(SCALE_REDIS_URL, "the scale-out test") as client:
        yield client


@pytest.fixture
async def instances(
    engine: AsyncEngine, database_url: str, redis_db: Any, tmp_path: Path
) -> AsyncIterator[list[Instance]]:
    """Three ``gateway serve`` processes on the test database, ready; always stopped."""
    started: list[Instance] = []
    try:
        await start_instances(started, INSTANCES, database_url, tmp_path, SCALE_REDIS_URL)
        yield started
    finally:
        await stop_all(started)


async def wait_subscribed(redis: Any, count: int) -> None:
    """Wait (bounded) until ``count`` connections on our Redis database hold a pattern
    subscription: every instance relays other instances' wake-ups."""
    db = redis.connection_pool.connection_kwargs.get("db", 0)
    subscribed = 0
    for _ in range(100):
        clients = await redis.client_list()
        subscribed = sum(
            1 for c in clients if int(c.get("db", -1)) == int(db) and int(c.get("psub", 0)) > 0
        )
        if subscribed >= count:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"only {subscribed} of {count} gateway instances subscribed to Redis within 10s")


class Http:
    """Basic-auth JSON requests against one instance."""

    def __init__(self, session: aiohttp.ClientSession, url: str, user: str) -> None:
        self.session = session
        self.url = url
        self.headers = {"Authorization": basic(user), "Accept": "application/json"}

    async def request(self, method: str, path: str, expected: int = 200) -> Any:
        async with self.session.request(method, self.url + path, headers=self.headers) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == expected, (method, self.url + path, resp.status, body)
            return body

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)


async def count_wakeups(redis_url: str, channel: str, counter: list[int]) -> None:
    """Count the messages published on ``channel`` (the instances' feed wake-ups)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel)
        async for message in pubsub.listen():
            if message.get("type") == "message":
                counter[0] += 1
            elif message.get("type") == "subscribe":
                counter[1] = 1
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()
        await client.aclose()


def replica_state(rows: list[dict[str, Any]]) -> dict[str, tuple[str, tuple[str, ...], Any]]:
    """id -> (winning rev, sorted conflicts, body without _rev/_conflicts)."""
    out = {}
    for row in rows:
        doc = dict(row["doc"])
        conflicts = tuple(sorted(doc.pop("_conflicts", [])))
        doc.pop("_rev", None)
        out[row["id"]] = (row["value"]["rev"] if "value" in row else row["rev"], conflicts, doc)
    return out


async def test_three_instances_twenty_pouchdb_clients_converge(
    instances: list[Instance], redis_db: Any, tmp_path: Path
) -> None:
    started_at = time.monotonic()
    await wait_subscribed(redis_db, INSTANCES)
    wakeups = [0, 0]  # messages seen, subscribed flag
    listener = asyncio.create_task(count_wakeups(SCALE_REDIS_URL, f"gateway:db:{DB}", wakeups))
    barrier = tmp_path / "all-pushed"
    nodes: list[NodeProcess] = []
    async with aiohttp.ClientSession() as session:
        try:
            admin = [Http(session, inst.url, "admin") for inst in instances]
            await admin[0].request("PUT", f"/{DB}?access_mode=shared", expected=201)
            for other in admin[1:]:  # created through one instance, visible through all
                assert (await other.get(f"/{DB}"))["db_name"] == DB
            for _ in range(50):
                if wakeups[1]:
                    break
                await asyncio.sleep(0.1)
            assert wakeups[1], "the test's Redis listener did not subscribe within 5s"

            urls = [f"{inst.url}/{DB}" for inst in instances]
            for index in range(CLIENTS):
                user = "alice" if index % 2 == 0 else "bob"
                nodes.append(
                    await start_node(
                        "scale_client.js",
                        str(index),
                        *urls,
                        str(DOCS_PER_CLIENT),
                        str(ROUNDS),
                        str(barrier),
                        env={
                            "GATEWAY_DB_URL": urls[0],
                            "GATEWAY_USER": user,
                            "GATEWAY_PASSWORD": PASSWORD,
                        },
                        timeout=NODE_TIMEOUT,
                    )
                )
            pushed = await asyncio.gather(*(node.read_json_line() for node in nodes))
            assert sorted(line["index"] for line in pushed) == list(range(CLIENTS)), pushed
            pushed_at = time.monotonic()
            barrier.touch()  # every client has pushed everything: now each pulls once more
            results = await asyncio.gather(*(node.result() for node in nodes))
            pulled_at = time.monotonic()
        except BaseException:  # shown with the failure: what the servers said
            for instance in instances:
                print(f"--- gateway instance {instance.index} log ---\n{instance.log_tail()}")
            raise
        finally:
            for node in nodes:
                await node.kill()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

        # Every replication completed cleanly.
        for result in results:
            steps = [("final_pull", result["final_pull"])]
            for entry in result["rounds"]:
                steps += [
                    (f"round {entry['round']} {k}", entry[k])
                    for k in ("push", "pull")
                    if k in entry
                ]
            for name, stats in steps:
                assert stats["ok"] is True, (result["index"], name, stats)
                assert stats["doc_write_failures"] == 0, (result["index"], name, stats)
                assert stats["errors"] == [], (result["index"], name, stats)
        live_results = {r["index"]: r["live_result"] for r in results if r["live"]}
        assert sorted(live_results) == list(LIVE_CLIENTS)
        for index, live in live_results.items():
            assert live["caught_up"] is True and live["errors"] == [], (index, live)
            # Documents pushed by others through other instances reached the live pull, and
            # it missed nothing: the final one-shot pull (through another instance) adds none.
            assert live["docs_written"] > 0, (index, live)
        for result in results:
            if result["live"]:
                assert result["final_pull"]["docs_written"] == 0, result["final_pull"]

        # All three instances answer identically.
        all_docs_path = f"/{DB}/_all_docs?include_docs=true&conflicts=true"
        answers = [await a.get(all_docs_path) for a in admin]
        for index, answer in enumerate(answers[1:], start=1):
            assert answer["rows"] == answers[0]["rows"], f"instance {index} differs from 0"
        rows = answers[0]["rows"]
        server = replica_state(rows)

        # Nothing lost, nothing duplicated: every client's every document, with its last body.
        expected_ids = {f"c{i}-{n}" for i in range(CLIENTS) for n in range(DOCS_PER_CLIENT)}
        expected_ids |= set(SHARED_IDS)
        ids = [row["id"] for row in rows]
        assert len(ids) == len(set(ids)) == len(expected_ids) == answers[0]["total_rows"]
        assert set(ids) == expected_ids
        for i in range(CLIENTS):
            for n in range(DOCS_PER_CLIENT):
                last = n % ROUNDS  # created in round 0, updated in round n % ROUNDS
                rev, conflicts, body = server[f"c{i}-{n}"]
                assert body == {
                    "_id": f"c{i}-{n}",
                    "owner": i,
                    "n": n,
                    "round": last,
                    "text": f"client {i} doc {n} round {last}",
                }, body
                generation = 1 if last == 0 else 2
                assert rev.startswith(f"{generation}-") and conflicts == (), (f"c{i}-{n}", rev)
        for a in admin:
            info = await a.get(f"/{DB}")
            assert (info["doc_count"], info["doc_del_count"]) == (len(expected_ids), 0), info

        # Conflicts on the shared documents are kept, with the same winner everywhere.
        for doc_id in SHARED_IDS:
            rev, conflicts, _body = server[doc_id]
            assert conflicts, f"{doc_id} has no conflicts: concurrent edits were lost"
            for a in admin:
                doc = await a.get(f"/{DB}/{doc_id}?conflicts=true")
                assert (doc["_rev"], tuple(sorted(doc["_conflicts"]))) == (rev, conflicts)

        # Every losing leaf of a shared document is followed by exactly one open
        # ConflictRecord, paired with the winner, and no other document has one.
        records: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = await admin[1].get(
                f"/api/v1/conflicts?db={DB}&status=open&limit=100"
                + (f"&cursor={quote(cursor)}" if cursor else "")
            )
            records += page["results"]
            if not page["next"]:
                break
            cursor = page["next"]
        assert {r["doc_id"] for r in records} == set(SHARED_IDS), records[:3]
        for doc_id in SHARED_IDS:
            recorded = {
                rev
                for r in records
                if r["doc_id"] == doc_id
                for rev in (r["mine"]["rev"], r["theirs"]["rev"])
            }
            uncovered = set(server[doc_id][1]) - recorded
            assert not uncovered, f"{doc_id}: losing leaves without an open record: {uncovered}"
            mine = [r for r in records if r["doc_id"] == doc_id]
            winner = server[doc_id][0]
            assert all(winner in (r["mine"]["rev"], r["theirs"]["rev"]) for r in mine), doc_id
            assert len(mine) == len(server[doc_id][1]), f"{doc_id}: one record per losing leaf"

        # Every replica holds exactly what the server holds (ids, winners, conflicts, bodies).
        for result in results:
            replica = replica_state(result["dump"])
            assert replica == server, (
                f"client {result['index']} differs from the server:\n"
                + describe_diff(server, replica)
            )

        # The changes feed: one entry per document, strictly increasing seqs, on every instance.
        feeds = [await a.get(f"/{DB}/_changes?style=all_docs") for a in admin]
        for index, feed in enumerate(feeds[1:], start=1):
            assert feed == feeds[0], f"instance {index}'s _changes differs from instance 0's"
        changes = feeds[0]["results"]
        seqs = [int(change["seq"]) for change in changes]
        assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
        assert len(changes) == len({c["id"] for c in changes}) == len(expected_ids)
        assert {c["id"] for c in changes} == expected_ids
        assert int(feeds[0]["last_seq"]) == seqs[-1]
        for change in changes:
            rev, conflicts, _body = server[change["id"]]
            assert {c["rev"] for c in change["changes"]} == {rev, *conflicts}, change

        # The instances published their writes to Redis (the cross-instance wake-ups).
        assert wakeups[0] > 0, "no feed wake-up was published to Redis"

    elapsed = time.monotonic() - started_at
    n_conflicts = sum(len(server[d][1]) for d in SHARED_IDS)
    print(
        f"\nscale-out: {len(expected_ids)} docs ({CLIENTS} PouchDB clients x {DOCS_PER_CLIENT} "
        f"+ {len(SHARED_IDS)} shared with {n_conflicts} conflicting revs, {len(records)} open "
        f"records), {ROUNDS} rounds, {INSTANCES} gateway instances, {wakeups[0]} Redis "
        f"wake-ups; pushes {pushed_at - started_at:.1f}s, final pulls "
        f"{pulled_at - pushed_at:.1f}s, total {elapsed:.1f}s"
    )
