"""``/api/v1/templates``: CRUD over the ``templates`` database (readonly mode), strong ETags
and ``If-None-Match``, and the response cache (in process, or Redis at 127.0.0.1:6379 —
flushed, or unreachable, it is only ever a cache)."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy import event

from gateway.app import create_app
from gateway.cache import CachedResponse, MemoryCache, RedisCache
from gateway.keys import ENGINE
from gateway.settings import Settings
from tests.helpers import Couch, FakeClock

API = "/api/v1/templates"
NEW = {
    "name": "Boiler room",
    "description": "Yearly check",
    "fields": [{"key": "pressure", "type": "number"}, {"key": "notes", "type": "text"}],
}
# a dedicated Redis database, flushed by these tests only
REDIS_URL = os.environ.get("GATEWAY_TEST_TEMPLATES_REDIS_URL", "redis://127.0.0.1:6379/5")
UNREACHABLE = "redis://127.0.0.1:1/5"

Fetched = tuple[int, dict[str, str], Any]  # status, caching headers, body (b"" when empty)
CACHING = ("ETag", "Cache-Control")


async def fetch(user: Couch, path: str, **headers: str) -> Fetched:
    """GET ``path`` as ``user`` with extra headers; the status, caching headers and body."""
    async with user.client.get(path, headers=user.headers(headers)) as resp:
        raw = await resp.read()
        body = orjson.loads(raw) if raw else raw
        found = {name: resp.headers[name] for name in CACHING if name in resp.headers}
        return resp.status, found, body


async def _create(user: Couch, **fields: Any) -> dict[str, Any]:
    return await user.post(API, {**NEW, **fields}, expected_status=201)


@contextmanager
def body_reads(client: Any) -> Iterator[list[str]]:
    """The SQL statements that read document bodies (``revisions``) while inside."""
    statements: list[str] = []
    engine = client.app[ENGINE].sync_engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "revisions" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


# --- CRUD and roles ----------------------------------------------------------------------


async def test_a_manager_creates_and_everyone_reads(manager: Couch, alice: Couch) -> None:
    made = await _create(manager)
    assert uuid.UUID(made["id"]) and made["version"] == 1 and made["rev"].startswith("1-")
    assert made["name"] == "Boiler room" and made["fields"] == NEW["fields"]
    assert made["active"] is True and made["updated_by"] == "manager"
    assert made["created_at"] == made["updated_at"]
    assert await alice.get(f"{API}/{made['id']}") == made
    assert await alice.get(API) == {"results": [made], "next": None}
    doc = await alice.get(f"/templates/{made['id']}")  # the same document, over CouchDB
    assert doc["_rev"] == made["rev"] and doc["name"] == "Boiler room"


async def test_a_client_chosen_uuid_is_kept_and_a_taken_one_is_409(admin: Couch) -> None:
    chosen = str(uuid.uuid4())
    made = await _create(admin, id=chosen.upper(), active=False)
    assert made["id"] == chosen and made["active"] is False
    taken = await admin.post(API, {**NEW, "id": chosen}, expected_status=409)
    assert taken["error"] == "conflict"
    await admin.post(API, {**NEW, "id": "not-a-uuid"}, expected_status=400)


async def test_inspectors_only_read(manager: Couch, alice: Couch) -> None:
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    for method, route, body in (
        ("POST", API, NEW),
        ("PATCH", path, {"version": 1, "name": "Mine"}),
        ("DELETE", f"{path}?version=1", None),
    ):
        refused = await alice.request(method, route, body, expected_status=403)
        assert refused["error"] == "forbidden"
    # the database's readonly mode holds over CouchDB as well
    await alice.put("/templates/sneaky", {"name": "x"}, expected_status=403)
    doc = await alice.get(f"/templates/{made['id']}")
    await alice.put(f"/templates/{made['id']}", {**doc, "name": "Mine"}, expected_status=403)
    assert await alice.get(path) == made


async def test_patch_with_the_current_version_updates(manager: Couch, admin: Couch) -> None:
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    patched = await admin.request("PATCH", path, {"version": 1, "name": "Boiler room 2"})
    assert patched["version"] == 2 and patched["name"] == "Boiler room 2"
    assert patched["fields"] == NEW["fields"] and patched["created_at"] == made["created_at"]
    assert patched["updated_by"] == "admin"
    assert await manager.get(path) == patched


async def test_a_stale_version_is_409_with_the_current_template(manager: Couch) -> None:
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    v2 = await manager.request("PATCH", path, {"version": 1, "description": "Monthly"})
    refused = await manager.request(
        "PATCH", path, {"version": 1, "name": "Offline"}, expected_status=409
    )
    assert refused["error"] == "conflict" and refused["current"] == v2
    stale_delete = await manager.delete(f"{path}?version=1", expected_status=409)
    assert stale_delete["current"] == v2
    assert await manager.get(path) == v2


async def test_delete_is_a_tombstone_pouchdb_sees(manager: Couch, alice: Couch) -> None:
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    gone = await manager.delete(f"{path}?version=1")
    assert gone["deleted"] is True and gone["version"] == 2
    await alice.get(path, expected_status=404)
    assert (await alice.get(API))["results"] == []
    await alice.get(f"/templates/{made['id']}", expected_status=404)
    changes = await alice.get("/templates/_changes")
    assert [(r["id"], r.get("deleted")) for r in changes["results"]] == [(made["id"], True)]
    await manager.request("PATCH", path, {"version": 2, "name": "x"}, expected_status=404)
    again = await _create(manager, id=made["id"])  # the id may be used again
    assert again["version"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"description": "no name"},
        {**NEW, "name": ""},
        {**NEW, "name": 5},
        {**NEW, "description": None},
        {**NEW, "fields": {"key": "x"}},
        {**NEW, "fields": ["pressure"]},
        {**NEW, "active": "yes"},
        {**NEW, "owner": "me"},
        {**NEW, "updated_by": "someone"},
        {**NEW, "id": 7},
    ],
)
async def test_bad_input_is_400(manager: Couch, body: dict[str, Any]) -> None:
    refused = await manager.post(API, body, expected_status=400)
    assert refused["error"] == "bad_request"
    assert (await manager.get(API))["results"] == []


async def test_bad_patches_and_queries_are_400(manager: Couch) -> None:
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    for body in (
        {"name": "x"},
        {"version": "one", "name": "x"},
        {"version": True},
        {"version": 0},
        {"version": 1, "id": "other"},
        {"version": 1, "fields": "none"},
    ):
        await manager.request("PATCH", path, body, expected_status=400)
    await manager.delete(path, expected_status=400)  # no version
    await manager.get(f"{API}?limit=201", expected_status=400)
    await manager.get(f"{API}?cursor=%%%", expected_status=400)
    await manager.get(f"{API}/_design%2Fx", expected_status=400)
    assert await manager.get(path) == made


async def test_lists_page_by_id_and_leave_design_documents_out(
    manager: Couch, admin: Couch
) -> None:
    made = sorted([await _create(manager, name=f"t{i}") for i in range(3)], key=lambda t: t["id"])
    await admin.put("/templates/_design/app", {"views": {}})
    first = await manager.get(f"{API}?limit=2")
    assert first["results"] == made[:2] and first["next"]
    rest = await manager.get(API, params={"limit": "2", "cursor": first["next"]})
    assert rest == {"results": made[2:], "next": None}


async def test_templates_written_over_couchdb_are_served(manager: Couch, alice: Couch) -> None:
    written = await manager.put("/templates/tpl-boiler", {"name": "From PouchDB", "fields": []})
    got = await alice.get(f"{API}/tpl-boiler")
    assert got == {"id": "tpl-boiler", "version": 1, "rev": written["rev"],
                   "name": "From PouchDB", "fields": []}  # fmt: skip
    patched = await manager.request("PATCH", f"{API}/tpl-boiler", {"version": 1, "active": True})
    assert patched["version"] == 2 and patched["name"] == "From PouchDB"


async def test_body_fields_named_id_version_or_rev_never_pass_for_the_real_ones(
    manager: Couch, alice: Couch
) -> None:
    """A document written over CouchDB may carry its own "version", "id" or "rev": the REST
    form always shows the server's, so a PATCH with the version it shows succeeds."""
    body = {"name": "Own fields", "fields": [], "version": 7, "id": "other", "rev": "9-x"}
    first = await manager.put("/templates/tpl-own", body)
    second = await manager.put("/templates/tpl-own", {**body, "_rev": first["rev"]})
    got = await alice.get(f"{API}/tpl-own")
    assert (got["id"], got["version"], got["rev"]) == ("tpl-own", 2, second["rev"])
    patched = await manager.request("PATCH", f"{API}/tpl-own", {"version": 2, "active": True})
    assert patched["version"] == 3 and patched["id"] == "tpl-own"


# --- ETags and If-None-Match ---------------------------------------------------------------


async def test_etags_are_strong_stable_and_revalidated(manager: Couch, alice: Couch) -> None:
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    for target in (path, API):
        status, headers, body = await fetch(alice, target)
        again = await fetch(alice, target)
        etag = headers["ETag"]
        assert status == 200 and again[1]["ETag"] == etag and again[2] == body
        assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2  # strong
        assert headers["Cache-Control"] == "private, no-cache"
    assert (await fetch(alice, path))[1]["ETag"] == f'"{made["rev"]}"'


@pytest.mark.parametrize("target", ["item", "list"])
async def test_if_none_match_answers_304_without_a_body(
    manager: Couch, alice: Couch, target: str
) -> None:
    made = await _create(manager)
    path = f"{API}/{made['id']}" if target == "item" else API
    _, headers, body = await fetch(alice, path)
    etag = headers["ETag"]
    for value in (etag, f"W/{etag}", f'"nope", {etag}', f'"a,b", W/{etag}', "*"):
        status, seen, raw = await fetch(alice, path, **{"If-None-Match": value})
        assert (status, raw) == (304, b""), value
        assert seen["ETag"] == etag and seen["Cache-Control"] == "private, no-cache"
    for value in ('"nope"', etag.strip('"'), f'"{etag}"', f'W/"x", "{made["id"]}"'):
        status, seen, fresh = await fetch(alice, path, **{"If-None-Match": value})
        assert (status, fresh, seen["ETag"]) == (200, body, etag), value


async def test_etags_change_after_a_rest_write(manager: Couch, alice: Couch) -> None:
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    old_item = (await fetch(alice, path))[1]["ETag"]
    old_list = (await fetch(alice, API))[1]["ETag"]
    patched = await manager.request("PATCH", path, {"version": 1, "name": "Renamed"})
    status, headers, body = await fetch(alice, path, **{"If-None-Match": old_item})
    assert status == 200 and body == patched and headers["ETag"] == f'"{patched["rev"]}"'
    status, headers, listed = await fetch(alice, API, **{"If-None-Match": old_list})
    assert status == 200 and listed["results"] == [patched] and headers["ETag"] != old_list


async def test_etags_change_after_a_couchdb_write(manager: Couch, alice: Couch) -> None:
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    old_item = (await fetch(alice, path))[1]["ETag"]
    old_list = (await fetch(alice, API))[1]["ETag"]
    doc = await manager.get(f"/templates/{made['id']}")
    written = await manager.put(f"/templates/{made['id']}", {**doc, "name": "Via CouchDB"})
    status, headers, body = await fetch(alice, path, **{"If-None-Match": old_item})
    assert status == 200 and body["name"] == "Via CouchDB" and body["version"] == 2
    assert headers["ETag"] == f'"{written["rev"]}"'
    status, headers, listed = await fetch(alice, API, **{"If-None-Match": old_list})
    assert status == 200 and listed["results"] == [body] and headers["ETag"] != old_list
    # a new document over CouchDB changes the list, not the untouched item
    newer_list = headers["ETag"]
    await manager.put("/templates/zzz-new", {"name": "New one"})
    assert (await fetch(alice, path, **{"If-None-Match": headers["ETag"]}))[0] == 200
    assert (await fetch(alice, path, **{"If-None-Match": f'"{written["rev"]}"'}))[0] == 304
    status, headers, listed = await fetch(alice, API, **{"If-None-Match": newer_list})
    assert status == 200 and [t["id"] for t in listed["results"]][-1] == "zzz-new"


async def test_the_in_process_cache_serves_repeated_reads(
    client: Any, manager: Couch, alice: Couch
) -> None:
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    for target in (path, API):
        first = await fetch(alice, target)
        with body_reads(client) as reads:
            second = await fetch(alice, target)
        assert reads == [] and second == first
    await manager.request("PATCH", path, {"version": 1, "name": "Renamed"})
    with body_reads(client) as reads:
        assert (await alice.get(path))["name"] == "Renamed"
    assert reads


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture
async def redis_db() -> AsyncIterator[aioredis.Redis]:
    """The dedicated Redis database, empty at the start of the test."""
    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def _start(aiohttp_client: Any, settings: Settings, redis_url: str) -> Any:
    app = create_app(dataclasses.replace(settings, redis_url=redis_url), migrate=False)
    return await aiohttp_client(app)


async def test_redis_serves_the_second_read_and_a_write_moves_the_keys(
    aiohttp_client: Any, settings: Settings, engine: Any, redis_db: aioredis.Redis
) -> None:
    client = await _start(aiohttp_client, settings, REDIS_URL)
    manager, alice = Couch(client, "manager"), Couch(client, "alice")
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    for target in (path, API):
        first = await fetch(alice, target)
        with body_reads(client) as reads:
            second = await fetch(alice, target)
        assert reads == [] and second == first
    keys = sorted(k.decode() for k in await redis_db.keys("gw:tpl:*"))
    assert len(keys) == 2
    assert [0 < await redis_db.ttl(k) <= 300 for k in keys] == [True, True]
    await manager.request("PATCH", path, {"version": 1, "name": "Renamed"})
    _, headers, body = await fetch(alice, path)
    assert body["name"] == "Renamed" and headers["ETag"] == f'"{body["rev"]}"'
    assert len(await redis_db.keys("gw:tpl:*")) == 3  # a new seq, a new key


@pytest.mark.usefixtures("patient_redis")
async def test_two_instances_share_the_cache_and_see_each_others_writes(
    aiohttp_client: Any, settings: Settings, engine: Any, redis_db: aioredis.Redis
) -> None:
    one = await _start(aiohttp_client, settings, REDIS_URL)
    two = await _start(aiohttp_client, settings, REDIS_URL)
    made = await _create(Couch(one, "manager"))
    path = f"{API}/{made['id']}"
    cached = await fetch(Couch(one, "alice"), path)
    with body_reads(two) as reads:
        assert await fetch(Couch(two, "bob"), path) == cached
    assert reads == []
    doc = await Couch(one, "manager").get(f"/templates/{made['id']}")
    await Couch(one, "manager").put(f"/templates/{made['id']}", {**doc, "name": "Changed"})
    status, _, body = await fetch(Couch(two, "bob"), path, **{"If-None-Match": cached[1]["ETag"]})
    assert status == 200 and body["name"] == "Changed"


async def test_a_flushed_redis_is_only_a_miss(
    aiohttp_client: Any, settings: Settings, engine: Any, redis_db: aioredis.Redis
) -> None:
    client = await _start(aiohttp_client, settings, REDIS_URL)
    manager, alice = Couch(client, "manager"), Couch(client, "alice")
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    item, listed = await fetch(alice, path), await fetch(alice, API)
    await redis_db.flushdb()
    assert await fetch(alice, path) == item
    assert await fetch(alice, API) == listed
    await redis_db.flushdb()
    assert (await fetch(alice, path, **{"If-None-Match": item[1]["ETag"]}))[0] == 304
    patched = await manager.request("PATCH", path, {"version": 1, "name": "Renamed"})
    await redis_db.flushdb()
    status, headers, body = await fetch(alice, path, **{"If-None-Match": item[1]["ETag"]})
    assert (status, body, headers["ETag"]) == (200, patched, f'"{patched["rev"]}"')
    assert (await fetch(alice, API))[2]["results"] == [patched]


async def test_an_unreachable_redis_serves_from_the_database(
    aiohttp_client: Any, settings: Settings, engine: Any
) -> None:
    client = await _start(aiohttp_client, settings, UNREACHABLE)
    manager, alice = Couch(client, "manager"), Couch(client, "alice")
    made = await _create(manager)
    path = f"{API}/{made['id']}"
    status, headers, body = await fetch(alice, path)
    assert (status, body, headers["ETag"]) == (200, made, f'"{made["rev"]}"')
    assert (await fetch(alice, path, **{"If-None-Match": headers["ETag"]}))[0] == 304
    assert (await fetch(alice, API))[2] == {"results": [made], "next": None}
    patched = await manager.request("PATCH", path, {"version": 1, "name": "Renamed"})
    assert await alice.get(path) == patched
    assert (await alice.get(API))["results"] == [patched]


# --- the cache backends --------------------------------------------------------------------


async def test_the_memory_cache_expires_and_evicts_the_least_recently_used() -> None:
    clock = FakeClock()
    cache = MemoryCache(max_bytes=10, clock=clock)
    a, b, c = (CachedResponse(f'"{n}"', n.encode() * 4) for n in "abc")
    await cache.set("a", a, 60)
    await cache.set("b", b, 60)
    assert await cache.get("a") == a  # "b" is now the least recently used
    await cache.set("c", c, 60)
    assert (await cache.get("a"), await cache.get("b"), await cache.get("c")) == (a, None, c)
    await cache.set("big", CachedResponse('"x"', b"x" * 11), 60)
    assert await cache.get("big") is None and len(cache) == 2
    clock.now += 60
    assert await cache.get("a") is None and await cache.get("c") is None


async def test_the_redis_cache_round_trips_and_shrugs_off_an_outage(
    redis_db: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    value = CachedResponse('"1-abc"', b'{"a":"\\n"}\n')
    cache = RedisCache(redis_db, prefix="gw:test:")
    await cache.set("k", value, 60)
    assert await cache.get("k") == value and await cache.get("other") is None
    down = aioredis.from_url(UNREACHABLE, socket_connect_timeout=1)
    broken = RedisCache(down, clock=FakeClock())
    try:
        with caplog.at_level("WARNING", logger="gateway.cache"):
            for _ in range(3):
                await broken.set("k", value, 60)
                assert await broken.get("k") is None
    finally:
        await down.aclose()
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
