"""The writes of a replication batch served with a remembered caller (``gateway.callers``,
``schema.callers``): no lookup round trip on PostgreSQL, and never an answer or a write for a
caller who may no longer write.  The behaviour tests run on both backends (SQLite always
looks the caller up, and must behave the same)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import auth as auth_module
from gateway import dbctx
from gateway.callers import RememberedCallers
from gateway.settings import Settings
from replication import BadRequest
from schema.callers import CallerCheck
from schema.databases import Database
from schema.engine import write_transaction
from schema.tables import users
from schema.users import User, hash_password, set_disabled, set_role
from tests.helpers import PASSWORD, Couch


def doc(i: int, rev: str = "1-a", **body: Any) -> dict[str, Any]:
    pos, _, digest = rev.partition("-")
    revisions = {"start": int(pos), "ids": [digest]}
    return {"_id": f"d{i}", "_rev": rev, "_revisions": revisions, "v": i, **body}


async def push(couch: Couch, db: str, docs: list[dict[str, Any]], **kw: Any) -> Any:
    kw.setdefault("expected_status", 201)
    return await couch.post(f"/{db}/_bulk_docs", {"docs": docs, "new_edits": False}, **kw)


async def remembered(couch: Couch, db: str) -> None:
    """A request that authenticates fully with the database, as PouchDB's GET /db does."""
    await couch.get(f"/{db}")


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names the caller lookup ran for."""
    seen: list[str] = []
    real = auth_module.find_caller

    async def counted(conn: Any, name: str, **kw: Any) -> Any:
        seen.append(name)
        return await real(conn, name, **kw)

    monkeypatch.setattr(auth_module, "find_caller", counted)
    return seen


@pytest.mark.postgres_only
async def test_a_batch_and_its_checkpoint_are_written_without_a_lookup(
    alice: Couch, db: str, lookups: list[str]
) -> None:
    created = await alice.put(f"/{db}/_local/cp", {"last_seq": 1})
    await remembered(alice, db)
    lookups.clear()
    await push(alice, db, [doc(1), doc(2)])
    await alice.put(f"/{db}/_local/cp", {"_rev": created["rev"], "last_seq": 2})
    assert lookups == []  # the two writes confirmed the caller themselves
    assert (await alice.get(f"/{db}/_local/cp"))["last_seq"] == 2
    assert (await alice.get(f"/{db}/d2"))["v"] == 2
    assert lookups == ["alice", "alice"]  # reads still look the caller up


@pytest.mark.postgres_only
async def test_a_first_checkpoint_is_created_without_a_lookup(
    alice: Couch, db: str, lookups: list[str]
) -> None:
    await remembered(alice, db)
    lookups.clear()
    created = await alice.put(f"/{db}/_local/new", {"last_seq": 7})
    assert created["rev"] == "0-1" and lookups == []
    assert (await alice.get(f"/{db}/_local/new"))["last_seq"] == 7
    # created twice: the second finds the first (no row written), and the full
    # authentication that follows answers what the lookup path answers
    await alice.put(f"/{db}/_local/new", {"last_seq": 8}, expected_status=409)
    assert lookups == ["alice", "alice"]


async def test_a_user_disabled_meanwhile_is_refused_and_nothing_is_written(
    alice: Couch, admin: Couch, db: str, engine: AsyncEngine
) -> None:
    created = await alice.put(f"/{db}/_local/cp", {"last_seq": 1})
    await remembered(alice, db)
    async with write_transaction(engine) as conn:
        await set_disabled(conn, "alice")
    await push(alice, db, [doc(1)], expected_status=401)
    await alice.put(
        f"/{db}/_local/cp", {"_rev": created["rev"], "last_seq": 2}, expected_status=401
    )
    assert (await admin.get(f"/{db}"))["doc_count"] == 0
    async with write_transaction(engine) as conn:
        await set_disabled(conn, "alice", disabled=False)
    assert (await alice.get(f"/{db}/_local/cp"))["last_seq"] == 1


async def test_a_changed_password_is_refused_at_once(
    client: Any, alice: Couch, admin: Couch, db: str, engine: AsyncEngine
) -> None:
    created = await alice.put(f"/{db}/_local/cp", {"last_seq": 1})
    await remembered(alice, db)
    async with write_transaction(engine) as conn:
        new_hash = hash_password("a new passphrase")
        await conn.execute(
            update(users).where(users.c.name == "alice").values(password_hash=new_hash)
        )
    await push(alice, db, [doc(1)], expected_status=401)
    await alice.put(
        f"/{db}/_local/cp", {"_rev": created["rev"], "last_seq": 2}, expected_status=401
    )
    assert (await admin.get(f"/{db}"))["doc_count"] == 0
    renewed = Couch(client, "alice", "a new passphrase")
    await push(renewed, db, [doc(1)])
    assert (await admin.get(f"/{db}"))["doc_count"] == 1


async def test_a_wrong_password_is_never_served_from_memory(
    client: Any, alice: Couch, admin: Couch, db: str
) -> None:
    await remembered(alice, db)
    await push(Couch(client, "alice", "wrong"), db, [doc(1)], expected_status=401)
    assert (await admin.get(f"/{db}"))["doc_count"] == 0


async def test_a_role_taken_away_meanwhile_applies_at_once(
    manager: Couch, admin: Couch, engine: AsyncEngine
) -> None:
    await admin.put("/ro?access_mode=readonly")
    await push(manager, "ro", [doc(1)])  # staff may write a read-only database
    await remembered(manager, "ro")
    async with write_transaction(engine) as conn:
        await set_role(conn, "manager", "inspector")
    await push(manager, "ro", [doc(2)], expected_status=403)
    assert (await admin.get("/ro"))["doc_count"] == 1


async def test_database_settings_changed_meanwhile_apply_to_the_write(
    alice: Couch, admin: Couch, db: str
) -> None:
    await admin.put(f"/{db}/_revs_limit", raw=b"2", expected_status=200)
    await remembered(alice, db)  # with a revision limit of 2
    await admin.put(f"/{db}/_revs_limit", raw=b"10", expected_status=200)
    long = {"_id": "long", "_rev": "4-d", "_revisions": {"start": 4, "ids": ["d", "c", "b", "a"]}}
    await push(alice, db, [long])
    stored = await alice.get(f"/{db}/long", params={"revs": "true"})
    assert stored["_revisions"] == {"start": 4, "ids": ["d", "c", "b", "a"]}  # not stemmed to 2


async def test_a_database_recreated_meanwhile_gets_the_write(
    alice: Couch, admin: Couch, db: str
) -> None:
    await push(alice, db, [doc(1)])
    await remembered(alice, db)
    await admin.delete(f"/{db}", expected_status=200)
    await admin.put(f"/{db}?access_mode=shared")
    await push(alice, db, [doc(2)])
    info = await admin.get(f"/{db}")
    assert info["doc_count"] == 1
    await alice.get(f"/{db}/d2")
    await alice.get(f"/{db}/d1", expected_status=404)


async def test_a_database_deleted_meanwhile_is_not_found(
    alice: Couch, admin: Couch, db: str
) -> None:
    created = await alice.put(f"/{db}/_local/cp", {"last_seq": 1})
    await remembered(alice, db)
    await admin.delete(f"/{db}", expected_status=200)
    await push(alice, db, [doc(1)], expected_status=404)
    await alice.put(f"/{db}/_local/cp", {"_rev": created["rev"]}, expected_status=404)


@pytest.mark.parametrize(
    "attempt",
    [
        {"docs": [doc(1, "2-b") | {"_revisions": {"start": 2, "ids": ["b", "a"]}}]},  # stored
        {"docs": []},
        {"docs": [{"_id": "_bad", "_rev": "1-a"}]},  # every row refused
        {"docs": "not a list"},
    ],
    ids=["already stored", "no documents", "rows refused", "bad body"],
)
async def test_a_batch_that_writes_nothing_needs_a_caller_who_may_write(
    alice: Couch, admin: Couch, db: str, engine: AsyncEngine, attempt: dict[str, Any]
) -> None:
    stored = doc(1, "2-b") | {"_revisions": {"start": 2, "ids": ["b", "a"]}}
    await push(alice, db, [stored])
    await remembered(alice, db)
    async with write_transaction(engine) as conn:
        await set_disabled(conn, "alice")
    body = {**attempt, "new_edits": False}
    await alice.post(f"/{db}/_bulk_docs", body, expected_status=401)
    assert (await admin.get(f"/{db}"))["doc_count"] == 1


async def test_a_refused_checkpoint_write_needs_a_caller_who_may_write(
    alice: Couch, db: str, engine: AsyncEngine
) -> None:
    await remembered(alice, db)
    async with write_transaction(engine) as conn:
        await set_disabled(conn, "alice")
    await alice.put(f"/{db}/_local/cp", {"_rev": "zz"}, expected_status=401)  # a bad rev: 400


async def test_a_stale_checkpoint_rev_is_still_a_conflict(alice: Couch, db: str) -> None:
    created = await alice.put(f"/{db}/_local/cp", {"last_seq": 1})
    await alice.put(f"/{db}/_local/cp", {"_rev": created["rev"], "last_seq": 2})
    await remembered(alice, db)
    answer = await alice.put(
        f"/{db}/_local/cp", {"_rev": created["rev"], "last_seq": 3}, expected_status=409
    )
    assert answer["error"] == "conflict"
    assert (await alice.get(f"/{db}/_local/cp"))["last_seq"] == 2


async def test_a_conflicting_batch_is_written_once(alice: Couch, admin: Couch, db: str) -> None:
    await push(alice, db, [doc(1, "1-a")])
    await remembered(alice, db)
    answer = await push(alice, db, [doc(1, "1-b"), doc(2)])
    assert answer == []
    stored = await alice.get(f"/{db}/d1", params={"conflicts": "true"})
    assert stored["_rev"] == "1-b" and stored["_conflicts"] == ["1-a"]
    info = await admin.get(f"/{db}")
    assert info["doc_count"] == 2
    changes = await admin.get(f"/{db}/_changes")
    assert sorted(row["id"] for row in changes["results"]) == ["d1", "d2"]  # each once


def test_remembered_callers_expire_and_are_bounded() -> None:
    user = User(1, "alice", "inspector", False, "hash")
    db = Database(1, "field", "shared", "manual", 1000, 0, 0, 0, "0")
    callers = RememberedCallers(size=2, ttl=60.0)
    callers.put("Basic a", user, db)
    assert callers.get("Basic a", "field") == CallerCheck(user, db)
    assert callers.get("Basic b", "field") is None  # other credentials
    assert callers.get("Basic a", "other") is None  # another database
    callers.put("Basic b", user, db)
    callers.put("Basic c", user, db)
    assert callers.get("Basic a", "field") is None  # the oldest went first
    callers.forget("Basic c", "field")
    assert callers.get("Basic c", "field") is None
    expired = RememberedCallers(ttl=0.0)
    expired.put("Basic a", user, db)
    assert expired.get("Basic a", "field") is None


# -- what the review of the first version found ----------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, max_request_bytes=LIMIT)


LIMIT = 20_000  # bytes of request body


async def test_a_body_over_the_limit_is_413_and_never_read_twice(
    client: Any, alice: Couch, admin: Couch, db: str
) -> None:
    await remembered(alice, db)
    smuggled = orjson.dumps({"docs": [doc(9)], "new_edits": False})
    padding = orjson.dumps({"pad": "x" * LIMIT})  # the limit stops the read inside it
    body = padding[:-1] + b"," + smuggled[1:]
    async with client.post(f"/{db}/_bulk_docs", data=body, headers=alice.headers()) as resp:
        assert resp.status == 413, await resp.text()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read until the limit
        for start in range(0, len(padding), 4096):
            yield padding[start : start + 4096]
        yield b"\n" + smuggled

    headers = alice.headers()
    async with client.post(f"/{db}/_bulk_docs", data=chunks(), headers=headers) as resp:
        assert resp.status == 413, await resp.text()
    assert (await admin.get(f"/{db}"))["doc_count"] == 0
    await alice.get(f"/{db}/d9", expected_status=404)


async def test_an_error_after_a_confirmed_write_is_not_served_again(
    alice: Couch, admin: Couch, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await remembered(alice, db)

    async def failing(*_args: Any) -> None:
        raise BadRequest("after the write")

    monkeypatch.setattr(dbctx, "written_docs", failing)
    second = doc(1, "2-b") | {"_revisions": {"start": 2, "ids": ["b", "a"]}}
    answer = await push(alice, db, [second], expected_status=400)
    assert answer["reason"] == "after the write"
    info = await admin.get(f"/{db}")
    assert info["doc_count"] == 1 and str(info["update_seq"]).split("-")[0] == "1"  # once


@pytest.mark.postgres_only
async def test_only_basic_callers_of_the_same_database_are_remembered(
    client: Any, alice: Couch, admin: Couch, db: str, lookups: list[str]
) -> None:
    await admin.put("/other?access_mode=shared")
    await remembered(alice, db)
    lookups.clear()
    await push(alice, "other", [doc(1)])  # remembered for "field", not for "other"
    assert lookups == ["alice"]
    resp = await client.post(
        "/api/v1/auth/login",
        data=orjson.dumps({"username": "alice", "password": PASSWORD}),
        headers={"Content-Type": "application/json"},
    )
    token = (await resp.json())["access_token"]
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for _ in range(2):  # a token is looked up every time (revocation is part of it)
        async with client.get(f"/{db}", headers=bearer) as got:
            assert got.status == 200
    lookups.clear()
    body = orjson.dumps({"docs": [doc(2)], "new_edits": False})
    async with client.post(f"/{db}/_bulk_docs", data=body, headers=bearer) as resp:
        assert resp.status == 201
    assert lookups == ["alice"]


@pytest.mark.postgres_only
async def test_a_database_with_write_rules_is_never_remembered(
    manager: Couch, lookups: list[str]
) -> None:
    await remembered(manager, "inspections")
    lookups.clear()
    await manager.post(
        "/inspections/_bulk_docs", {"docs": [{"_id": "x", "status": "draft"}]}, expected_status=None
    )
    assert lookups == ["manager"]


@pytest.mark.postgres_only
async def test_database_settings_changed_while_the_write_waits_apply_to_it(
    alice: Couch, admin: Couch, db: str, engine: AsyncEngine
) -> None:
    """The database conditions hold on the row the write locks, checked after the wait."""
    await remembered(alice, db)
    async with engine.connect() as holder, engine.connect() as watcher:
        await holder.begin()
        await holder.execute(text("SELECT 1 FROM databases WHERE name = :n FOR UPDATE"), {"n": db})
        write = asyncio.create_task(push(alice, db, [doc(1)], expected_status=None))
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        for _ in range(2000):  # until the write waits for the row (bounded)
            await watcher.execute(text("SELECT pg_stat_clear_snapshot()"))
            if (await watcher.execute(waiting)).scalar_one():
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the write never waited for the database row")
        await holder.execute(
            text("UPDATE databases SET access_mode = 'readonly' WHERE name = :n"), {"n": db}
        )
        await holder.commit()
        answer = await write
    assert answer["error"] == "forbidden"  # planned for a shared database: refused
    assert (await admin.get(f"/{db}"))["doc_count"] == 0
