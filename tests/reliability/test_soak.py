"""Soak: 200 concurrent PouchDB replications and REST batch traffic across three gateway
instances for a bounded time, then every figure that says the servers held up.

Three ``gateway serve`` processes share the test's PostgreSQL database and Redis database
``SOAK_REDIS_URL`` (feed wake-ups cross instances through it).  Four Node processes
(``js/soak_client.js``) run 50 replications each, every one with its own in-memory PouchDB,
user and database:

* 80 pushers write new documents (and update earlier ones) into eight shared "team"
  databases and push them through the instances in turn;
* 72 live pulls (PouchDB's longpoll feed) follow those team databases, each on one
  instance, so they receive what others pushed through the other instances;
* 40 syncers push and pull an ``owned`` database as eight inspectors (so each pull brings
  what the same user's other devices pushed elsewhere);
* 8 live pulls follow the ``inspections`` database as a manager, while four Python REST
  clients send ``/api/v1/sync/batch`` batches (creates and versioned updates) to it;
* and one team database is also followed by raw ``continuous`` and ``eventsource``
  ``_changes`` feeds, one on each instance.

Writers stop after ``DURATION_S``.  The test then writes the server's digest of every
database (and, for the owned one, of every user's view) to a barrier file; live replicas
must reach it and syncers must match it after one more pull.  Asserted: no request failed
(no 5xx, no network error, no failed push or batch, nothing logged at ERROR — pool
exhaustion shows up there), every acknowledged write is on the server at its acknowledged
revision or version, every replica converged, the stored state keeps every invariant
(``tests/reliability/invariants.py``: whole revision trees, a changes feed without gaps or
duplicates, no orphaned ConflictRecord or idempotency key), PostgreSQL's deadlock counter
did not move, and each instance's RSS grew by at most ``RSS_GROWTH_LIMIT_MIB`` from warm-up
to the end.  The figures (RSS, latencies, counts) go to ``GATEWAY_SOAK_REPORT`` (else
``soak-report.json`` in the test's directory) and are printed.  No duration is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.tables import users
from tests.helpers import PASSWORD, basic
from tests.interop.conftest import NodeProcess, start_node
from tests.processes import Instance, flushed_redis, start_instances, stop_all
from tests.reliability.invariants import idempotency_violations, store_violations
from tests.reliability.soak_metrics import (
    LogSummary,
    Scrape,
    cpu_seconds,
    deadlocks,
    merged_buckets,
    percentile,
    read_log,
    scrape,
)
from tests.reliability.soak_rest import RestWorker

pytestmark = [pytest.mark.interop, pytest.mark.postgres_only]

SOAK_REDIS_URL = os.environ.get("GATEWAY_TEST_SOAK_REDIS_URL", "redis://127.0.0.1:6379/14")
DURATION_S = float(os.environ.get("GATEWAY_SOAK_SECONDS", "45"))
INSTANCES = 3
PROCESSES = 4
TEAMS = 8
OWNED_DB = "soak-owned"
INSPECTIONS = "inspections"
INSPECTORS = [f"soak-u{i}" for i in range(8)]
REST_USERS = [f"soak-rest-{i}" for i in range(4)]
# Per Node process: 20 pushers, 18 team live pulls, 10 owned syncers, 2 inspections pulls.
ROLES = ["pusher"] * 20 + ["live"] * 18 + ["syncer"] * 10 + ["watcher"] * 2
PAD_BYTES = 300
RSS_GROWTH_LIMIT_MIB = 32  # per instance, from warm-up to the end (allocator slack, caches)
FOLLOWED = "soak-team-0"  # also followed by raw continuous and eventsource feeds
LINE_TIMEOUT_S = DURATION_S + 120  # bounded wait for each line a Node process prints


def team(n: int) -> str:
    return f"soak-team-{n}"


@pytest.fixture
async def redis_db() -> AsyncIterator[Any]:
    """A client of ``SOAK_REDIS_URL`` (flushed: this test's own Redis database); skips the
    test when Redis is not reachable."""
    async with flushed_redis(SOAK_REDIS_URL, "the soak test") as client:
        yield client


@pytest.fixture
async def instances(
    engine: AsyncEngine, database_url: str, password_hash: str, redis_db: Any, tmp_path: Path
) -> AsyncIterator[list[Instance]]:
    """The soak's users, then three ``gateway serve`` processes, ready; always stopped."""
    async with engine.begin() as conn:
        await conn.execute(
            users.insert(),
            [
                {"name": name, "role": "inspector", "password_hash": password_hash}
                for name in INSPECTORS + REST_USERS
            ],
        )
    started: list[Instance] = []
    try:
        env = {"GATEWAY_LOG_LEVEL": "INFO"}  # an access line per request, with its duration
        await start_instances(started, INSTANCES, database_url, tmp_path, SOAK_REDIS_URL, env)
        yield started
    finally:
        await stop_all(started)


def plan(proc: int, instances: list[Instance], barrier: Path) -> dict[str, Any]:
    """The 50 replications of Node process ``proc`` (see the module docstring)."""
    slots = []
    for k, role in enumerate(ROLES):
        index = proc * len(ROLES) + k
        if role == "pusher":
            user = ["alice", "bob", "manager", INSPECTORS[index % len(INSPECTORS)]][index % 4]
            slot = {"role": "pusher", "db": team(index % TEAMS), "user": user}
            slot |= {"docs_per_round": 3, "pause_ms": 4000}
        elif role == "live":
            slot = {"role": "live", "db": team(index % TEAMS), "user": ["alice", "bob"][index % 2]}
        elif role == "syncer":
            user = INSPECTORS[index % len(INSPECTORS)]
            slot = {"role": "syncer", "db": OWNED_DB, "user": user}
            slot |= {"docs_per_round": 2, "pause_ms": 4000}
        else:
            slot = {"role": "live", "db": INSPECTIONS, "user": "manager"}
        slot |= {"name": f"p{proc}s{k}", "index": index}
        slot["urls"] = [f"{inst.url}/{slot['db']}" for inst in instances]
        slots.append(slot)
    return {
        "proc": proc,
        "password": PASSWORD,
        "pad_bytes": PAD_BYTES,
        "duration_ms": int(DURATION_S * 1000),
        "barrier_file": str(barrier),
        "slots": slots,
    }


def digest(rows: list[tuple[str, str]]) -> dict[str, Any]:
    """What ``soak_client.js`` computes for a replica: sha256 over "id rev\\n" by id."""
    hash_ = hashlib.sha256()
    for doc_id, rev in sorted(rows):
        hash_.update(f"{doc_id} {rev}\n".encode())
    return {"digest": hash_.hexdigest(), "count": len(rows)}


async def all_docs(session: aiohttp.ClientSession, url: str, user: str) -> dict[str, str]:
    """id -> winning rev of every live document ``user`` sees in the database at ``url``."""
    async with session.get(f"{url}/_all_docs", headers={"Authorization": basic(user)}) as resp:
        assert resp.status == 200, (url, resp.status, await resp.text())
        body = orjson.loads(await resp.read())
    return {row["id"]: row["value"]["rev"] for row in body["rows"]}


async def wait_subscribed(redis: Any, count: int) -> None:
    """Wait (bounded) until ``count`` connections to our Redis database hold a pattern
    subscription: every instance relays the others' wake-ups."""
    db = int(redis.connection_pool.connection_kwargs.get("db", 0))
    for _ in range(100):
        clients = await redis.client_list()
        if sum(1 for c in clients if int(c.get("db", -1)) == db and int(c["psub"])) >= count:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"the {count} gateway instances did not all subscribe to Redis within 10 s")


async def sample_pools(
    session: aiohttp.ClientSession, instances: list[Instance], peaks: list[float]
) -> None:
    """Keep the highest ``gateway_db_pool_checked_out`` seen on each instance."""
    while True:
        for i, inst in enumerate(instances):
            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                peaks[i] = max(peaks[i], (await scrape(session, inst.url)).pool_checked_out)
        await asyncio.sleep(1.0)


async def follow(session: aiohttp.ClientSession, url: str, feed: str, seen: dict[str, str]) -> None:
    """Read a continuous or eventsource ``_changes`` feed of ``url`` as admin until
    cancelled, keeping the latest rev of every document it announces in ``seen``."""
    path = f"{url}/_changes?feed={feed}&heartbeat=5000&since=0"
    async with session.get(
        path, headers={"Authorization": basic("admin")}, timeout=aiohttp.ClientTimeout()
    ) as resp:
        assert resp.status == 200, resp.status
        async for line in resp.content:
            text = line.strip()
            if feed == "eventsource":
                if not text.startswith(b"data: "):
                    continue
                text = text[len(b"data: ") :]
            if text:
                row = orjson.loads(text)
                if "id" in row and not row.get("deleted"):
                    seen[row["id"]] = row["changes"][0]["rev"]


async def wait_phase(nodes: list[NodeProcess], phase: str) -> None:
    lines = await asyncio.gather(*(node.read_json_line() for node in nodes))
    assert [line.get("phase") for line in lines] == [phase] * len(nodes), lines


async def test_soak_200_replications_and_rest_batches_across_three_instances(
    instances: list[Instance],
    redis_db: Any,
    engine: AsyncEngine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under 200 concurrent replications, live feeds and REST batches on three instances:
    no request fails, nothing acknowledged is lost, every replica and feed converges, the
    store keeps its invariants, PostgreSQL records no deadlock and memory stays flat."""
    started_at = time.monotonic()
    await wait_subscribed(redis_db, INSTANCES)
    barrier = tmp_path / "barrier.json"
    nodes: list[NodeProcess] = []
    workers = [
        RestWorker(user, [inst.url for inst in instances], i) for i, user in enumerate(REST_USERS)
    ]
    pool_peaks = [0.0] * INSTANCES
    rest: asyncio.Future[list[None]] | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        admin = {"Authorization": basic("admin")}
        for name, mode in [(team(n), "shared") for n in range(TEAMS)] + [(OWNED_DB, "owned")]:
            url = f"{instances[0].url}/{name}?access_mode={mode}"
            async with session.put(url, headers=admin) as resp:
                assert resp.status == 201, await resp.text()
        deadlocks_before = await deadlocks(engine)
        sampler = asyncio.create_task(sample_pools(session, instances, pool_peaks))
        followed: list[dict[str, str]] = [{}, {}, {}]  # one raw feed per instance
        feeds = [
            asyncio.create_task(follow(session, f"{inst.url}/{FOLLOWED}", kind, seen))
            for inst, kind, seen in zip(
                instances, ["continuous", "eventsource", "continuous"], followed, strict=True
            )
        ]
        try:
            for proc in range(PROCESSES):
                plan_file = tmp_path / f"plan{proc}.json"
                write_atomically(plan_file, orjson.dumps(plan(proc, instances, barrier)))
                nodes.append(
                    await start_node(
                        "soak_client.js",
                        str(plan_file),
                        env={
                            "GATEWAY_DB_URL": f"{instances[0].url}/{team(0)}",
                            "GATEWAY_USER": "admin",
                            "GATEWAY_PASSWORD": PASSWORD,
                        },
                        timeout=LINE_TIMEOUT_S,
                    )
                )
            traffic_started = time.monotonic()
            deadline = traffic_started + DURATION_S
            rest = asyncio.gather(*(w.run(session, deadline) for w in workers))
            await wait_phase(nodes, "warm")
            rss_start = [inst.rss_kib() for inst in instances]
            cpu_start = [cpu_seconds(inst.proc.pid) for inst in instances if inst.proc]
            await wait_phase(nodes, "stopped")
            node_cpu = [cpu_seconds(node.proc.pid) for node in nodes]
            await asyncio.wait_for(rest, LINE_TIMEOUT_S)
            traffic_s = time.monotonic() - traffic_started

            # Nothing is written any more: what the server holds is final.
            url0 = instances[0].url
            server = {name: await all_docs(session, f"{url0}/{name}", "admin") for name in
                      [team(n) for n in range(TEAMS)] + [OWNED_DB, INSPECTIONS]}  # fmt: skip
            digests = {name: digest(list(docs.items())) for name, docs in server.items()}
            for user in INSPECTORS:
                mine = await all_docs(session, f"{url0}/{OWNED_DB}", user)
                digests[f"{OWNED_DB}/{user}"] = digest(list(mine.items()))
            write_atomically(barrier, orjson.dumps({"digests": digests}))
            results = await asyncio.gather(*(node.result() for node in nodes))
            for _ in range(int(LINE_TIMEOUT_S * 4)):  # the raw feeds caught up too (bounded)
                if all(seen == server[FOLLOWED] for seen in followed):
                    break
                await asyncio.sleep(0.25)
            rss_end = [inst.rss_kib() for inst in instances]
            cpu_used = [
                cpu_seconds(inst.proc.pid) - start
                for inst, start in zip(instances, cpu_start, strict=True)
                if inst.proc
            ]
            scrapes = [await scrape(session, inst.url) for inst in instances]
        except BaseException:
            for inst in instances:
                print(f"--- gateway instance {inst.index} log ---\n{inst.log_tail()}")
            raise
        finally:
            for task in (sampler, rest, *feeds):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for node in nodes:
                await node.kill()
    await stop_all(instances)  # their backends exit: every statistic is flushed
    deadlocks_after = await deadlocks(engine)
    logs = [read_log(inst.log_path) for inst in instances]

    slots = [slot for result in results for slot in result["slots"]]
    tallies = [result["tally"] for result in results]
    bulk_ms = [ms for tally in tallies for ms in tally["bulk_docs_ms"]]
    merged = merged_buckets(scrapes)
    report = figures(
        instances, slots, tallies, workers, bulk_ms, merged, scrapes, logs, rss_start, rss_end,
        cpu_used, node_cpu, (deadlocks_before, deadlocks_after), pool_peaks, traffic_s,
        time.monotonic() - started_at,
    )  # fmt: skip
    with capsys.disabled():  # the figures show in every run's output, passed or not
        write_report(report, Path(os.environ.get("GATEWAY_SOAK_REPORT") or tmp_path / "soak.json"))

    # No request failed anywhere: clients, REST workers, server counters and logs.
    assert len(slots) == PROCESSES * len(ROLES) == 200
    for tally in tallies:
        assert tally["server_errors"] == [], tally["server_errors"][:5]
        assert tally["fetch_errors"] == [], tally["fetch_errors"][:5]
    for worker in workers:
        assert worker.failures == [], worker.failures[:5]
        assert worker.acked, f"{worker.user} got no batch through"
    assert merged.statuses.get("5xx", 0) == 0, merged.statuses
    # The only refusals: a replication's first read of a checkpoint it has not written yet.
    assert set(merged.others) <= {"404 GET /{db}/_local/{localid}"}, merged.others
    for inst, log in zip(instances, logs, strict=True):
        assert log.bad == [], f"instance {inst.index} logged: {log.bad[:5]}"
    assert deadlocks_after - deadlocks_before == 0, (deadlocks_before, deadlocks_after)

    # Every replication worked and every replica converged on what the server holds.
    for slot in slots:
        if slot["role"] in ("pusher", "syncer"):
            assert slot["failures"] == [], (slot["name"], slot["failures"][:3])
            assert slot["rounds"] > 0 and slot["acked"], slot["name"]
        if slot["role"] == "syncer":
            assert slot["converged"], (slot["name"], slot["replica"], slot["final_pull"])
        if slot["role"] == "live":
            assert slot["caught_up"] and slot["errors"] == [], (slot["name"], slot["errors"])
            assert slot["docs_written"] > 0, f"{slot['name']} received nothing"
    for index, seen in enumerate(followed):  # raw continuous/eventsource feeds, per instance
        missing = server[FOLLOWED].items() - seen.items()
        assert not missing, f"the feed on instance {index} lacks {sorted(missing)[:3]}"
        assert len(seen) == len(server[FOLLOWED]), f"the feed on instance {index} has extras"

    # Every acknowledged write is on the server at the revision (or version) acknowledged.
    for slot in slots:
        for doc_id, rev in slot.get("acked", {}).items():
            assert server[slot["db"]].get(doc_id) == rev, (slot["name"], doc_id, rev)
    inspections = server[INSPECTIONS]
    for worker in workers:
        for doc_id, version in worker.acked.items():
            assert int(inspections[doc_id].split("-")[0]) == version, (doc_id, version)

    # The stored state keeps every invariant (trees, feeds, conflicts, idempotency keys).
    violations = await idempotency_violations(engine)
    for name in server:
        violations += await store_violations(engine, name, full_history=name != INSPECTIONS)
    assert violations == [], "\n".join(violations[:20])

    # Memory stays flat: bounded growth from warm-up to the end on every instance.
    for inst, start, end in zip(instances, rss_start, rss_end, strict=True):
        assert end - start <= RSS_GROWTH_LIMIT_MIB * 1024, (inst.index, start, end)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees all of it or no file."""
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    partial.rename(path)


def write_report(report: dict[str, Any], path: Path) -> None:
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    path.write_bytes(text)
    print(f"\nsoak figures ({path}):\n{text.decode()}")


def figures(
    instances: list[Instance],
    slots: list[dict[str, Any]],
    tallies: list[dict[str, Any]],
    workers: list[RestWorker],
    bulk_ms: list[float],
    merged: Scrape,
    scrapes: list[Scrape],
    logs: list[LogSummary],
    rss_start: list[int],
    rss_end: list[int],
    cpu_used: list[float],
    node_cpu: list[float],
    deadlock_counts: tuple[int, int],
    pool_peaks: list[float],
    traffic_s: float,
    wall_s: float,
) -> dict[str, Any]:
    """The soak's figures, as written to the report."""
    roles: dict[str, int] = {}
    for slot in slots:
        kind = "inspections live" if slot["db"] == INSPECTIONS else slot["role"]
        roles[kind] = roles.get(kind, 0) + 1
    rest_ms = [ms for w in workers for ms in w.latencies_ms]
    catch_up = [slot["catch_up_ms"] for slot in slots if slot["role"] == "live"]
    server_ms = [ms for log in logs for ms in log.bulk_docs_ms]
    return {
        "instances": len(instances),
        "replications": roles,
        "traffic_seconds": round(traffic_s, 1),
        "wall_seconds": round(wall_s, 1),
        "docs_pushed": sum(slot.get("written", 0) for slot in slots),
        "push_rounds": sum(slot.get("rounds", 0) for slot in slots),
        "docs_received_by_live_pulls": sum(s.get("docs_written", 0) for s in slots),
        "rest_batches": sum(w.batches for w in workers),
        "rest_inspections": sum(len(w.acked) for w in workers),
        "client_requests": sum(t["requests"] for t in tallies),
        "server_answers": {k: int(v) for k, v in sorted(merged.statuses.items())},
        "server_answers_not_2xx": {k: int(v) for k, v in sorted(merged.others.items())},
        "bulk_docs": {
            "count": len(bulk_ms),
            "client_ms": {f"p{q}": percentile(bulk_ms, q) for q in (50, 95, 99)}
            | {"max": max(bulk_ms, default=None)},
            "server_ms": {f"p{q}": percentile(server_ms, q) for q in (50, 95, 99)}
            | {"max": max(server_ms, default=None)},
            "server_histogram_upper_bound_s": {
                "p50": merged.quantile_bound(0.5),
                "p99": merged.quantile_bound(0.99),
            },
        },
        "rest_batch_ms": {f"p{q}": round(percentile(rest_ms, q) or 0, 1) for q in (50, 99)},
        "live_catch_up_ms_max": max(catch_up, default=None),
        "rss_kib": [
            {"instance": i.index, "start": s, "end": e, "growth": e - s}
            for i, s, e in zip(instances, rss_start, rss_end, strict=True)
        ],
        "gateway_cpu_seconds_from_warm_up": [round(c, 1) for c in cpu_used],
        "node_cpu_seconds_while_writing": [round(c, 1) for c in node_cpu],
        "db_pool_checked_out_peak": pool_peaks,
        "db_pool_overflow_at_end": [s.pool_overflow for s in scrapes],
        "pg_deadlocks": {"before": deadlock_counts[0], "after": deadlock_counts[1]},
    }
