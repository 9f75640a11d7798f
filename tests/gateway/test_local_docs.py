"""``GET|PUT|DELETE /{db}/_local/{id}``: checkpoints, private to each (database, user)."""

from __future__ import annotations

from tests.helpers import Couch


async def put_local(couch: Couch, db: str, name: str, body: dict, **kw) -> dict:
    return await couch.put(f"/{db}/_local/{name}", body, **kw)


async def test_a_new_local_document_has_rev_0_1(alice, db):
    made = await put_local(alice, db, "cp", {"last_seq": 5})
    assert made == {"ok": True, "id": "_local/cp", "rev": "0-1"}
    doc = await alice.get(f"/{db}/_local/cp")
    assert doc == {"_id": "_local/cp", "_rev": "0-1", "last_seq": 5}


async def test_each_update_counts_up_the_rev(alice, db):
    await put_local(alice, db, "cp", {"n": 1})
    second = await put_local(alice, db, "cp", {"_rev": "0-1", "n": 2})
    third = await put_local(alice, db, "cp?rev=0-2", {"n": 3})
    assert (second["rev"], third["rev"]) == ("0-2", "0-3")
    assert (await alice.get(f"/{db}/_local/cp"))["n"] == 3


async def test_a_wrong_rev_is_a_conflict(alice, db):
    await put_local(alice, db, "cp", {"n": 1})
    await put_local(alice, db, "cp", {"_rev": "0-1", "n": 2})
    err = await put_local(alice, db, "cp", {"_rev": "0-1", "n": 3}, expected_status=409)
    assert err["error"] == "conflict"
    await put_local(alice, db, "cp", {"n": 3}, expected_status=409)
    assert (await alice.get(f"/{db}/_local/cp"))["n"] == 2


async def test_creating_with_a_rev_is_a_conflict(alice, db):
    await put_local(alice, db, "cp", {"_rev": "0-4", "n": 1}, expected_status=409)
    await alice.get(f"/{db}/_local/cp", expected_status=404)


async def test_a_malformed_rev_is_a_bad_request(alice, db):
    await put_local(alice, db, "cp", {"n": 1})
    await put_local(alice, db, "cp", {"_rev": "1-abc", "n": 2}, expected_status=400)
    await alice.delete(f"/{db}/_local/cp?rev=zero", expected_status=400)


async def test_delete_needs_the_current_rev_and_removes_the_document(alice, db):
    await put_local(alice, db, "cp", {"n": 1})
    await alice.delete(f"/{db}/_local/cp", expected_status=409)
    await alice.delete(f"/{db}/_local/cp?rev=0-9", expected_status=409)
    gone = await alice.delete(f"/{db}/_local/cp?rev=0-1")
    assert gone["ok"] is True and gone["id"] == "_local/cp"
    await alice.get(f"/{db}/_local/cp", expected_status=404)
    again = await put_local(alice, db, "cp", {"n": 2})
    assert again["rev"] == "0-1"


async def test_a_missing_local_document_is_not_found(alice, db):
    err = await alice.get(f"/{db}/_local/none", expected_status=404)
    assert err["error"] == "not_found"
    await alice.delete(f"/{db}/_local/none?rev=0-1", expected_status=404)


async def test_local_documents_stay_out_of_the_feed_and_listing(alice, db):
    await put_local(alice, db, "cp", {"n": 1})
    info = await alice.get(f"/{db}")
    assert (info["update_seq"], info["doc_count"]) == (0, 0)
    assert (await alice.get(f"/{db}/_changes"))["results"] == []
    assert (await alice.get(f"/{db}/_all_docs"))["rows"] == []


async def test_two_users_with_the_same_id_never_see_each_other(alice, bob, db):
    await put_local(alice, db, "x", {"owner": "alice"})
    await bob.get(f"/{db}/_local/x", expected_status=404)
    made = await put_local(bob, db, "x", {"owner": "bob"})
    assert made["rev"] == "0-1"
    assert (await alice.get(f"/{db}/_local/x"))["owner"] == "alice"
    assert (await bob.get(f"/{db}/_local/x"))["owner"] == "bob"
    await bob.delete(f"/{db}/_local/x?rev=0-1")
    assert (await alice.get(f"/{db}/_local/x"))["owner"] == "alice"


async def test_admins_do_not_see_other_users_checkpoints_either(admin, alice, db):
    await put_local(alice, db, "x", {"owner": "alice"})
    await admin.get(f"/{db}/_local/x", expected_status=404)


async def test_the_same_id_in_two_databases_is_two_documents(admin, alice, db):
    await admin.put("/other?access_mode=shared", expected_status=201)
    await put_local(alice, db, "x", {"where": db})
    await put_local(alice, "other", "x", {"where": "other"})
    assert (await alice.get(f"/{db}/_local/x"))["where"] == db
    assert (await alice.get("/other/_local/x"))["where"] == "other"


async def test_local_ids_may_contain_slashes(alice, db):
    made = await put_local(alice, db, "a%2Fb", {"n": 1})
    assert made["id"] == "_local/a/b"
    assert (await alice.get(f"/{db}/_local/a%2Fb"))["_id"] == "_local/a/b"


async def test_an_id_in_the_body_must_match_the_url(alice, db):
    await put_local(alice, db, "cp", {"_id": "_local/other"}, expected_status=400)


async def test_readonly_databases_still_take_checkpoints(admin, alice):
    await admin.put("/catalog?access_mode=readonly", expected_status=201)
    made = await put_local(alice, "catalog", "cp", {"last_seq": 1})
    assert made["rev"] == "0-1"
