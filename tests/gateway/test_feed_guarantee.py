"""SPEC §4 "Changes feed sequence": a reader that checkpoints ``last_seq`` never misses a change.

Many writers push through two gateway instances (two apps, two connection pools, one
database) while a reader follows ``_changes`` incrementally from its checkpoint through both
instances.  If any change could become visible at a seq at or below a ``last_seq`` the
reader was already given, the reader's final picture would differ from the database's.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from gateway.app import create_app
from tests.helpers import Couch

WRITERS = 8
ROUNDS = 12
DOCS = 60


async def _writer(couch: Couch, seed: int, revs: dict[str, str], lock: asyncio.Lock) -> None:
    rng = random.Random(seed)
    for _ in range(ROUNDS):
        ids = rng.sample(range(DOCS), rng.randint(1, 8))
        async with lock:
            docs = [
                {"_id": f"d{i:03d}", "w": seed, "n": rng.random(), **_rev(revs, f"d{i:03d}")}
                for i in ids
            ]
        result = await couch.post("/field/_bulk_docs", {"docs": docs}, expected_status=201)
        async with lock:
            for row in result:
                if row.get("ok"):
                    revs[row["id"]] = row["rev"]
        await asyncio.sleep(0)


def _rev(revs: dict[str, str], doc_id: str) -> dict[str, Any]:
    return {"_rev": revs[doc_id]} if doc_id in revs else {}


async def _follow(
    readers: list[Couch], stop: asyncio.Event, seen: dict[str, tuple[int, str]]
) -> int:
    since = 0
    rng = random.Random(7)
    turn = 0
    while True:
        finishing = stop.is_set()
        reader = readers[turn % len(readers)]
        turn += 1
        limit = rng.choice([1, 3, 10, 1000])
        feed = await reader.get(f"/field/_changes?since={since}&limit={limit}")
        ids = [row["id"] for row in feed["results"]]
        assert len(ids) == len(set(ids)), "a document appeared twice in one response"
        seqs = [row["seq"] for row in feed["results"]]
        assert seqs == sorted(seqs) and all(s > since for s in seqs)
        for row in feed["results"]:
            seen[row["id"]] = (row["seq"], row["changes"][0]["rev"])
        assert feed["last_seq"] >= since
        since = feed["last_seq"]
        if finishing and not feed["results"]:
            return since
        await asyncio.sleep(0)


async def test_a_checkpointing_reader_misses_no_change_under_concurrent_writers(
    aiohttp_client: Any, settings: Any, engine: Any, admin: Couch
) -> None:
    await admin.put("/field?access_mode=shared")
    second = await aiohttp_client(create_app(settings, migrate=False))
    instances = [admin, Couch(second, "admin")]
    revs: dict[str, str] = {}
    lock = asyncio.Lock()
    seen: dict[str, tuple[int, str]] = {}
    stop = asyncio.Event()
    reader = asyncio.create_task(_follow(instances, stop, seen))
    writers = [_writer(instances[i % 2], seed=i, revs=revs, lock=lock) for i in range(WRITERS)]
    await asyncio.gather(*writers)
    stop.set()
    last_seq = await reader

    info = await admin.get("/field")
    assert last_seq == info["update_seq"]
    final = await admin.get("/field/_all_docs")
    winners = {row["id"]: row["value"]["rev"] for row in final["rows"]}
    assert winners == {doc_id: rev for doc_id, (_, rev) in seen.items()}
    assert winners == revs  # every committed write is what the reader ended with
    full = await admin.get("/field/_changes")
    assert {row["id"]: row["seq"] for row in full["results"]} == {
        doc_id: seq for doc_id, (seq, _) in seen.items()
    }


async def test_every_document_appears_once_at_its_latest_seq(admin: Couch, db: str) -> None:
    first = await admin.put(f"/{db}/a", {"v": 1})
    await admin.put(f"/{db}/b", {"v": 1})
    await admin.put(f"/{db}/a", {"v": 2, "_rev": first["rev"]})
    feed = await admin.get(f"/{db}/_changes")
    assert [(r["id"], r["seq"]) for r in feed["results"]] == [("b", 2), ("a", 3)]
    assert feed["last_seq"] == 3
