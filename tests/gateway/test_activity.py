"""``GET /_db_updates`` and ``GET /api/v1/activity``: which databases changed, and what
changed in them by whom — for managers and admins only."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson

from tests.helpers import Couch


async def test_db_updates_lists_changed_databases_in_change_order(
    admin: Couch, alice: Couch, manager: Couch
) -> None:
    await admin.put("/alpha?access_mode=shared")
    await admin.put("/beta?access_mode=shared")
    start = (await manager.get("/_db_updates?since=now"))["last_seq"]
    await alice.put("/beta/x", {"v": 1})
    await alice.put("/alpha/y", {"v": 1})
    got = await manager.get(f"/_db_updates?since={start}")
    assert [(r["db_name"], r["type"]) for r in got["results"]] == [
        ("beta", "updated"),
        ("alpha", "updated"),
    ]
    assert got["results"][0]["seq"] < got["results"][1]["seq"] == got["last_seq"]
    again = await manager.get(f"/_db_updates?since={got['last_seq']}")
    assert again == {"results": [], "last_seq": got["last_seq"]}
    everything = await manager.get("/_db_updates")
    assert {r["db_name"] for r in everything["results"]} >= {"alpha", "beta"}


async def test_db_updates_longpoll_wakes_on_a_write(
    admin: Couch, alice: Couch, manager: Couch
) -> None:
    await admin.put("/alpha?access_mode=shared")
    now = (await manager.get("/_db_updates?since=now"))["last_seq"]
    waiting = asyncio.ensure_future(
        manager.get(f"/_db_updates?feed=longpoll&since={now}&timeout=30000")
    )
    await asyncio.sleep(0)  # the write may land before or after the wait starts: both work
    await alice.put("/alpha/z", {"v": 1})
    got = await asyncio.wait_for(waiting, 30)
    assert [r["db_name"] for r in got["results"]] == ["alpha"]


async def test_db_updates_continuous_streams_lines(
    admin: Couch, alice: Couch, manager: Couch
) -> None:
    await admin.put("/alpha?access_mode=shared")
    await alice.put("/alpha/a", {"v": 1})
    path = "/_db_updates?feed=continuous&since=0&timeout=100"
    async with manager.client.get(path, headers=manager.headers()) as resp:
        assert resp.status == 200
        raw = await resp.read()
    lines = [line for line in raw.decode().splitlines() if line.strip()]
    assert '"db_name":"alpha"' in "".join(lines) and lines[-1].startswith('{"last_seq"')


async def test_inspectors_get_neither_feed(alice: Couch) -> None:
    assert (await alice.get("/_db_updates", expected_status=403))["error"] == "forbidden"
    await alice.get("/api/v1/activity", expected_status=403)


async def test_activity_says_who_changed_what_and_resumes_from_its_token(
    admin: Couch, alice: Couch, bob: Couch, manager: Couch
) -> None:
    await admin.put("/alpha?access_mode=shared")
    await admin.put("/beta?access_mode=shared")
    rev = (await alice.put("/alpha/a", {"v": 1}))["rev"]
    first = await manager.get("/api/v1/activity")
    top = first["results"][0]
    assert (top["db"], top["id"], top["user"], top["deleted"]) == ("alpha", "a", "alice", False)
    await bob.put("/beta/b", {"v": 1})
    await bob.delete(f"/alpha/a?rev={rev}")
    await alice.put("/beta/c", {"v": 1})
    nxt = await manager.get("/api/v1/activity", params={"since": first["since"]})
    got = {(r["db"], r["id"], r["user"], r["deleted"]) for r in nxt["results"]}
    assert got == {
        ("beta", "b", "bob", False),
        ("alpha", "a", "bob", True),
        ("beta", "c", "alice", False),
    }
    assert all(r["at"] for r in nxt["results"])
    empty = await manager.get("/api/v1/activity", params={"since": nxt["since"]})
    assert empty["results"] == []


async def test_activity_pages_through_a_burst_without_skipping(
    admin: Couch, alice: Couch, manager: Couch
) -> None:
    await admin.put("/alpha?access_mode=shared")
    token = (await manager.get("/api/v1/activity"))["since"]
    docs = [{"_id": f"d{i:02}"} for i in range(25)]
    await alice.post("/alpha/_bulk_docs", {"docs": docs}, expected_status=201)
    seen: list[str] = []
    for _ in range(10):
        page = await manager.get("/api/v1/activity", params={"since": token, "limit": "7"})
        seen += [r["id"] for r in page["results"]]
        token = page["since"]
        if not page["results"]:
            break
    assert seen == [d["_id"] for d in docs]


async def test_activity_longpoll_waits_for_the_next_change(
    admin: Couch, alice: Couch, manager: Couch
) -> None:
    await admin.put("/alpha?access_mode=shared")
    token = (await manager.get("/api/v1/activity"))["since"]
    params = {"since": token, "feed": "longpoll", "timeout": "30000"}
    waiting: Any = asyncio.ensure_future(manager.get("/api/v1/activity", params=params))
    await asyncio.sleep(0)
    await alice.put("/alpha/late", {"v": 1})
    got = await asyncio.wait_for(waiting, 30)
    assert [r["id"] for r in got["results"]] == ["late"]


async def test_a_bad_token_is_400(manager: Couch) -> None:
    await manager.get("/api/v1/activity", params={"since": "!!"}, expected_status=400)
    await manager.get("/api/v1/activity", params={"since": "WzEsMl0"}, expected_status=400)


async def test_a_since_token_with_numbers_no_database_holds_is_a_400(manager: Couch) -> None:
    def token(value: object) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")

    for bad in ([2**63, {}], [0, {"db": 2**63}], [-1, {}], [0, {"db": True}], [True, {}]):
        body = await manager.get(
            "/api/v1/activity", params={"since": token(bad)}, expected_status=400
        )
        assert body == {"error": "bad_request", "reason": "Invalid since token"}, bad
    await manager.get("/api/v1/activity", params={"since": token([2**63 - 1, {}])})
