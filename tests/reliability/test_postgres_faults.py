"""PostgreSQL taken away under the gateway: stopped and restarted under load (``pg_ctl stop
-m fast`` and ``-m immediate``), sessions terminated inside their transaction, pooled
connections killed while idle.

Two real ``gateway serve`` processes (``tests.processes``) run on a private PostgreSQL
cluster (``tests.reliability.services``) that the tests stop and start at will; the load is
``tests.reliability.fault_load`` (PouchDB replicating live, ``_bulk_docs``, edits and REST
writes through both instances, a continuous feed reader).  PostgreSQL pass only.

Whatever the timing of the fault: every answer is a success or a 503 with ``Retry-After``
and a CouchDB body (never another 5xx, never a dropped connection, never a hang); the same
processes recover by themselves; every acknowledged write is stored exactly once at its
revision, nothing answered 503 while the database was down was written, the feed reader and
PouchDB miss nothing, no Idempotency-Key stays blocked and the store keeps its invariants
(``tests.reliability.invariants``).  Figures are printed (``-s``), never asserted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from tests.helpers import PASSWORD
from tests.processes import Instance, start_instances
from tests.reliability.fault_load import (
    DB,
    REQUEST_TIMEOUT,
    WRITERS,
    Answer,
    Load,
    Traffic,
    auth,
    create_databases,
    invariant_violations,
    kill_all,
    unavailable_problem,
    until_async,
)
from tests.reliability.services import PrivatePostgres, postgres_binaries

TEMPLATE_DB = "gw_template"
USERS = {"admin": "admin", "manager": "manager", "alice": "inspector"}

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


# --- the private cluster and the gateway processes ----------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster holding ``gw_template``: migrated, with the users."""
    found = postgres_binaries()
    if isinstance(found, str):
        pytest.skip(found)
    pg = PrivatePostgres(found)

    async def prepare() -> None:
        from gateway.migrate import upgrade
        from schema.engine import make_engine
        from schema.tables import users
        from schema.users import hash_password

        await pg.init()
        await pg.start()
        await pg.create_database(TEMPLATE_DB)
        engine = make_engine(pg.url(TEMPLATE_DB), pool_size=1)
        try:
            await upgrade(engine)
            digest = hash_password(PASSWORD)
            async with engine.begin() as conn:
                await conn.execute(
                    users.insert(),
                    [{"name": n, "role": r, "password_hash": digest} for n, r in USERS.items()],
                )
        finally:
            await engine.dispose()

    try:
        asyncio.run(prepare())
        yield pg
    finally:
        asyncio.run(pg.destroy())


async def sql(cluster: PrivatePostgres, query: str, *args: Any, database: str) -> list[Any]:
    """One statement on a connection of its own to the private cluster."""
    conn = await asyncpg.connect(
        host="127.0.0.1", port=cluster.port, user=cluster.user, database=database
    )
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


@pytest.fixture
async def gateway_db(cluster: PrivatePostgres) -> str:
    """A fresh database on the private cluster (a copy of the template): its URL."""
    if not (cluster.data / "postmaster.pid").exists():
        await cluster.start()  # an earlier test failed while it was stopped
    name = f"gw_{uuid.uuid4().hex[:12]}"
    await sql(cluster, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"', database="postgres")
    return cluster.url(name)


@pytest.fixture
async def instances(gateway_db: str, tmp_path: Path) -> AsyncIterator[list[Instance]]:
    """Two ``gateway serve`` processes on the private cluster (no Redis; feeds poll every
    0.5 s), ready; the shared database ``field`` exists."""
    started: list[Instance] = []
    try:
        env = {"GATEWAY_FEED_POLL_SECONDS": "0.5"}
        await start_instances(started, 2, gateway_db, tmp_path, extra_env=env)
        await create_databases([i.url for i in started], DB)
        yield started
    finally:
        await kill_all(started)


# --- PostgreSQL stopped and restarted under load ------------------------------------------

DOWN_PROBES: list[tuple[str, str, Any]] = [
    ("GET", f"/{DB}", None),
    ("GET", "/_all_dbs", None),
    ("PUT", f"/{DB}/probe-put", {"v": 1}),
    ("POST", f"/{DB}/_bulk_docs", {"docs": [{"_id": "probe-bulk"}]}),
    ("POST", f"/{DB}/_revs_diff", {"x": ["1-abc"]}),
    ("POST", f"/{DB}/_bulk_get", {"docs": [{"id": "x"}]}),
    ("GET", f"/{DB}/_all_docs", None),
    ("GET", f"/{DB}/_changes?since=0", None),
    ("GET", f"/{DB}/_changes?feed=longpoll&since=now&timeout=1000", None),
    ("GET", f"/{DB}/_local/checkpoint", None),
    ("POST", "/api/v1/inspections", {"id": "c0ffee00-0000-4000-8000-000000000001", "title": "p"}),
    ("GET", "/api/v1/inspections", None),
    ("POST", "/api/v1/sync/batch", {"operations": [{"op": "create", "data": {"title": "p"}}]}),
    ("GET", "/api/v1/sync/changes", None),
    ("GET", "/api/v1/conflicts", None),
]
PROBE_IDS = {"probe-put", "probe-bulk", "c0ffee00-0000-4000-8000-000000000001"}


async def check_while_down(session: aiohttp.ClientSession, instances: list[Instance]) -> None:
    """While PostgreSQL is down, every route that needs it answers 503 with Retry-After and
    a CouchDB body, logins too; ``/healthz`` stays 200 (also with credentials, which it
    must not look at), ``/readyz`` is 503."""
    for instance in instances:
        for method, path, body in DOWN_PROBES:
            data = orjson.dumps(body) if body is not None else None
            url = instance.url + path
            async with session.request(method, url, data=data, headers=auth("alice")) as resp:
                answer = Answer(resp.status, resp.headers, await resp.json())
            assert answer.status == 503, (method, path, answer.status, answer.body)
            assert unavailable_problem(answer) is None, (method, path, answer)
        login = {"username": "alice", "password": PASSWORD}
        async with session.post(f"{instance.url}/api/v1/auth/login", json=login) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"].isdigit()
        for headers in ({}, auth("alice")):
            async with session.get(f"{instance.url}/healthz", headers=headers) as resp:
                assert resp.status == 200, await resp.text()
        async with session.get(f"{instance.url}/readyz") as resp:
            assert resp.status == 503 and resp.headers["Retry-After"].isdigit()
            assert set(await resp.json()) == {"error", "reason"}


@pytest.mark.interop
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_stopped_and_restarted_under_load(
    cluster: PrivatePostgres,
    gateway_db: str,
    instances: list[Instance],
    tmp_path: Path,
    mode: str,
) -> None:
    """PostgreSQL stopped (``pg_ctl stop -m fast``: sessions ended, open transactions rolled
    back; ``-m immediate``: the server killed, crash recovery on start) while PouchDB pushes
    and pulls live, ``_bulk_docs``, edits and REST creates (single and batched, with
    Idempotency-Key) run through two instances and a continuous feed is read: while it is
    down every answer is a 503 with Retry-After (``/healthz`` 200, ``/readyz`` 503); once it
    is back the same processes serve every writer again without a restart, every
    acknowledged write is stored exactly once, the feed reader and PouchDB's live pull miss
    nothing, nothing answered 503 while it was down was written, no Idempotency-Key stays
    blocked and the store keeps its invariants."""
    urls = [instance.url for instance in instances]
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        load = await Load.start(session, urls, tmp_path)
        try:
            await load.progress("writes before the fault")
            await cluster.stop(mode)
            await load.until(
                lambda: all(load.traffic.unavailable[n] >= 3 for n in WRITERS),
                "every writer meeting the outage",
            )
            await check_while_down(session, instances)
            await cluster.start()
            await load.progress("writes after PostgreSQL came back")
            figures = await load.finish(gateway_db, never=PROBE_IDS)
        finally:
            await load.cancel()
    print(f"\n[PostgreSQL stop -m {mode}] {figures}")


# --- connections broken inside their transaction ------------------------------------------


async def hold_database_rows(cluster: PrivatePostgres, database: str) -> Any:
    """An open transaction holding the rows of ``field`` and ``inspections`` in
    ``databases``: every write takes its database's row, so writes queue behind it, inside
    their own transaction."""
    conn = await asyncpg.connect(
        host="127.0.0.1", port=cluster.port, user=cluster.user, database=database
    )
    await conn.execute("BEGIN")
    await conn.execute("SELECT 1 FROM databases WHERE name IN ('field', 'inspections') FOR UPDATE")
    return conn


async def waiting_on_locks(cluster: PrivatePostgres, database: str) -> int:
    rows = await sql(
        cluster,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        database, database="postgres",
    )  # fmt: skip
    return int(rows[0][0])


async def terminate_sessions(cluster: PrivatePostgres, database: str, spare: int) -> set[int]:
    """``pg_terminate_backend`` every session on ``database`` but ``spare`` (the server
    stays up); the pids terminated."""
    rows = await sql(
        cluster,
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1"
        " AND pid <> $2 AND backend_type = 'client backend'",
        database, spare, database="postgres",
    )  # fmt: skip
    return {int(row[0]) for row in rows}


async def none_alive(cluster: PrivatePostgres, pids: set[int]) -> bool:
    rows = await sql(cluster, "SELECT pid FROM pg_stat_activity", database="postgres")
    return not pids & {int(row[0]) for row in rows}


async def claim_gone(cluster: PrivatePostgres, database: str, key: str) -> bool:
    """Whether no ``Idempotency-Key`` row holds ``key`` (a claim released, not merely
    expired: an expired claim stays until a retry replaces it)."""
    rows = await sql(cluster, "SELECT 1 FROM idempotency_keys WHERE key = $1", key,
                     database=database)  # fmt: skip
    return not rows


@dataclasses.dataclass
class HeldWrites:
    """Three writes sent while the database rows are held: a ``_bulk_docs`` through
    instance 0, a ``PUT`` and a REST create through instance 1 (all with one key)."""

    traffic: Traffic
    key: str
    rest_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))

    def request(self, name: str) -> tuple[str, str, str, Any]:
        urls, key = self.traffic.urls, self.key
        return {
            "bulk": (urls[0], "POST", f"/{DB}/_bulk_docs", {"docs": [{"_id": f"{key}-b"}]}),
            "put": (urls[1], "PUT", f"/{DB}/{key}-p", {"v": 1}),
            "rest": (urls[1], "POST", "/api/v1/inspections", {"id": self.rest_id, "title": key}),
        }[name]

    def where(self, name: str) -> str:
        return {"bulk": f"/{DB}/{self.key}-b", "put": f"/{DB}/{self.key}-p",
                "rest": f"/api/v1/inspections/{self.rest_id}"}[name]  # fmt: skip

    async def send(self, name: str) -> Answer | None:
        url, method, path, body = self.request(name)
        headers = {"Idempotency-Key": self.key}
        return await self.traffic.call(name, method, url + path, body, user="alice",
                                       headers=headers)  # fmt: skip

    async def found(self, name: str) -> int:
        answer = await self.traffic.call("found", "GET", self.traffic.urls[0] + self.where(name),
                                         user="alice")  # fmt: skip
        assert answer is not None
        return answer.status


NAMES = ("bulk", "put", "rest")


async def break_held_writes(
    cluster: PrivatePostgres, database: str, traffic: Traffic, fault: str
) -> tuple[HeldWrites, dict[str, Answer]]:
    """Queue the three writes on the held rows, then ``fault`` their connections (the
    database is up again afterwards); their answers."""
    holder = await hold_database_rows(cluster, database)
    held = HeldWrites(traffic, f"held-{fault}")
    calls = {name: asyncio.create_task(held.send(name)) for name in NAMES}

    async def queued() -> bool:
        return await waiting_on_locks(cluster, database) >= len(NAMES)

    await until_async(queued, f"three writes queued on the row lock before {fault}")
    if fault == "terminate":
        spare = await holder.fetchval("SELECT pg_backend_pid()")
        terminated = await terminate_sessions(cluster, database, spare)
    else:
        await cluster.stop(fault)
    answers = {}
    for name, call in calls.items():
        answer = await call
        assert answer is not None, (fault, name)
        answers[name] = answer
    if fault == "terminate":

        async def ended() -> bool:
            return await none_alive(cluster, terminated)

        await until_async(ended, "the terminated sessions ending")
        await holder.close()
    else:
        holder.terminate()
        await cluster.start()
    return held, answers


async def test_a_transaction_broken_mid_way_is_a_503_that_leaves_nothing_behind(
    cluster: PrivatePostgres, instances: list[Instance], gateway_db: str
) -> None:
    """Writes caught inside their transaction (queued on a database row lock: a
    ``_bulk_docs``, a ``PUT``, a REST create with ``Idempotency-Key``) when their connection
    dies — ``pg_terminate_backend``, ``pg_ctl stop -m fast``, ``-m immediate`` — answer 503
    with Retry-After and write nothing (``-m fast`` may instead let one finish: then it
    answers its success and the write is there); the pooled connections the fault killed
    are replaced without failing a request (the first requests afterwards all succeed, on
    both instances); the client's retry with the same Idempotency-Key runs (or replays the
    success), every write ends up stored exactly once and no key stays blocked."""
    database = gateway_db.rsplit("/", 1)[1]
    urls = [instance.url for instance in instances]
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        traffic = Traffic(session, urls)
        for fault in ("terminate", "fast", "immediate"):
            for url in urls:  # every instance has pooled connections the fault will kill
                for path in (f"/{DB}", f"/{DB}/_all_docs", "/api/v1/inspections"):
                    warm = await traffic.call("warm", "GET", url + path)
                    assert warm is not None and warm.status == 200, warm
            held, answers = await break_held_writes(cluster, database, traffic, fault)
            for name, answer in answers.items():
                if fault == "fast" and answer.status in (200, 201):
                    continue  # granted the lock as the holder died, it committed before exiting
                assert answer.status == 503, (fault, name, answer)
                assert unavailable_problem(answer) is None, (fault, name, answer)
            for url in urls:  # the first requests after the fault: no dead pooled connection
                for path in (f"/{DB}", f"/{DB}/_all_docs", "/api/v1/inspections", "/readyz"):
                    answer = await traffic.call("after", "GET", url + path, user="alice")
                    assert answer is not None and answer.status == 200, (fault, path, answer)
            for name, answer in answers.items():  # a 503 wrote nothing
                expected = 404 if answer.status == 503 else 200
                assert await held.found(name) == expected, (fault, name, answer)
            if answers["rest"].status == 503:  # its claim is released once the database is back
                await until_async(
                    functools.partial(claim_gone, cluster, database, held.key),
                    f"the Idempotency-Key claim of the REST write broken by {fault} released",
                )
            for name, answer in answers.items():  # the client's retry, with the same key
                again = await held.send(name)
                assert again is not None, (fault, name)
                if answer.status == 503:
                    assert again.status == 201, (fault, name, again)
                    if name == "bulk":
                        assert again.body[0].get("ok") is True, again.body
                else:  # a replay (REST), a conflict row or a 409: it is there already
                    assert again.status in (201, 409), (fault, name, again)
                assert await held.found(name) == 200, (fault, name)
            listed = await traffic.call("list", "GET", f"{urls[0]}/api/v1/inspections?limit=100",
                                        user="alice")  # fmt: skip
            assert listed is not None
            assert [r["title"] for r in listed.body["results"]].count(held.key) == 1
        assert traffic.problems == [], traffic.problems
    assert await invariant_violations(gateway_db, (DB, "inspections")) == []


async def test_pooled_connections_killed_while_idle_are_replaced_without_an_error(
    cluster: PrivatePostgres, instances: list[Instance], gateway_db: str
) -> None:
    """Pooled connections that died while idle — their sessions terminated, or PostgreSQL
    restarted — while no request was running: the first requests afterwards, on both
    instances, all succeed (the pool drops a connection the server closed when it is
    checked out, instead of handing it to a request that would get a 503)."""
    database = gateway_db.rsplit("/", 1)[1]
    urls = [instance.url for instance in instances]
    paths = (f"/{DB}", f"/{DB}/_all_docs", "/api/v1/inspections", "/_all_dbs", "/readyz")
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        traffic = Traffic(session, urls)
        for fault in ("terminate", "restart"):
            for url in urls:
                for path in paths:  # fill both pools
                    assert (await traffic.call("warm", "GET", url + path)).status == 200
            if fault == "terminate":
                terminated = await terminate_sessions(cluster, database, spare=0)
                assert terminated, "the gateways hold pooled connections"
                await until_async(
                    functools.partial(none_alive, cluster, terminated),
                    "the terminated sessions ending",
                )
            else:
                await cluster.stop("fast")
                await cluster.start()
            for url in urls:
                for path in paths:
                    answer = await traffic.call("first", "GET", url + path, user="alice")
                    assert answer is not None and answer.status == 200, (fault, url, path, answer)
        assert traffic.problems == [], traffic.problems
