"""Crash safety: a gateway process killed with SIGKILL in the middle of large ``_bulk_docs``
pushes and REST batch syncs, again and again, loses nothing, duplicates nothing and leaves
nothing half-written.

``test_sigkill_during_pushes_and_batches_loses_and_duplicates_nothing`` (both backends) runs
one real ``gateway serve`` process.  Three PouchDB clients (``js/crash_client.js``) push a
large local database each (thousands of ~1 KB documents, then edits of a share of them, and
every client's own branch of a few shared documents, so conflicts exist), with live
replication retrying after every failure; a Python client (``rest_batches.py``) sends REST
batch syncs one after the other, each with an ``Idempotency-Key``, retried with the same key
and body until answered.  Meanwhile the test kills the process ``KILLS`` times at random
moments (a seeded ``random.Random``; the seed is in every failure message and
``GATEWAY_TEST_CRASH_SEED`` replays a schedule): most kills fall a random delay after the
pushes made progress since the last restart, every third one while a REST batch is in flight.
The first kill of each kind is not left to chance: the test holds the write lock
(``HeldWrites``) until a ``_bulk_docs`` has been sent (before the clients start), or until
one REST request has been out for a while, and kills the process then: the request cannot
be answered while the lock is held, so it is cut off however fast the machine.
Each time the process restarts on the same port with the same database, and the clients
carry on by themselves.  At the end every replica pulls once more, and the test checks that

* every document is present exactly once, with the body its client wrote last, and every
  replica holds exactly what the server holds (winners, conflicts, bodies);
* the changes feed has one entry per document, in strictly increasing seq order, up to the
  database's ``update_seq`` (no gap);
* every REST operation was applied exactly once: the inspections are exactly the ones the
  client was told about, at the versions it was told, no ConflictRecord was opened by a
  batch applied twice, and replaying every key answers the very bytes the client acted on;
* ``invariants.store_violations`` finds nothing in either database (complete revision trees,
  document rows that agree with them, one open ConflictRecord per live losing leaf, the
  REST index in step) and ``invariants.idempotency_violations`` no claim left blocking a key.

``test_a_killed_request_neither_blocks_its_key_nor_runs_twice`` (PostgreSQL, where a test can
hold a row lock to stop a request at an exact point) kills the process at the two moments
that matter for ``Idempotency-Key``: after the key is claimed but before the write, and after
the write but before its answer is stored.  The retry must run (not wait out a long lease)
and the write must happen exactly once.

Two in-process tests (both backends) pin the claim's lease: a running request renews it, so
a duplicate after several leases is still ``request_in_progress``; a request stalled past its
lease loses the key to the retry and cannot commit its own write.

No timing is asserted (the sleeps only let a lease run out); every wait is bounded and the
figures are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from statistics import mean
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.engine import is_sqlite, write_transaction
from schema.tables import databases, idempotency_keys
from tests.helpers import PASSWORD, Couch, basic, describe_diff
from tests.interop.conftest import NodeProcess, start_node
from tests.processes import Instance, flushed_redis, start_instances, stop_all
from tests.reliability.invariants import idempotency_violations, store_violations
from tests.reliability.rest_batches import BATCH_PATH, RestSyncClient

REDIS_URL = os.environ.get("GATEWAY_TEST_CRASH_REDIS_URL", "redis://127.0.0.1:6379/11")
SEED = int(os.environ.get("GATEWAY_TEST_CRASH_SEED") or random.SystemRandom().randrange(2**32))
DB = "crash"
CLIENTS = 3
DOCS_PER_CLIENT = 1200
ROUNDS = 2  # round 0 creates every document, round 1 edits half of them
SHARED = 3  # documents every client edits on its own branch
BATCH_SIZE = 250  # documents per _bulk_docs
KILLS = 10
REST_DB = "inspections"  # where the REST batches write
REACH_SECONDS = 0.5  # how long a request held by the writes is out before the kill
NODE_TIMEOUT = 240.0
PROGRESS_TIMEOUT = 60.0
GATEWAY_ENV = {
    # Rate limits are not under test here; the retries of a killed request must not hit them.
    "GATEWAY_WRITE_RATE_PER_USER": "0",
    "GATEWAY_WRITE_RATE_PER_DEVICE": "0",
}


def why(message: str) -> str:
    return f"{message} (seed {SEED}: rerun with GATEWAY_TEST_CRASH_SEED={SEED})"


# --- the gateway process and its helpers -----------------------------------------------------


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """``REDIS_URL``, flushed (feed wake-ups between restarts go through it)."""
    async with flushed_redis(REDIS_URL, "the crash test"):
        yield REDIS_URL


@pytest.fixture
async def gateway(
    engine: AsyncEngine, database_url: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[Instance]:
    """One ``gateway serve`` process on the test database (users created), ready."""
    started: list[Instance] = []
    try:
        await start_instances(started, 1, database_url, tmp_path, redis_url, GATEWAY_ENV)
        yield started[0]
    finally:
        await stop_all(started)


async def restart(gw: Instance, session: aiohttp.ClientSession) -> None:
    await gw.start()
    await gw.wait_ready(session)


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    user: str,
    body: Any = None,
    *,
    expected: int = 200,
    headers: dict[str, str] | None = None,
) -> Any:
    data = orjson.dumps(body) if body is not None else None
    all_headers = {"Authorization": basic(user), "Accept": "application/json"}
    all_headers.update({"Content-Type": "application/json"} if data else {})
    async with session.request(
        method, url, data=data, headers={**all_headers, **(headers or {})}
    ) as resp:
        raw = await resp.read()
        assert resp.status == expected, why(f"{method} {url}: {resp.status} {raw[:500]!r}")
        return orjson.loads(raw)


async def bounded(probe: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    """Poll ``probe`` every 20 ms until it is true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await probe():
        if time.monotonic() > deadline:
            pytest.fail(why(f"{what} within {seconds}s"), pytrace=False)
        await asyncio.sleep(0.02)


async def update_seq(engine: AsyncEngine, name: str) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(select(databases.c.update_seq).where(databases.c.name == name))
        return int(found.scalar_one_or_none() or 0)


# --- expected contents ------------------------------------------------------------------------


def payload(index: int, n: int | str, round_: int) -> str:
    return hashlib.sha256(f"{index}:{n}:{round_}".encode()).hexdigest() * 15


def own_body(index: int, n: int) -> dict[str, Any]:
    """What ``crash_client.js`` wrote last into ``p{index}-{n}`` (as ``ownBody``)."""
    last = n % ROUNDS
    return {"owner": index, "n": n, "round": last, "payload": payload(index, n, last)}


def shared_body(index: int, k: int) -> dict[str, Any]:
    last = ROUNDS - 1
    return {"shared": k, "by": index, "round": last, "payload": payload(index, f"shared-{k}", last)}


def replica_state(rows: list[dict[str, Any]]) -> dict[str, tuple[str, tuple[str, ...], Any]]:
    """id -> (winning rev, sorted conflicts, body without underscore members)."""
    out = {}
    for row in rows:
        doc = row["doc"]
        body = {k: v for k, v in doc.items() if not k.startswith("_")}
        out[row["id"]] = (doc["_rev"], tuple(sorted(doc.get("_conflicts", []))), body)
    return out


# --- the kill schedule ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kill:
    target: str  # "push": after the pushes made progress; "rest": while a batch is in flight
    delay: float  # seconds between the trigger and the SIGKILL
    rest_in_flight: bool  # a REST batch was in flight when the process died
    waited: float  # seconds from the last restart to the trigger
    restart: float  # seconds from the SIGKILL to ready again


class HeldWrites:
    """The lock every document write to the databases ``names`` takes, held by the test:
    SQLite's write lock (every write waits, reads go on), or on PostgreSQL the databases'
    rows (document writes wait; checkpoints and reads go on)."""

    def __init__(self, engine: AsyncEngine, *names: str) -> None:
        self._engine = engine
        self._names = names
        self._stack: contextlib.AsyncExitStack | None = None

    async def hold(self) -> None:
        stack = contextlib.AsyncExitStack()
        try:
            conn = await stack.enter_async_context(write_transaction(self._engine))
            if not is_sqlite(conn):  # NO KEY UPDATE: what a write takes, not what a reference
                await conn.execute(
                    select(databases.c.id)
                    .where(databases.c.name.in_(self._names))
                    .with_for_update(key_share=True)
                )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def release(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


async def held_in_flight(rest: RestSyncClient) -> float:
    """With the writes held: wait until one REST request has been out for ``REACH_SECONDS``
    (it reached the gateway and waits for the lock: a kill now cuts it off); return 0."""
    for _ in range(int(PROGRESS_TIMEOUT / REACH_SECONDS)):
        sent = rest.sent
        await asyncio.sleep(REACH_SECONDS)
        assert rest.failures == [], why(f"REST batches: {rest.failures[:5]}")
        if rest.in_flight.is_set() and rest.sent == sent:
            return 0.0
    pytest.fail(why("no REST request stayed in flight while the writes were held"))


async def kill_loop(
    gw: Instance,
    session: aiohttp.ClientSession,
    engine: AsyncEngine,
    rng: random.Random,
    rest: RestSyncClient,
    pushes_done: asyncio.Future[Any],
    first_held: HeldWrites,
    sent_markers: list[Path],
) -> list[Kill]:
    """Kill and restart ``gw`` ``KILLS`` times at random points of the traffic, except two.
    The first kill comes once a client has sent its first ``_bulk_docs``, with the writes
    held (``first_held``, taken before the clients started); the first aimed at a REST batch
    holds the writes until one request has been out a while.  A held request cannot be
    answered, so each of the two cuts a request off however fast the machine; the other
    kills fall a random delay after their trigger."""

    async def first_sent() -> bool:
        if pushes_done.done():  # a client ended (it failed): let its error show
            pushes_done.result()
        return any(marker.exists() for marker in sent_markers)

    kills = []
    for number in range(KILLS):
        ready_at = time.monotonic()
        target = "rest" if number % 3 == 2 or pushes_done.done() else "push"
        held = first_held if number == 0 else None
        if number == 2 and target == "rest":
            held = HeldWrites(engine, DB, REST_DB)
            await held.hold()
        try:
            if number == 0:
                await bounded(first_sent, PROGRESS_TIMEOUT, "no client sent a _bulk_docs")
                delay = REACH_SECONDS  # the request reaches the gateway and waits there
            elif target == "push":
                base = await update_seq(engine, DB)

                async def progressed(base: int = base) -> bool:
                    return pushes_done.done() or await update_seq(engine, DB) > base

                await bounded(progressed, PROGRESS_TIMEOUT, "the pushes made no progress")
                delay = rng.uniform(0.0, 0.4)
            else:

                async def in_flight() -> bool:
                    return rest.in_flight.is_set() or bool(rest.failures)

                await bounded(in_flight, PROGRESS_TIMEOUT, "no REST batch was sent")
                delay = rng.uniform(0.0, 0.03) if held is None else await held_in_flight(rest)
            waited = time.monotonic() - ready_at
            await asyncio.sleep(delay)
            flying = rest.in_flight.is_set()
            killed_at = time.monotonic()
            await gw.kill()
        finally:
            if held is not None:
                await held.release()
        await asyncio.sleep(rng.uniform(0.0, 0.3))  # down: clients get connection refused
        await restart(gw, session)
        kills.append(Kill(target, delay, flying, waited, time.monotonic() - killed_at))
    return kills


# --- the randomized crash test ----------------------------------------------------------------


@pytest.mark.interop
async def test_sigkill_during_pushes_and_batches_loses_and_duplicates_nothing(
    gateway: Instance, engine: AsyncEngine, tmp_path: Path
) -> None:
    started_at = time.monotonic()
    rng = random.Random(SEED)
    barrier = tmp_path / "kills-done"
    nodes: list[NodeProcess] = []
    rest = RestSyncClient(gateway.url, "alice", random.Random(f"{SEED}-rest"), f"r{SEED}")
    stop_rest = asyncio.Event()
    held = HeldWrites(engine, DB)
    async with aiohttp.ClientSession() as session:
        try:
            await request(session, "PUT", f"{gateway.url}/{DB}?access_mode=shared", "admin",
                          expected=201)  # fmt: skip
            await held.hold()  # until the first kill
            for index in range(CLIENTS):
                nodes.append(
                    await start_node(
                        "crash_client.js",
                        *map(str, (index, DOCS_PER_CLIENT, ROUNDS, SHARED, BATCH_SIZE, barrier)),
                        env={
                            "GATEWAY_DB_URL": f"{gateway.url}/{DB}",
                            "GATEWAY_USER": "alice" if index % 2 == 0 else "bob",
                            "GATEWAY_PASSWORD": PASSWORD,
                        },
                        timeout=NODE_TIMEOUT,
                    )
                )
            pushes = asyncio.ensure_future(
                asyncio.gather(*(node.read_json_line() for node in nodes))
            )
            markers = [Path(f"{barrier}.sent-{index}") for index in range(CLIENTS)]
            rest_task = asyncio.create_task(rest.run(session, stop_rest))
            kills = await kill_loop(gateway, session, engine, rng, rest, pushes, held, markers)
            killed_at = time.monotonic()
            stop_rest.set()
            await rest_task
            pushed = await pushes
            pushed_at = time.monotonic()
            barrier.touch()  # every client pushed everything: now each pulls once more
            results = await asyncio.gather(*(node.result() for node in nodes))
            pulled_at = time.monotonic()
            await check_pouchdb_side(session, gateway.url, engine, pushed, results)
            replays = await check_rest_side(session, gateway.url, rest)
            await check_invariants(engine)
        except BaseException:
            print(f"--- crash test seed {SEED}; gateway log ---\n{gateway.log_tail(30)}")
            raise
        finally:
            await held.release()
            stop_rest.set()
            for node in nodes:
                await node.kill()

    cut = sum(p["bulk_docs_cut"] for p in pushed)
    sent = sum(p["bulk_docs_sent"] for p in pushed)
    waits = [a.waited for a in rest.answers]
    print(
        f"\ncrash test (seed {SEED}): {len(kills)} SIGKILLs "
        f"({sum(k.target == 'push' for k in kills)} during pushes, "
        f"{sum(k.rest_in_flight for k in kills)} with a REST batch in flight); "
        f"{CLIENTS * DOCS_PER_CLIENT + SHARED} docs, {sent} _bulk_docs sent, {cut} cut off, "
        f"{sum(p['push_retries'] for p in pushed)} push retries; "
        f"{len(rest.answers)} REST batches ({rest.interrupted} attempts cut off, "
        f"{rest.refused} refused, {rest.in_progress} answered request_in_progress, "
        f"{replays} replays checked, "
        f"longest wait for an answer {max(waits, default=0):.1f}s); "
        f"per kill: trigger after {mean(k.waited for k in kills):.1f}s, back up after "
        f"{mean(k.restart for k in kills):.1f}s (means); "
        f"kills {killed_at - started_at:.1f}s, pushes done {pushed_at - started_at:.1f}s, "
        f"final pulls {pulled_at - pushed_at:.1f}s"
    )


async def check_pouchdb_side(
    session: aiohttp.ClientSession,
    url: str,
    engine: AsyncEngine,
    pushed: list[dict[str, Any]],
    results: list[dict[str, Any]],
) -> None:
    """Every document exactly once with its last body; replicas equal the server; the
    changes feed whole; no push refused or answered with a 5xx."""
    for line in pushed:
        assert line["denied"] == [] and line["errors"] == [], why(f"client {line['index']}: {line}")
        assert line["responses_5xx"] == [], why(f"5xx answers: {line['responses_5xx'][:5]}")
    assert sum(p["bulk_docs_cut"] for p in pushed) > 0, why("no kill cut a _bulk_docs request")

    all_docs = await request(
        session, "GET", f"{url}/{DB}/_all_docs?include_docs=true&conflicts=true", "admin"
    )
    server = replica_state(all_docs["rows"])
    expected_ids = {f"p{i}-{n}" for i in range(CLIENTS) for n in range(DOCS_PER_CLIENT)}
    expected_ids |= {f"shared-{k}" for k in range(SHARED)}
    ids = [row["id"] for row in all_docs["rows"]]
    assert len(ids) == len(set(ids)) == all_docs["total_rows"], why("duplicate _all_docs rows")
    assert set(ids) == expected_ids, why(
        f"{len(expected_ids - set(ids))} documents lost, {len(set(ids) - expected_ids)} extra"
    )
    for i in range(CLIENTS):
        for n in range(DOCS_PER_CLIENT):
            rev, conflicts, body = server[f"p{i}-{n}"]
            assert body == own_body(i, n), why(f"p{i}-{n} has {body}")
            generation = 1 if n % ROUNDS == 0 else 2
            assert rev.startswith(f"{generation}-") and conflicts == (), why(f"p{i}-{n} {rev}")
    for k in range(SHARED):
        leaves = await request(
            session, "GET", f"{url}/{DB}/shared-{k}?open_revs=all", "admin",
            headers={"Accept": "application/json"},
        )  # fmt: skip
        bodies = sorted(
            (
                {key: v for key, v in leaf["ok"].items() if not key.startswith("_")}
                for leaf in leaves
            ),
            key=lambda b: b["by"],
        )
        assert bodies == [shared_body(i, k) for i in range(CLIENTS)], why(f"shared-{k}: {bodies}")
        assert len(server[f"shared-{k}"][1]) == CLIENTS - 1, why(f"shared-{k} conflicts")

    for result in results:
        assert result["pull_ok"] is True and result["pull_failures"] == 0, why(str(result)[:500])
        replica = replica_state(result["dump"])
        assert replica == server, why(
            f"client {result['index']} differs from the server:\n{describe_diff(server, replica)}"
        )

    feed = await request(session, "GET", f"{url}/{DB}/_changes?style=all_docs", "admin")
    changes = feed["results"]
    seqs = [int(change["seq"]) for change in changes]
    assert all(a < b for a, b in itertools.pairwise(seqs)), why("_changes out of seq order")
    assert len(changes) == len({c["id"] for c in changes}) == len(expected_ids), why(
        f"{len(changes)} changes for {len(expected_ids)} documents"
    )
    assert int(feed["last_seq"]) == seqs[-1] == await update_seq(engine, DB), why("feed gap")
    for change in changes:
        rev, conflicts, _ = server[change["id"]]
        assert {c["rev"] for c in change["changes"]} == {rev, *conflicts}, why(str(change))


async def check_rest_side(session: aiohttp.ClientSession, url: str, rest: RestSyncClient) -> int:
    """Every batch applied exactly once; every key replays the answer the client acted on.
    Returns how many keys were replayed."""
    assert rest.failures == [], why(f"REST batches: {rest.failures[:5]}")
    assert rest.answers, why("no REST batch was answered")
    assert rest.interrupted > 0, why("no kill cut a REST batch off")
    headers = {**rest.headers}
    for answer in rest.answers:
        async with session.post(
            url + BATCH_PATH,
            data=orjson.dumps(answer.body),
            headers={**headers, "Idempotency-Key": answer.key},
        ) as resp:
            raw = await resp.read()
            assert resp.status == 207, why(f"replay of {answer.key}: {resp.status} {raw[:300]!r}")
            assert resp.headers.get("Idempotent-Replayed") == "true", why(answer.key)
            assert raw == answer.raw, why(f"{answer.key} replays another answer than it gave")

    live: dict[str, Any] = {}
    cursor = ""
    while True:
        page = await request(
            session, "GET",
            f"{url}/api/v1/inspections?limit=200" + (f"&cursor={quote(cursor)}" if cursor else ""),
            rest.user,
        )  # fmt: skip
        live.update({item["id"]: item for item in page["results"]})
        if not page["next"]:
            break
        cursor = page["next"]
    expected_live = {i: x for i, x in rest.expected.items() if not x.deleted}
    assert set(live) == set(expected_live), why(
        f"inspections: {len(set(live) - set(expected_live))} unexpected (applied twice?), "
        f"{len(set(expected_live) - set(live))} missing"
    )
    for doc_id, known in expected_live.items():
        item = live[doc_id]
        got = (item["title"], item["responses"], item["version"])
        assert got == (known.title, known.responses, known.version), why(f"{doc_id}: {got}")
    info = await request(session, "GET", f"{url}/inspections", "admin")
    deleted = sum(1 for x in rest.expected.values() if x.deleted)
    assert (info["doc_count"], info["doc_del_count"]) == (len(expected_live), deleted), why(
        f"inspections holds {info['doc_count']}/{info['doc_del_count']} live/deleted documents"
    )
    records = await request(session, "GET", f"{url}/api/v1/conflicts?db=inspections", "manager")
    assert records["results"] == [], why(f"a batch applied twice: {records['results'][:2]}")
    return len(rest.answers)


async def check_invariants(engine: AsyncEngine) -> None:
    found = await store_violations(engine, DB, full_history=True)
    found += await store_violations(engine, "inspections", full_history=True)
    found += await idempotency_violations(engine)
    assert not found, why("stored state broken:\n" + "\n".join(found[:30]))


# --- the two Idempotency-Key crash windows, exactly -------------------------------------------

INSPECTIONS_API = "/api/v1/inspections"


def waiting_on(engine: AsyncEngine, table: str) -> Callable[[], Awaitable[bool]]:
    """A probe: is a backend of this database waiting for a row lock of ``table`` (a
    request stopped exactly where the test holds it)?"""

    async def probe() -> bool:
        async with engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE :pattern"
                ),
                {"pattern": f"%{table}%"},
            )
            return bool(found.scalar_one())

    return probe


async def claimed(engine: AsyncEngine, key: str) -> bool:
    async with engine.connect() as conn:
        found = await conn.execute(
            select(func.count()).select_from(idempotency_keys).where(idempotency_keys.c.key == key)
        )
        return bool(found.scalar_one())


async def post_inspection(session: aiohttp.ClientSession, url: str, key: str) -> tuple[int, bytes]:
    body = {"template_id": "tpl-crash", "title": key, "site": "crash", "responses": {}}
    headers = {
        "Authorization": basic("alice"),
        "Content-Type": "application/json",
        "Idempotency-Key": key,
    }
    async with session.post(url + INSPECTIONS_API, data=orjson.dumps(body), headers=headers) as r:
        return r.status, await r.read()


async def retry_until_answered(session: aiohttp.ClientSession, url: str, key: str) -> int:
    """Retry ``key`` while it is ``request_in_progress``; its final status (bounded)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, raw = await post_inspection(session, url, key)
        if status != 409 or orjson.loads(raw)["error"] != "request_in_progress":
            return status
        await asyncio.sleep(0.2)
    pytest.fail(f"{key}: still request_in_progress after 60s: a dead claim blocks it")


@pytest.mark.postgres_only
async def test_a_killed_request_neither_blocks_its_key_nor_runs_twice(
    gateway: Instance, engine: AsyncEngine
) -> None:
    """Killed after claiming its key but before writing (``before-write``), and after
    writing but before its answer is stored (``after-write``): each retry runs without
    waiting out a long claim, and each inspection exists exactly once."""
    async with aiohttp.ClientSession() as session:
        await retry_until_answered(session, gateway.url, "warm-up")  # the database exists
        database_row = select(databases.c.id).where(databases.c.name == "inspections")
        # before-write: the write waits for the database row we hold; kill it there.
        async with engine.connect() as locker:
            await locker.begin()
            await locker.execute(database_row.with_for_update())
            sent = asyncio.ensure_future(post_inspection(session, gateway.url, "before-write"))
            await bounded(lambda: claimed(engine, "before-write"), 10, "no claim")
            await bounded(waiting_on(engine, "databases"), 10, "the request is not at its write")
            await gateway.kill()
            await locker.rollback()
        with contextlib.suppress(aiohttp.ClientError):
            await sent
        await restart(gateway, session)

        # after-write: hold the claim row instead, so the answer cannot be stored.
        async with engine.connect() as db_lock, engine.connect() as key_lock:
            await db_lock.begin()
            await db_lock.execute(database_row.with_for_update())
            sent = asyncio.ensure_future(post_inspection(session, gateway.url, "after-write"))
            await bounded(lambda: claimed(engine, "after-write"), 10, "no claim")
            await key_lock.begin()
            await key_lock.execute(
                select(idempotency_keys.c.key)
                .where(idempotency_keys.c.key == "after-write")
                .with_for_update()
            )
            await db_lock.rollback()  # the request writes now, then waits for the claim row
            await bounded(
                waiting_on(engine, "idempotency_keys"), 10, "the request is not at its answer"
            )
            await gateway.kill()
            await key_lock.rollback()
        with contextlib.suppress(aiohttp.ClientError):
            await sent
        await restart(gateway, session)

        statuses = await asyncio.gather(
            *(
                retry_until_answered(session, gateway.url, k)
                for k in ("before-write", "after-write")
            )
        )
        assert statuses == [201, 201]
        listed = await request(session, "GET", f"{gateway.url}{INSPECTIONS_API}", "alice")
        titles = sorted(item["title"] for item in listed["results"])
        assert titles == ["after-write", "before-write", "warm-up"], titles
    assert await idempotency_violations(engine) == []
    assert await store_violations(engine, "inspections", full_history=True) == []


# --- the claim's lease, in process --------------------------------------------------------------


class Gate:
    """Holds the first request that reaches ``rest_db`` (before any transaction) until
    ``release``; later requests pass."""

    def __init__(self, real: Callable[..., Awaitable[Any]]) -> None:
        self.real = real
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()
        self.calls = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.reached.set()
            await self.opened.wait()
        return await self.real(*args, **kwargs)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    from gateway.handlers import inspections

    held = Gate(inspections.rest_db)
    monkeypatch.setattr(inspections, "rest_db", held)
    return held


async def send_keyed(couch: Couch, key: str) -> tuple[int, dict[str, str], bytes]:
    body = {"template_id": "tpl-crash", "title": "lease", "site": "crash", "responses": {}}
    headers = couch.headers({"Idempotency-Key": key})
    async with couch.client.post(INSPECTIONS_API, data=orjson.dumps(body), headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


async def test_a_running_request_keeps_its_claim_beyond_the_lease(
    alice: Couch, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease is short so that a dead instance's claim frees itself quickly; a request
    that is alive renews it, so a duplicate arriving after one lease is still told the first
    one is running, and the request is applied once."""
    from gateway import idempotency

    monkeypatch.setattr(idempotency, "CLAIM_LEASE", timedelta(seconds=3))
    monkeypatch.setattr(idempotency, "RENEW_EVERY", 0.1)  # a stall under 2.9 s is harmless
    first = asyncio.ensure_future(send_keyed(alice, "long-running"))
    await asyncio.wait_for(gate.reached.wait(), 10)
    await asyncio.sleep(6.0)  # two leases: without renewal the claim would be free by now
    await refused_while_running_then_applied_once(alice, gate, first, "long-running")


async def refused_while_running_then_applied_once(
    alice: Couch, gate: Gate, first: asyncio.Future[Any], key: str
) -> None:
    """While ``first`` (keyed ``key``) waits at the gate, a duplicate is told it is still
    running; released, ``first`` is a 201 that replays byte for byte and made one
    inspection."""
    duplicate = await send_keyed(alice, key)
    assert duplicate[0] == 409 and orjson.loads(duplicate[2])["error"] == "request_in_progress"
    gate.opened.set()
    status, _, raw = await first
    assert status == 201, raw
    replay = await send_keyed(alice, key)
    assert replay[0] == 201 and replay[2] == raw and replay[1]["Idempotent-Replayed"] == "true"
    assert len((await alice.get(INSPECTIONS_API))["results"]) == 1


async def test_an_instance_whose_clock_runs_ahead_does_not_take_over_a_live_claim(
    alice: Couch, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases are reckoned by the database's clock.  A duplicate handled by an instance
    whose clock is an hour ahead (here: the module's clock, patched after the first request
    claimed its key) must still see the first request's claim as live: a 409, then one
    application.  With instance clocks, the duplicate took the key over and ran twice."""
    from gateway import idempotency

    class AnHourAhead(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
            return datetime.now(tz) + timedelta(hours=1)

    first = asyncio.ensure_future(send_keyed(alice, "skewed"))
    await asyncio.wait_for(gate.reached.wait(), 10)
    monkeypatch.setattr(idempotency, "datetime", AnHourAhead)
    await refused_while_running_then_applied_once(alice, gate, first, "skewed")


async def test_a_request_that_outlived_its_lease_cannot_commit_its_write(
    alice: Couch, gate: Gate, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance stalled past its lease (no renewal) is taken for dead: the retry takes
    the key over and runs.  When the stalled request resumes, its write must not commit
    (it would be the second application): it answers 409 ``request_in_progress`` and the
    key replays the retry's answer."""
    from gateway import idempotency

    monkeypatch.setattr(idempotency, "CLAIM_LEASE", timedelta(milliseconds=200))
    monkeypatch.setattr(idempotency, "RENEW_EVERY", 3600.0)  # a stalled instance renews nothing
    stalled = asyncio.ensure_future(send_keyed(alice, "stalled"))
    await asyncio.wait_for(gate.reached.wait(), 10)
    await asyncio.sleep(0.5)  # the lease runs out
    retry = await send_keyed(alice, "stalled")
    assert retry[0] == 201 and "Idempotent-Replayed" not in retry[1], retry[2]
    gate.opened.set()
    status, headers, raw = await stalled
    assert status == 409 and orjson.loads(raw)["error"] == "request_in_progress", raw
    assert headers["Retry-After"] == "1"
    again = await send_keyed(alice, "stalled")
    assert again[0] == 201 and again[2] == retry[2]
    assert len((await alice.get(INSPECTIONS_API))["results"]) == 1
    assert await store_violations(engine, "inspections", full_history=True) == []


async def test_a_stalled_template_create_cannot_commit_a_second_template(
    manager: Couch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template created without an id gets a generated one, so a second application
    would be a second template: its answer is stored with its write too, and a request
    that outlived its lease writes nothing."""
    from gateway import idempotency
    from gateway.handlers import templates

    monkeypatch.setattr(idempotency, "CLAIM_LEASE", timedelta(milliseconds=200))
    monkeypatch.setattr(idempotency, "RENEW_EVERY", 3600.0)
    api = "/api/v1/templates"
    body = orjson.dumps({"name": "Stalled", "fields": [{"key": "p", "type": "number"}]})
    headers = manager.headers({"Idempotency-Key": "stalled-template"})

    async def send() -> tuple[int, bytes]:
        async with manager.client.post(api, data=body, headers=headers) as r:
            return r.status, await r.read()

    before = len((await manager.get(api))["results"])
    held = Gate(templates.rest_db)  # holds the next request that opens the database
    monkeypatch.setattr(templates, "rest_db", held)
    stalled = asyncio.ensure_future(send())
    await asyncio.wait_for(held.reached.wait(), 10)
    await asyncio.sleep(0.5)  # the lease runs out
    retry = await send()
    assert retry[0] == 201, retry[1]
    held.opened.set()
    status, raw = await stalled
    assert status == 409 and orjson.loads(raw)["error"] == "request_in_progress", raw
    assert await send() == retry
    listed = (await manager.get(api))["results"]
    assert len(listed) == before + 1
    assert [t["id"] for t in listed if t["name"] == "Stalled"] == [orjson.loads(retry[1])["id"]]
