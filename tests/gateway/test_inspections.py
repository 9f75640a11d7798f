"""The field REST API: inspections (CRUD, versions, workflow, conflicts), batch sync and the
REST changes feed — over the very documents PouchDB replicates."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import event

from gateway.keys import ENGINE
from tests.helpers import Couch

API = "/api/v1/inspections"
NEW = {"template_id": "tpl-1", "title": "Boiler room", "site": "Block C", "responses": {}}


async def _create(client: Couch, **fields: Any) -> dict[str, Any]:
    return await client.post(API, {**NEW, **fields}, expected_status=201)


async def test_create_read_and_the_version_is_the_revision_generation(
    alice: Couch, manager: Couch
) -> None:
    made = await _create(alice)
    assert uuid.UUID(made["id"]) and made["version"] == 1 and made["status"] == "draft"
    assert made["inspector"] == "alice" and made["created_at"] == made["updated_at"]
    got = await alice.get(f"{API}/{made['id']}")
    assert got == made
    doc = await manager.get(f"/inspections/{made['id']}")  # the same document, over CouchDB
    assert doc["_rev"] == made["rev"] and int(doc["_rev"].split("-")[0]) == made["version"]
    assert doc["title"] == "Boiler room" and doc["inspector"] == "alice"


async def test_a_client_chosen_uuid_is_kept_and_a_taken_one_is_409(
    alice: Couch, bob: Couch
) -> None:
    chosen = str(uuid.uuid4())
    made = await _create(alice, id=chosen.upper())
    assert made["id"] == chosen
    taken = await bob.post(API, {**NEW, "id": chosen}, expected_status=409)
    assert taken["error"] == "conflict"
    await alice.post(API, {**NEW, "id": "not-a-uuid"}, expected_status=400)


async def test_patch_with_the_current_version_updates(alice: Couch) -> None:
    made = await _create(alice)
    patched = await alice.request(
        "PATCH", f"{API}/{made['id']}", {"version": 1, "title": "Boiler room 2"}
    )
    assert patched["version"] == 2 and patched["title"] == "Boiler room 2"
    assert patched["site"] == "Block C" and patched["created_at"] == made["created_at"]


async def test_a_stale_version_is_409_with_the_server_snapshot_and_a_conflict_record(
    alice: Couch, manager: Couch
) -> None:
    made = await _create(alice)
    path = f"{API}/{made['id']}"
    v2 = await alice.request("PATCH", path, {"version": 1, "site": "Block D"})
    refused = await alice.request(
        "PATCH", path, {"version": 1, "title": "Offline edit"}, expected_status=409
    )
    assert refused["error"] == "conflict" and refused["current"] == v2
    record = await manager.get(f"/api/v1/conflicts/{refused['conflict_id']}")
    assert record["status"] == "open" and record["mine"]["rev"] is None
    assert record["mine"]["body"]["title"] == "Offline edit"
    assert record["mine"]["body"]["site"] == "Block C"  # the edit was made on version 1
    assert record["theirs"] == {"rev": v2["rev"], "body": {k: v for k, v in v2.items()
                                if k not in ("id", "version", "rev")}}  # fmt: skip
    assert record["ancestor"]["rev"] == made["rev"]
    # a three-way merge keeps both edits
    merged = await manager.post(
        f"/api/v1/conflicts/{refused['conflict_id']}/resolve", {"strategy": "merge"}
    )
    now = await alice.get(path)
    assert now["rev"] == merged["rev"] and now["version"] == 3
    assert (now["title"], now["site"]) == ("Offline edit", "Block D")


async def test_keep_mine_on_a_refused_update_applies_it_on_top(
    alice: Couch, manager: Couch
) -> None:
    made = await _create(alice)
    path = f"{API}/{made['id']}"
    await alice.request("PATCH", path, {"version": 1, "site": "Block D"})
    refused = await alice.request("PATCH", path, {"version": 1, "title": "Mine"},
                                  expected_status=409)  # fmt: skip
    await alice.post(f"/api/v1/conflicts/{refused['conflict_id']}/resolve",
                     {"strategy": "keep_mine"})  # fmt: skip
    now = await alice.get(path)
    assert (now["title"], now["site"], now["version"]) == ("Mine", "Block C", 3)


async def test_resolving_a_conflict_is_held_to_the_workflow_like_any_write(
    alice: Couch, manager: Couch
) -> None:
    """An inspector cannot approve their own inspection, nor undo an approval, by resolving
    a conflict of theirs: the resolution is refused (403), the record stays open and the
    inspection is unchanged.  A manager may resolve the same record."""
    made = await _create(alice)
    path = f"{API}/{made['id']}"
    await alice.request("PATCH", path, {"version": 1, "status": "submitted"})
    refused = await alice.request(
        "PATCH", path, {"version": 1, "status": "approved"}, expected_status=409
    )
    resolve = f"/api/v1/conflicts/{refused['conflict_id']}/resolve"
    denied = await alice.post(resolve, {"strategy": "keep_mine"}, expected_status=403)
    assert denied["error"] == "forbidden"
    assert (await alice.get(path))["status"] == "submitted"
    assert (await alice.get(f"/api/v1/conflicts/{refused['conflict_id']}"))["status"] == "open"
    await manager.post(resolve, {"strategy": "keep_mine"})
    assert (await alice.get(path))["status"] == "approved"
    # approved: an inspector's stale edit, then a merge back to draft, is refused as well
    approved = await alice.get(path)
    stale = await alice.request(
        "PATCH", path, {"version": 2, "title": "hacked"}, expected_status=409
    )
    undo = {"strategy": "merge", "body": {**NEW, "status": "draft", "title": "hacked"}}
    await alice.post(f"/api/v1/conflicts/{stale['conflict_id']}/resolve", undo,
                     expected_status=403)  # fmt: skip
    assert await alice.get(path) == approved


async def test_soft_delete_with_version_is_a_tombstone_that_replicates(
    alice: Couch, manager: Couch
) -> None:
    made = await _create(alice)
    path = f"{API}/{made['id']}"
    stale = await alice.delete(f"{path}?version=7", expected_status=409)
    assert stale["error"] == "conflict"
    gone = await alice.delete(f"{path}?version=1")
    assert gone == {"id": made["id"], "version": 2, "deleted": True}
    await alice.get(path, expected_status=404)
    assert (await alice.get(API))["results"] == []
    feed = await manager.get("/inspections/_changes")
    assert [(r["id"], r.get("deleted")) for r in feed["results"]] == [(made["id"], True)]
    rest_feed = await alice.get("/api/v1/sync/changes")
    assert (
        rest_feed["results"][0]["deleted"] is True and "inspection" not in rest_feed["results"][0]
    )


async def test_inspectors_only_ever_see_their_own(alice: Couch, bob: Couch, manager: Couch) -> None:
    mine = await _create(alice)
    await _create(bob)
    assert [i["id"] for i in (await alice.get(API))["results"]] == [mine["id"]]
    assert len((await manager.get(API))["results"]) == 2
    missing = await bob.get(f"{API}/{mine['id']}", expected_status=404)
    nowhere = await bob.get(f"{API}/{uuid.uuid4()}", expected_status=404)
    assert missing == nowhere
    await bob.request("PATCH", f"{API}/{mine['id']}", {"version": 1, "title": "x"},
                      expected_status=404)  # fmt: skip
    await bob.delete(f"{API}/{mine['id']}?version=1", expected_status=404)
    assert (await alice.get(f"{API}/{mine['id']}"))["version"] == 1


async def test_list_filters_and_paginates_in_sql(alice: Couch, manager: Couch) -> None:
    for i in range(5):
        await _create(alice, template_id=f"tpl-{i % 2}", status="submitted" if i < 2 else "draft")
    submitted = await alice.get(API, params={"status": "submitted"})
    assert len(submitted["results"]) == 2
    assert all(i["submitted_at"] for i in submitted["results"])
    assert len((await alice.get(API, params={"template_id": "tpl-1"}))["results"]) == 2
    assert len((await manager.get(API, params={"inspector": "alice"}))["results"]) == 5
    seen, cursor = [], None
    while True:
        page = await alice.get(API, params={"limit": "2", **({"cursor": cursor} if cursor else {})})
        seen += [i["id"] for i in page["results"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert len(seen) == 5 and seen == sorted(seen)
    await alice.get(API, params={"status": "lost"}, expected_status=400)
    await alice.get(API, params={"limit": "0"}, expected_status=400)


async def test_the_workflow_applies_to_rest_and_to_couchdb_writes(
    alice: Couch, manager: Couch
) -> None:
    made = await _create(alice)
    path = f"{API}/{made['id']}"
    submitted = await alice.request("PATCH", path, {"version": 1, "status": "submitted"})
    assert submitted["submitted_at"]
    refused = await alice.request("PATCH", path, {"version": 2, "status": "approved"},
                                  expected_status=403)  # fmt: skip
    assert refused["error"] == "forbidden"
    # the same move through CouchDB's _bulk_docs: a per-document forbidden row
    doc = await alice.get(f"/inspections/{made['id']}")
    rows = await alice.post("/inspections/_bulk_docs", {"docs": [{**doc, "status": "approved"}]},
                            expected_status=201)  # fmt: skip
    assert rows[0]["error"] == "forbidden"
    pushed = {
        **doc,
        "status": "approved",
        "_rev": "3-" + "a" * 32,
        "_revisions": {"start": 3, "ids": ["a" * 32, doc["_rev"].split("-")[1]]},
    }
    rows = await alice.post("/inspections/_bulk_docs", {"docs": [pushed], "new_edits": False},
                            expected_status=201)  # fmt: skip
    assert rows and rows[0]["error"] == "forbidden"
    assert (await alice.get(path))["status"] == "submitted"
    approved = await manager.request("PATCH", path, {"version": 2, "status": "approved"})
    assert approved["status"] == "approved"
    await alice.request("PATCH", path, {"version": 3, "title": "late"}, expected_status=403)
    await alice.delete(f"{path}?version=3", expected_status=403)


async def test_couchdb_writes_show_up_in_the_rest_api(alice: Couch) -> None:
    doc_id = str(uuid.uuid4())
    await alice.put(f"/inspections/{doc_id}", {"title": "from pouch", "status": "draft"})
    listed = await alice.get(API)
    assert [(i["id"], i["title"], i["version"]) for i in listed["results"]] == [
        (doc_id, "from pouch", 1)
    ]


async def test_bad_fields_are_400(alice: Couch) -> None:
    await alice.post(API, {**NEW, "inspector": "bob"}, expected_status=400)
    await alice.post(API, {**NEW, "responses": [1]}, expected_status=400)
    await alice.post(API, {**NEW, "title": 5}, expected_status=400)
    made = await _create(alice)
    await alice.request("PATCH", f"{API}/{made['id']}", {"title": "x"}, expected_status=400)
    await alice.request("PATCH", f"{API}/{made['id']}", {"version": "one"}, expected_status=400)
    await alice.delete(f"{API}/{made['id']}", expected_status=400)
    await alice.get(f"{API}/not-a-uuid", expected_status=400)


async def test_batch_applies_each_operation_on_its_own_and_answers_207(alice: Couch) -> None:
    existing = await _create(alice)
    fresh = str(uuid.uuid4())
    ops = [
        {"op": "create", "id": fresh, "data": {**NEW, "title": "one"}},
        {"op": "update", "id": fresh, "version": 1, "data": {"title": "one, edited"}},
        {"op": "update", "id": existing["id"], "version": 9, "data": {"title": "stale"}},
        {"op": "update", "id": existing["id"], "version": 1, "data": {"status": "approved"}},
        {"op": "create", "data": {"bogus": 1}},
        {"op": "explode"},
        {"op": "delete", "id": str(uuid.uuid4()), "version": 1},
        {"op": "update", "id": existing["id"], "version": 1, "data": {"title": "good"}},
    ]
    answer = await alice.post("/api/v1/sync/batch", {"operations": ops}, expected_status=207)
    got = [(r["index"], r["status"], r["outcome"]) for r in answer["results"]]
    assert got == [
        (0, 201, "created"),
        (1, 200, "updated"),
        (2, 409, "conflict"),
        (3, 403, "error"),
        (4, 400, "error"),
        (5, 400, "error"),
        (6, 404, "error"),
        (7, 200, "updated"),
    ]
    assert answer["results"][1]["version"] == 2 and answer["results"][7]["version"] == 2
    assert answer["results"][2]["conflict_id"] and answer["results"][2]["current"]["version"] == 1
    assert all("reason" in r for r in answer["results"] if r["outcome"] in ("error", "conflict"))
    assert (await alice.get(f"{API}/{fresh}"))["title"] == "one, edited"
    assert (await alice.get(f"{API}/{existing['id']}"))["title"] == "good"


async def test_a_stale_update_of_an_inspection_created_in_the_same_batch_is_a_conflict(
    alice: Couch,
) -> None:
    """An offline app replaying its queue: a create, then updates based on versions the
    server has moved past.  Each stale update is its own 409 with a ConflictRecord; the
    create and the good update are kept (never a 500 that drops the whole batch)."""
    fresh = str(uuid.uuid4())
    ops = [
        {"op": "create", "id": fresh, "data": {**NEW, "title": "one"}},
        {"op": "update", "id": fresh, "version": 2, "data": {"title": "ahead"}},
        {"op": "update", "id": fresh, "version": 1, "data": {"title": "one, edited"}},
        {"op": "update", "id": fresh, "version": 1, "data": {"title": "replayed"}},
    ]
    answer = await alice.post("/api/v1/sync/batch", {"operations": ops}, expected_status=207)
    got = [(r["status"], r["outcome"]) for r in answer["results"]]
    assert got == [(201, "created"), (409, "conflict"), (200, "updated"), (409, "conflict")]
    assert all(answer["results"][i]["conflict_id"] for i in (1, 3))
    assert (await alice.get(f"{API}/{fresh}"))["title"] == "one, edited"
    listed = await alice.get(f"/api/v1/conflicts?doc_id={fresh}")
    assert len(listed["results"]) == 2


async def test_a_batch_over_100_is_413_and_states_the_limit(alice: Couch) -> None:
    ops = [{"op": "create", "data": NEW}] * 101
    refused = await alice.post("/api/v1/sync/batch", {"operations": ops}, expected_status=413)
    assert "100" in refused["reason"]
    assert (await alice.get(API))["results"] == []


async def test_a_batch_of_100_runs_a_fixed_number_of_queries(client: Any, alice: Couch) -> None:
    await _create(alice)  # the database exists
    statements: list[str] = []
    engine = client.app[ENGINE].sync_engine

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        ops = [{"op": "create", "data": {**NEW, "title": f"n{i}"}} for i in range(100)]
        answer = await alice.post("/api/v1/sync/batch", {"operations": ops}, expected_status=207)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [r["status"] for r in answer["results"]] == [201] * 100
    assert len(statements) < 30, statements


async def test_rest_changes_feed_pages_with_last_seq_and_has_more(alice: Couch, bob: Couch) -> None:
    made = [await _create(alice, title=f"t{i}") for i in range(3)]
    await _create(bob)
    first = await alice.get("/api/v1/sync/changes", params={"limit": "2"})
    assert [r["id"] for r in first["results"]] == [m["id"] for m in made[:2]]
    assert first["has_more"] is True
    rest = await alice.get("/api/v1/sync/changes", params={"since": str(first["last_seq"])})
    assert [r["id"] for r in rest["results"]] == [made[2]["id"]] and rest["has_more"] is False
    assert rest["results"][0]["inspection"]["title"] == "t2"
    empty = await alice.get("/api/v1/sync/changes", params={"since": str(rest["last_seq"])})
    assert empty == {"results": [], "last_seq": rest["last_seq"], "has_more": False}


async def test_rest_changes_last_seq_moves_past_changes_that_are_not_the_callers(
    alice: Couch, bob: Couch
) -> None:
    """A user who owns nothing that changed still gets a last_seq at the end of what was
    examined, so their checkpoint moves on instead of rescanning from 0 on every poll."""
    mine = await _create(alice)
    for i in range(3):
        await _create(bob, title=f"b{i}")
    feed = await alice.get("/api/v1/sync/changes", params={"since": "0"})
    assert [r["id"] for r in feed["results"]] == [mine["id"]]
    assert feed["last_seq"] == 4 and feed["has_more"] is False
    idle = await alice.get("/api/v1/sync/changes", params={"since": str(feed["last_seq"])})
    assert idle == {"results": [], "last_seq": 4, "has_more": False}
    assert (await bob.get("/api/v1/sync/changes", params={"since": "4"}))["last_seq"] == 4


@pytest.mark.parametrize("body", [[], {"operations": "x"}, {"operations": [1]}])
async def test_malformed_batches_are_400_or_per_operation_errors(alice: Couch, body: Any) -> None:
    result = await alice.post("/api/v1/sync/batch", body, expected_status=None)
    assert result.get("error") == "bad_request" or result["results"][0]["status"] == 400
