"""The load a dependency-fault test runs while it takes PostgreSQL or Redis away, and what it
checks afterwards (``tests/reliability/test_dependency_faults.py``).

``Load`` runs, against two gateway instances at once: three replicator-style ``_bulk_docs``
writers (``new_edits=false``, explicit revs, so a retry of a batch that did commit is
harmless), a document editor (``PUT``), two REST writers (inspections one at a time and five
at a time through ``/api/v1/sync/batch``, each request with an ``Idempotency-Key``), a
continuous ``_changes`` reader, and a PouchDB device (``js/outage_client.js``) pushing and
pulling live.  Every client retries a 503 (after ``RETRY_PAUSE``) until its write is
acknowledged, as field devices do, and records anything else it is told as a problem: a
5xx other than a proper 503 (``Retry-After``, CouchDB body), a dropped connection, a
request outliving ``REQUEST_TIMEOUT``, a feed silent despite its heartbeat.

``Load.finish`` then checks that every acknowledged write is stored once at the revision it
was acknowledged with, that nothing else was written, that the feed reader and PouchDB's
live pull got every acknowledged write, and runs ``tests.reliability.invariants`` on the
store.  Waits are bounded (``WAIT``); nothing is timed.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from schema.engine import make_engine
from tests.helpers import PASSWORD, basic
from tests.interop.conftest import NodeProcess, start_node
from tests.processes import Instance
from tests.reliability.invariants import idempotency_violations, store_violations

DB = "field"
REST_DB = "inspections"
OUTAGE_JS = str(Path(__file__).resolve().parent / "js" / "outage_client.js")
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)  # a hang fails the test long before CI does
FEED_SILENCE = 10.0  # a continuous feed with heartbeat=500 that says nothing this long hangs
RETRY_PAUSE = 0.2  # how long a client waits before retrying a 503
PACE = 0.2  # between two writes of one client: concurrency matters here, not volume
WAIT = 60.0  # the bound of every wait (never reached when the gateway works)
BATCH = 5
WRITERS = ("rep0", "rep1", "rep2", "edit", "rest0", "rest1")


def auth(user: str) -> dict[str, str]:
    return {"Authorization": basic(user), "Content-Type": "application/json"}


@dataclass
class Answer:
    status: int
    headers: Any
    body: Any  # parsed JSON, else the raw bytes


def unavailable_problem(answer: Answer) -> str | None:
    """What is wrong with a 503 (None: a retryable CouchDB-shaped 503 with Retry-After)."""
    if not answer.headers.get("Retry-After", "").isdigit():
        return "a 503 without a numeric Retry-After"
    body = answer.body
    if not (
        isinstance(body, dict)
        and set(body) == {"error", "reason"}
        and all(isinstance(v, str) and v for v in body.values())
    ):
        return f"a 503 whose body is not {{error, reason}}: {body!r:.200}"
    return None


async def until(
    predicate: Callable[[], bool],
    what: str,
    context: Callable[[], object] = lambda: "",
    problems: list[str] | None = None,
    timeout: float = WAIT,  # noqa: ASYNC109
) -> None:
    """Wait (bounded) until ``predicate()`` holds; fail saying ``what`` did not happen, with
    ``context()`` (what the clients saw) — at once when ``problems`` gets one."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if problems:
            pytest.fail(f"while waiting for {what}: {problems[:5]}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout}s: {context()}", pytrace=False)
        await asyncio.sleep(0.05)


async def until_async(
    probe: Callable[[], Awaitable[bool]],
    what: str,
    timeout: float = WAIT,  # noqa: ASYNC109
) -> None:
    """``until`` for a probe that has to ask a server."""
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout}s", pytrace=False)
        await asyncio.sleep(0.1)


@dataclass
class Traffic:
    """Every client of one test: what they were told, and anything unexpected."""

    session: aiohttp.ClientSession
    urls: list[str]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    acked: dict[str, str] = field(default_factory=dict)  # doc id in DB -> acknowledged rev
    rest_acked: dict[str, str] = field(default_factory=dict)  # the same in REST_DB
    attempted: set[str] = field(default_factory=set)  # every doc id ever sent
    unavailable: Counter[str] = field(default_factory=Counter)  # client -> 503s seen
    ok: Counter[str] = field(default_factory=Counter)  # client -> acknowledged writes
    latencies: list[float] = field(default_factory=list)

    async def call(
        self,
        client: str,
        method: str,
        url: str,
        body: Any = None,
        *,
        user: str = "admin",
        headers: dict[str, str] | None = None,
    ) -> Answer | None:
        """One request; None (and a problem) when the gateway did not answer in time or
        dropped the connection."""
        started = time.monotonic()
        try:
            async with self.session.request(
                method,
                url,
                data=orjson.dumps(body) if body is not None else None,
                headers={**auth(user), **(headers or {})},
            ) as resp:
                raw = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.problems.append(f"{client}: {method} {url} got no answer: {exc!r}")
            return None
        self.latencies.append(time.monotonic() - started)
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = raw
        answer = Answer(status, resp_headers, parsed)
        self.statuses[f"{method} {status}"] += 1
        if status == 503:
            self.unavailable[client] += 1
            problem = unavailable_problem(answer)
            if problem:
                self.problems.append(f"{client}: {method} {url}: {problem}")
        elif status >= 500:
            self.problems.append(f"{client}: {method} {url}: {status} {raw[:300]!r}")
        return answer

    def summary(self) -> str:
        return (
            f"acknowledged {dict(self.ok)}, statuses {dict(self.statuses)}, "
            f"503s {dict(self.unavailable)}, problems {self.problems[:5]}"
        )

    def url(self, turn: int, path: str) -> str:
        return f"{self.urls[turn % len(self.urls)]}{path}"


# --- the writers --------------------------------------------------------------------------


def rev_of(doc_id: str, body: dict[str, Any]) -> str:
    return "1-" + hashlib.md5(orjson.dumps([doc_id, body])).hexdigest()


async def replicator_writer(traffic: Traffic, name: str) -> None:
    """Pushes new documents the way a replicator does, ``BATCH`` per ``_bulk_docs``,
    alternating instances; retries a batch until it is acknowledged."""
    for turn in itertools.count():
        if traffic.stop.is_set():
            return
        await asyncio.sleep(PACE if turn else 0)
        docs = []
        for n in range(turn * BATCH, (turn + 1) * BATCH):
            doc_id, body = f"{name}-{n}", {"writer": name, "n": n}
            rev = rev_of(doc_id, body)
            revisions = {"start": 1, "ids": [rev[2:]]}
            docs.append({"_id": doc_id, "_rev": rev, "_revisions": revisions, **body})
            traffic.attempted.add(doc_id)
        for attempt in itertools.count():
            url = traffic.url(turn + attempt, f"/{DB}/_bulk_docs")
            answer = await traffic.call(name, "POST", url, {"docs": docs, "new_edits": False})
            if answer is None:
                return
            if answer.status == 201:
                if answer.body != []:
                    traffic.problems.append(f"{name}: _bulk_docs rows {answer.body!r:.300}")
                traffic.acked.update((d["_id"], d["_rev"]) for d in docs)
                traffic.ok[name] += 1
                break
            if answer.status != 503:
                traffic.problems.append(f"{name}: _bulk_docs {answer.status} {answer.body!r:.300}")
                return
            await asyncio.sleep(RETRY_PAUSE)


async def editor(traffic: Traffic, name: str, count: int = 4) -> None:
    """Edits ``count`` documents over and over with ``PUT`` (``new_edits=true``); after a
    503, a 409 on retry means the first attempt did commit: the document must then hold
    exactly the body that attempt sent."""
    revs: dict[str, str | None] = {f"{name}-{i}": None for i in range(count)}
    for turn in itertools.count():
        if traffic.stop.is_set():
            return
        await asyncio.sleep(PACE if turn else 0)
        doc_id = f"{name}-{turn % count}"
        traffic.attempted.add(doc_id)
        body: dict[str, Any] = {"editor": name, "turn": turn}
        if revs[doc_id]:
            body["_rev"] = revs[doc_id]
        for attempt in itertools.count():
            url = traffic.url(turn + attempt, f"/{DB}/{doc_id}")
            answer = await traffic.call(name, "PUT", url, body)
            if answer is None:
                return
            if answer.status == 201:
                revs[doc_id] = traffic.acked[doc_id] = answer.body["rev"]
                break
            if answer.status == 409 and attempt:
                found = await traffic.call(name, "GET", url)
                if found is None or found.status != 200 or found.body.get("turn") != turn:
                    traffic.problems.append(f"{name}: 409 on retry but {doc_id} is not ours")
                    return
                revs[doc_id] = traffic.acked[doc_id] = found.body["_rev"]
                break
            if answer.status != 503:
                traffic.problems.append(f"{name}: PUT {answer.status} {answer.body!r:.300}")
                return
            await asyncio.sleep(RETRY_PAUSE)
        traffic.ok[name] += 1


async def rest_writer(traffic: Traffic, name: str) -> None:
    """Creates inspections as alice, one per ``POST /api/v1/inspections`` and every third
    turn five through ``/api/v1/sync/batch``, with an ``Idempotency-Key``; retries with the
    same key (a 503, or 409 ``request_in_progress``) until a success."""
    for turn in itertools.count():
        if traffic.stop.is_set():
            return
        await asyncio.sleep(PACE if turn else 0)
        key = f"{name}-{turn}-{uuid.uuid4().hex[:8]}"
        ids = [str(uuid.uuid4()) for _ in range(5 if turn % 3 == 2 else 1)]
        traffic.attempted.update(ids)
        if len(ids) == 1:
            path, body = "/api/v1/inspections", {"id": ids[0], "title": key, "site": name}
        else:
            ops = [{"op": "create", "id": i, "data": {"title": key, "site": name}} for i in ids]
            path, body = "/api/v1/sync/batch", {"operations": ops}
        headers = {"Idempotency-Key": key}
        for attempt in itertools.count():
            url = traffic.url(turn + attempt, path)
            answer = await traffic.call(name, "POST", url, body, user="alice", headers=headers)
            if answer is None:
                return
            if answer.status == 201:
                traffic.rest_acked[ids[0]] = answer.body["rev"]
                break
            if answer.status == 207:
                results = answer.body["results"]
                if [r["status"] for r in results] != [201] * len(ids):
                    traffic.problems.append(f"{name}: sync/batch results {results!r:.300}")
                    return
                traffic.rest_acked.update((r["id"], f"{r['version']}-") for r in results)
                break
            in_progress = answer.status == 409 and answer.body.get("error") == "request_in_progress"
            if answer.status != 503 and not in_progress:
                traffic.problems.append(f"{name}: {path} {answer.status} {answer.body!r:.300}")
                return
            await asyncio.sleep(RETRY_PAUSE)
        traffic.ok[name] += 1


WRITER_KINDS = {"rep": replicator_writer, "edit": editor, "rest": rest_writer}


# --- the feed reader ----------------------------------------------------------------------


@dataclass
class FeedReader:
    """A continuous ``_changes`` reader (heartbeat 500 ms) that, like every CouchDB client,
    reconnects from the last seq it saw when its feed ends or breaks."""

    session: aiohttp.ClientSession
    base: str
    seen: dict[str, str] = field(default_factory=dict)  # id -> latest rev delivered
    last_seq: int = 0
    connections: int = 0
    broken: int = 0  # streams that ended without their last_seq line
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"feed at seq {self.last_seq} after {self.connections} connections "
            f"({self.broken} broken), {len(self.seen)} documents seen, problems {self.problems[:5]}"
        )

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=FEED_SILENCE)
        while True:
            url = (
                f"{self.base}/{DB}/_changes?feed=continuous&heartbeat=500&timeout=600000"
                f"&since={self.last_seq}"
            )
            self.connections += 1
            try:
                async with self.session.get(url, headers=auth("admin"), timeout=timeout) as resp:
                    if resp.status == 200:
                        await self._read(resp)
                    else:
                        answer = Answer(resp.status, resp.headers, await resp.json())
                        problem = unavailable_problem(answer) if resp.status == 503 else "status"
                        if problem:
                            self.problems.append(f"feed: {resp.status} {problem}")
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                self.broken += 1
            except TimeoutError:
                self.problems.append(f"feed: silent for {FEED_SILENCE}s despite heartbeat=500")
            except aiohttp.ClientError as exc:
                self.problems.append(f"feed: {exc!r}")
            await asyncio.sleep(RETRY_PAUSE)

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        async for line in resp.content:
            if not line.strip():
                continue  # heartbeat
            row = orjson.loads(line)
            if "id" not in row:
                if row.get("last_seq") is None:
                    self.problems.append(f"feed: unexpected line {row!r:.200}")
                return
            if row["seq"] <= self.last_seq:
                self.problems.append(f"feed: seq {row['seq']} after {self.last_seq}")
            self.last_seq = row["seq"]
            self.seen[row["id"]] = row["changes"][0]["rev"]
        self.broken += 1  # the body ended without a last_seq line


# --- the checks ---------------------------------------------------------------------------


def same_rev(acknowledged: str, stored: str) -> bool:
    """``acknowledged`` is a full rev, or ``"N-"`` when only the version was answered."""
    return stored == acknowledged or (
        acknowledged.endswith("-") and stored.startswith(acknowledged)
    )


async def fetch_all(session: aiohttp.ClientSession, base: str, path: str) -> Any:
    async with session.get(base + path, headers=auth("admin")) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()


async def check_store(
    session: aiohttp.ClientSession,
    base: str,
    db: str,
    acked: dict[str, str],
    attempted: set[str],
    never: set[str],
) -> dict[str, Any]:
    """Database ``db`` as clients see it: every acknowledged write once at its revision,
    nothing that was never sent, none of ``never``; ``_changes`` lists each document once,
    in increasing seq order up to ``update_seq``; no conflicts, no deletions."""
    info = await fetch_all(session, base, f"/{db}")
    docs = await fetch_all(session, base, f"/{db}/_all_docs")
    changes = await fetch_all(session, base, f"/{db}/_changes?since=0")
    stored = {row["id"]: row["value"]["rev"] for row in docs["rows"]}
    wrong = {i: (r, stored.get(i)) for i, r in acked.items() if not same_rev(r, stored.get(i, ""))}
    assert not wrong, f"{db}: acknowledged writes missing or changed: {list(wrong.items())[:5]}"
    unknown = sorted(set(stored) - attempted)
    assert not unknown, f"{db}: documents nobody sent: {unknown[:5]}"
    assert not set(stored) & never, f"{db}: written despite a 503: {sorted(set(stored) & never)}"
    seqs = [row["seq"] for row in changes["results"]]
    ids = [row["id"] for row in changes["results"]]
    assert seqs == sorted(set(seqs)), f"{db}: the changes feed is not in increasing seq order"
    assert len(ids) == len(set(ids)) == len(docs["rows"]) == info["doc_count"], db
    assert changes["last_seq"] == info["update_seq"] == seqs[-1], db
    assert info["open_conflicts"] == 0 and info["doc_del_count"] == 0, info
    return info


async def invariant_violations(database_url: str, dbs: tuple[str, ...]) -> list[str]:
    """``tests.reliability.invariants`` on the store behind ``database_url``."""
    engine = make_engine(database_url, pool_size=1)
    try:
        found = []
        for db in dbs:
            found += await store_violations(engine, db, full_history=True)
        return found + await idempotency_violations(engine)
    finally:
        await engine.dispose()


async def kill_all(instances: list[Instance]) -> None:
    """SIGKILL (a graceful stop would wait for the feeds of clients that are gone)."""
    await asyncio.gather(*(instance.kill() for instance in instances))


async def create_databases(urls: list[str], *names: str) -> None:
    """Create shared-mode databases through the first instance."""
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        for name in names:
            url = f"{urls[0]}/{name}?access_mode=shared"
            async with session.put(url, headers=auth("admin")) as resp:
                assert resp.status == 201, await resp.text()


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


# --- everything at once -------------------------------------------------------------------


@dataclass
class Load:
    """Every client of a fault test, running at once: the writers of ``WRITERS`` (through
    both instances in turn), a continuous feed reader on instance 0, and a PouchDB device
    pushing live through instance 1 and pulling live through instance 0."""

    traffic: Traffic
    feed: FeedReader
    node: NodeProcess
    tasks: list[asyncio.Task[None]]
    work: Path

    @classmethod
    async def start(cls, session: aiohttp.ClientSession, urls: list[str], work: Path) -> Load:
        traffic, feed = Traffic(session, urls), FeedReader(session, urls[0])
        node = await start_node(
            OUTAGE_JS, f"{urls[0]}/{DB}", "pouch", str(work / "stop"), str(work / "expected"),
            env={"GATEWAY_DB_URL": f"{urls[1]}/{DB}", "GATEWAY_USER": "admin",
                 "GATEWAY_PASSWORD": PASSWORD},
        )  # fmt: skip
        writers = [WRITER_KINDS[n.rstrip("0123456789")](traffic, n) for n in WRITERS]
        tasks = [asyncio.create_task(w) for w in [*writers, feed.run()]]
        load = cls(traffic, feed, node, tasks, work)
        assert (await node.read_json_line()) == {"phase": "live"}
        return load

    async def progress(self, what: str, each: int = 2) -> None:
        """Wait (bounded) until every writer has ``each`` more writes acknowledged."""
        before = Counter(self.traffic.ok)
        await self.until(lambda: all(self.traffic.ok[n] >= before[n] + each for n in WRITERS), what)

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """``until``, failing at once on the first unexpected answer a client gets."""
        await until(predicate, what, self.traffic.summary, self.traffic.problems)

    async def finish(self, database_url: str, never: set[str]) -> dict[str, Any]:
        """Stop writing (every pending write retried until acknowledged); let PouchDB check
        that the gateway holds all it wrote and that its live pull got every acknowledged
        write; wait for the feed reader to see them all; check the store.  The figures."""
        traffic = self.traffic
        traffic.stop.set()
        writers = self.tasks[: len(WRITERS)]
        await self.until(lambda: all(t.done() for t in writers), "the last writes acknowledged")
        (self.work / "stop").touch()
        pouch = (await self.node.read_json_line())["written"]
        expected = {**traffic.acked, **pouch}
        exact = {i: r for i, r in expected.items() if not r.endswith("-")}
        (self.work / "expected").write_bytes(orjson.dumps(exact))
        result = await self.node.result()
        attempted = traffic.attempted | set(pouch) | never
        urls, session = traffic.urls, traffic.session
        field_db = await check_store(session, urls[1], DB, expected, attempted, never)
        rest_db = await check_store(session, urls[0], REST_DB, traffic.rest_acked, attempted,
                                    never)  # fmt: skip
        assert result["missing"] == [], f"PouchDB's live pull missed {result['missing']}"

        def unseen() -> list[str]:
            return sorted(
                i for i, r in expected.items() if not same_rev(r, self.feed.seen.get(i, ""))
            )

        await until(
            lambda: not unseen(),
            "the feed reader seeing every acknowledged write",
            lambda: f"{self.feed.summary()}, {len(unseen())} unseen: {unseen()[:10]}",
        )
        assert traffic.problems == [], traffic.problems[:10]
        assert self.feed.problems == [], self.feed.problems[:10]
        assert await invariant_violations(database_url, (DB, REST_DB)) == []
        return {
            "docs": field_db["doc_count"] + rest_db["doc_count"],
            "statuses": dict(traffic.statuses),
            "503s": dict(traffic.unavailable),
            "feed_connections": self.feed.connections,
            "feed_broken": self.feed.broken,
            "pouch_push_failures": result["push_failures"],
            "pouch_pull_failures": result["pull_failures"],
            "p99_ms": round(p99(traffic.latencies) * 1000),
        }

    async def cancel(self) -> None:
        self.traffic.stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.node.kill()
