"""Document routes: ``GET|PUT|DELETE /{db}/{docid}`` and ``POST /{db}``, as CouchDB documents them.

Fixture tree used by the branch tests (pushed with ``new_edits=false``):

        1-a
       /    \\
    2-b      2-c
     |
    3-d (deleted when ``deleted=True``)
"""

from __future__ import annotations

import orjson

from tests.helpers import Couch


async def create(couch: Couch, db: str, doc_id: str, body: dict) -> str:
    return (await couch.put(f"/{db}/{doc_id}", body))["rev"]


async def push_path(couch: Couch, db: str, doc_id: str, path: list[str], body: dict, **extra):
    """Store a revision path (leaf first) as a replicator does."""
    start = int(path[0].split("-")[0])
    doc = {
        "_id": doc_id,
        "_rev": path[0],
        "_revisions": {"start": start, "ids": [r.split("-")[1] for r in path]},
        **body,
        **extra,
    }
    assert (
        await couch.post(
            f"/{db}/_bulk_docs", {"docs": [doc], "new_edits": False}, expected_status=201
        )
        == []
    )


async def branchy(couch: Couch, db: str, doc_id: str = "tree", *, deleted: bool = False):
    await push_path(couch, db, doc_id, ["2-c", "1-a"], {"side": "c"})
    extra = {"_deleted": True} if deleted else {}
    await push_path(couch, db, doc_id, ["3-d", "2-b", "1-a"], {"side": "d"}, **extra)


async def test_a_new_document_gets_a_first_generation_rev_and_an_etag(alice, db, client):
    rev = await create(alice, db, "doc", {"title": "a"})
    assert rev.startswith("1-")
    async with client.get(f"/{db}/doc", headers=alice.headers()) as resp:
        assert resp.status == 200
        assert resp.headers["ETag"] == f'"{rev}"'
        assert await resp.json() == {"_id": "doc", "_rev": rev, "title": "a"}


async def test_if_none_match_with_the_current_rev_is_304(alice, db, client):
    """As CouchDB: a client that already has the current revision gets 304 and no body; an
    older one gets the document."""
    first = await create(alice, db, "doc", {"v": 1})
    second = (await alice.put(f"/{db}/doc", {"v": 2, "_rev": first}))["rev"]
    for held, status in ((second, 304), (first, 200), ("*", 304)):
        tag = held if held == "*" else f'"{held}"'
        headers = alice.headers({"If-None-Match": tag})
        async with client.get(f"/{db}/doc", headers=headers) as resp:
            assert resp.status == status and resp.headers["ETag"] == f'"{second}"'
            assert (await resp.read() == b"") == (status == 304)


async def test_an_update_with_a_stale_rev_is_a_conflict(alice, db):
    first = await create(alice, db, "doc", {"v": 1})
    second = (await alice.put(f"/{db}/doc", {"v": 2, "_rev": first}))["rev"]
    assert second.startswith("2-")
    err = await alice.put(f"/{db}/doc", {"v": 3, "_rev": first}, expected_status=409)
    assert err["error"] == "conflict"
    assert (await alice.get(f"/{db}/doc"))["v"] == 2


async def test_creating_an_existing_document_without_rev_is_a_conflict(alice, db):
    await create(alice, db, "doc", {"v": 1})
    err = await alice.put(f"/{db}/doc", {"v": 2}, expected_status=409)
    assert err["error"] == "conflict"


async def test_the_rev_may_come_from_the_query_string_or_if_match(alice, db):
    first = await create(alice, db, "doc", {"v": 1})
    second = (await alice.put(f"/{db}/doc?rev={first}", {"v": 2}))["rev"]
    third = (await alice.put(f"/{db}/doc", {"v": 3}, headers={"If-Match": f'"{second}"'}))["rev"]
    assert third.startswith("3-")


async def test_body_and_query_revs_that_disagree_are_refused(alice, db):
    first = await create(alice, db, "doc", {"v": 1})
    await alice.put(f"/{db}/doc?rev=1-other", {"_rev": first, "v": 2}, expected_status=400)


async def test_the_same_edit_made_twice_is_the_same_revision_not_a_conflict(alice, bob, db):
    first = await create(alice, db, "doc", {"v": 1})
    by_alice = await alice.put(f"/{db}/doc", {"_rev": first, "v": 2})
    by_bob = await bob.put(f"/{db}/doc", {"_rev": first, "v": 2})
    assert by_alice["rev"] == by_bob["rev"]
    info = await alice.get(f"/{db}")
    assert info["update_seq"] == 2
    assert "_conflicts" not in await alice.get(f"/{db}/doc?conflicts=true")


async def test_a_retried_create_with_the_same_body_answers_the_same_revision(alice, db):
    first = await create(alice, db, "doc", {"v": 1})
    assert await create(alice, db, "doc", {"v": 1}) == first
    assert (await alice.get(f"/{db}"))["update_seq"] == 1


async def test_delete_writes_a_tombstone_that_hides_the_document(alice, db):
    first = await create(alice, db, "doc", {"v": 1})
    deleted = await alice.delete(f"/{db}/doc?rev={first}")
    assert deleted["ok"] is True and deleted["rev"].startswith("2-")
    err = await alice.get(f"/{db}/doc", expected_status=404)
    assert err == {"error": "not_found", "reason": "deleted"}
    tomb = await alice.get(f"/{db}/doc?rev={deleted['rev']}")
    assert tomb["_deleted"] is True
    info = await alice.get(f"/{db}")
    assert (info["doc_count"], info["doc_del_count"]) == (0, 1)


async def test_deleting_twice_with_the_same_rev_answers_the_same_tombstone(alice, db):
    first = await create(alice, db, "doc", {"v": 1})
    one = await alice.delete(f"/{db}/doc?rev={first}")
    two = await alice.delete(f"/{db}/doc?rev={first}")
    assert one["rev"] == two["rev"]


async def test_delete_without_a_rev_is_a_conflict(alice, db):
    await create(alice, db, "doc", {"v": 1})
    err = await alice.delete(f"/{db}/doc", expected_status=409)
    assert err["error"] == "conflict"
    assert (await alice.get(f"/{db}/doc"))["v"] == 1


async def test_a_deleted_document_can_be_recreated_without_a_rev(alice, db):
    first = await create(alice, db, "doc", {"v": 1})
    await alice.delete(f"/{db}/doc?rev={first}")
    again = await create(alice, db, "doc", {"v": 2})
    assert again.startswith("3-")
    assert (await alice.get(f"/{db}/doc"))["v"] == 2


async def test_a_missing_document_or_revision_is_not_found(alice, db):
    assert (await alice.get(f"/{db}/nope", expected_status=404))["error"] == "not_found"
    await create(alice, db, "doc", {"v": 1})
    await alice.get(f"/{db}/doc?rev=1-0000", expected_status=404)


async def test_revs_and_revs_info_describe_the_history(alice, db):
    first = await create(alice, db, "doc", {"v": 1})
    second = (await alice.put(f"/{db}/doc", {"_rev": first, "v": 2}))["rev"]
    doc = await alice.get(f"/{db}/doc?revs=true&revs_info=true")
    assert doc["_revisions"] == {
        "start": 2,
        "ids": [second.split("-")[1], first.split("-")[1]],
    }
    assert doc["_revs_info"] == [
        {"rev": second, "status": "available"},
        {"rev": first, "status": "available"},
    ]


async def test_an_older_revision_can_be_read_by_rev(alice, db):
    first = await create(alice, db, "doc", {"v": 1})
    await alice.put(f"/{db}/doc", {"_rev": first, "v": 2})
    assert (await alice.get(f"/{db}/doc?rev={first}"))["v"] == 1


async def test_conflicts_and_deleted_conflicts_list_the_losing_leaves(alice, db):
    await branchy(alice, db, "live")
    doc = await alice.get(f"/{db}/live?conflicts=true")
    assert (doc["_rev"], doc["_conflicts"]) == ("3-d", ["2-c"])
    await branchy(alice, db, "dead", deleted=True)
    doc = await alice.get(f"/{db}/dead?deleted_conflicts=true&conflicts=true")
    assert doc["_rev"] == "2-c"
    assert doc["_deleted_conflicts"] == ["3-d"]
    assert "_conflicts" not in doc


async def test_open_revs_all_returns_every_leaf(alice, db):
    await branchy(alice, db)
    found = await alice.get(f"/{db}/tree?open_revs=all")
    assert sorted(item["ok"]["_rev"] for item in found) == ["2-c", "3-d"]


async def test_open_revs_list_reports_missing_revisions(alice, db):
    await branchy(alice, db)
    revs = orjson.dumps(["2-c", "9-zzz"]).decode()
    found = await alice.get(f"/{db}/tree", params={"open_revs": revs})
    assert found[0]["ok"]["side"] == "c"
    assert found[1] == {"missing": "9-zzz"}


async def test_open_revs_with_latest_returns_the_leaf_below_an_old_rev(alice, db):
    await branchy(alice, db)
    revs = orjson.dumps(["2-b"]).decode()
    found = await alice.get(f"/{db}/tree", params={"open_revs": revs, "latest": "true"})
    assert [item["ok"]["_rev"] for item in found] == ["3-d"]


async def test_open_revs_with_revs_includes_each_leafs_history(alice, db):
    await branchy(alice, db)
    found = await alice.get(f"/{db}/tree?open_revs=all&revs=true")
    by_rev = {item["ok"]["_rev"]: item["ok"]["_revisions"] for item in found}
    assert by_rev["3-d"] == {"start": 3, "ids": ["d", "b", "a"]}


async def test_open_revs_all_of_an_unknown_document_is_not_found(alice, db):
    await alice.get(f"/{db}/nope?open_revs=all", expected_status=404)


async def test_design_documents_are_stored_like_any_other(alice, db):
    rev = await create(alice, db, "_design/app", {"views": {}, "language": "javascript"})
    doc = await alice.get(f"/{db}/_design/app")
    assert doc["_id"] == "_design/app" and doc["_rev"] == rev
    await alice.delete(f"/{db}/_design/app?rev={rev}")
    await alice.get(f"/{db}/_design/app", expected_status=404)


async def test_an_encoded_slash_in_an_id_is_part_of_the_id(alice, db):
    rev = await create(alice, db, "a%2Fb", {"v": 1})
    doc = await alice.get(f"/{db}/a%2Fb")
    assert (doc["_id"], doc["_rev"]) == ("a/b", rev)
    listing = await alice.get(f"/{db}/_all_docs")
    assert [row["id"] for row in listing["rows"]] == ["a/b"]


async def test_design_ids_may_be_sent_with_an_encoded_slash(alice, db):
    await create(alice, db, "_design%2Fapp", {"v": 1})
    assert (await alice.get(f"/{db}/_design/app"))["_id"] == "_design/app"


async def test_post_to_the_database_generates_an_id(alice, db):
    made = await alice.post(f"/{db}", {"v": 1}, expected_status=201)
    assert made["ok"] is True and len(made["id"]) >= 16
    assert (await alice.get(f"/{db}/{made['id']}"))["v"] == 1
    named = await alice.post(f"/{db}", {"_id": "chosen", "v": 2}, expected_status=201)
    assert named["id"] == "chosen"


async def test_post_with_an_existing_id_is_a_conflict(alice, db):
    await alice.post(f"/{db}", {"_id": "chosen"}, expected_status=201)
    err = await alice.post(f"/{db}", {"_id": "chosen", "v": 2}, expected_status=409)
    assert err["error"] == "conflict"


async def test_an_identical_create_retried_is_the_same_revision_not_a_conflict(alice, db):
    first = await alice.post(f"/{db}", {"_id": "chosen", "v": 1}, expected_status=201)
    again = await alice.post(f"/{db}", {"_id": "chosen", "v": 1}, expected_status=201)
    assert again["rev"] == first["rev"]
    assert (await alice.get(f"/{db}"))["update_seq"] == 1


async def test_an_id_in_the_body_must_match_the_url(alice, db):
    await alice.put(f"/{db}/doc", {"_id": "other"}, expected_status=400)
    await alice.get(f"/{db}/doc", expected_status=404)


async def test_unknown_underscore_members_are_refused(alice, db):
    err = await alice.put(f"/{db}/doc", {"_private": 1}, expected_status=400)
    assert err["error"] == "bad_request"


async def test_new_edits_false_on_put_stores_the_given_rev(alice, db):
    body = {"_rev": "5-abc", "v": 1}
    made = await alice.put(f"/{db}/doc?new_edits=false", body)
    assert made["rev"] == "5-abc"
    assert (await alice.get(f"/{db}/doc"))["_rev"] == "5-abc"


async def test_an_owned_database_hides_other_peoples_documents(admin, alice, bob):
    await admin.put("/private", expected_status=201)
    await create(alice, "private", "mine", {"v": 1})
    err = await bob.get("/private/mine", expected_status=404)
    assert err["error"] == "not_found"
    await bob.put("/private/mine", {"v": 2}, expected_status=409)
    assert (await alice.get("/private/mine"))["v"] == 1


async def test_inspectors_cannot_write_a_readonly_database(admin, manager, alice):
    await admin.put("/catalog?access_mode=readonly", expected_status=201)
    await create(manager, "catalog", "t1", {"v": 1})
    assert (await alice.get("/catalog/t1"))["v"] == 1
    err = await alice.put("/catalog/t2", {"v": 1}, expected_status=403)
    assert err["error"] == "forbidden"
