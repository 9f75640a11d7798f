"""``POST /{db}/_bulk_docs`` with ``new_edits`` true (ordinary writes) and false (replicators)."""

from __future__ import annotations

import dataclasses

from gateway.app import create_app
from tests.helpers import Couch


async def bulk(couch: Couch, db: str, docs: list, *, new_edits: bool | None = None, **kw):
    body: dict = {"docs": docs}
    if new_edits is not None:
        body["new_edits"] = new_edits
    kw.setdefault("expected_status", 201)
    return await couch.post(f"/{db}/_bulk_docs", body, **kw)


def replicated(doc_id: str, path: list[str], **body) -> dict:
    """A document as a replicator sends it: ``_rev`` plus ``_revisions`` (leaf first)."""
    start = int(path[0].split("-")[0])
    ids = [rev.split("-")[1] for rev in path]
    return {"_id": doc_id, "_rev": path[0], "_revisions": {"start": start, "ids": ids}, **body}


async def update_seq(couch: Couch, db: str) -> int:
    return (await couch.get(f"/{db}"))["update_seq"]


async def test_new_edits_creates_every_document_and_answers_in_order(alice, db):
    rows = await bulk(alice, db, [{"_id": "b", "v": 1}, {"_id": "a", "v": 2}])
    assert [(r["id"], r["ok"]) for r in rows] == [("b", True), ("a", True)]
    assert all(r["rev"].startswith("1-") for r in rows)
    assert (await alice.get(f"/{db}/a"))["v"] == 2
    assert await update_seq(alice, db) == 2


async def test_a_document_without_an_id_gets_one(alice, db):
    [row] = await bulk(alice, db, [{"v": 1}])
    assert row["ok"] is True and row["id"]
    assert (await alice.get(f"/{db}/{row['id']}"))["v"] == 1


async def test_a_conflicting_document_fails_alone(alice, db):
    [made] = await bulk(alice, db, [{"_id": "a", "v": 1}])
    rows = await bulk(alice, db, [{"_id": "a", "v": 2}, {"_id": "b", "v": 1}])
    assert rows[0]["id"] == "a" and rows[0]["error"] == "conflict"
    assert isinstance(rows[0]["reason"], str)
    assert rows[1]["ok"] is True
    assert (await alice.get(f"/{db}/a"))["_rev"] == made["rev"]


async def test_an_invalid_document_fails_alone(alice, db):
    rows = await bulk(alice, db, [{"_id": "_bad"}, {"_id": "good"}, {"_id": "x", "_nope": 1}])
    assert rows[0]["error"] == "bad_request" and rows[0]["id"] == "_bad"
    assert rows[1]["ok"] is True
    assert rows[2]["error"] == "bad_request"
    assert await update_seq(alice, db) == 1


async def test_updates_and_deletions_go_through_bulk_docs(alice, db):
    [a, b] = await bulk(alice, db, [{"_id": "a", "v": 1}, {"_id": "b", "v": 1}])
    rows = await bulk(
        alice,
        db,
        [{"_id": "a", "_rev": a["rev"], "v": 2}, {"_id": "b", "_rev": b["rev"], "_deleted": True}],
    )
    assert [r["rev"][:2] for r in rows] == ["2-", "2-"]
    assert (await alice.get(f"/{db}/a"))["v"] == 2
    await alice.get(f"/{db}/b", expected_status=404)
    info = await alice.get(f"/{db}")
    assert (info["doc_count"], info["doc_del_count"]) == (1, 1)


async def test_the_same_id_twice_in_one_batch_conflicts_the_second_time(alice, db):
    rows = await bulk(alice, db, [{"_id": "a", "v": 1}, {"_id": "a", "v": 2}])
    assert rows[0]["ok"] is True
    assert rows[1]["error"] == "conflict"
    assert (await alice.get(f"/{db}/a"))["v"] == 1


async def test_replaying_an_edit_answers_the_same_revision(alice, db):
    [a] = await bulk(alice, db, [{"_id": "a", "v": 1}])
    edit = {"_id": "a", "_rev": a["rev"], "v": 2}
    [first] = await bulk(alice, db, [edit])
    [again] = await bulk(alice, db, [edit])
    assert first["rev"] == again["rev"] and again["ok"] is True
    assert await update_seq(alice, db) == 2


async def test_new_edits_false_answers_an_empty_list_and_keeps_the_given_revs(alice, db):
    out = await bulk(alice, db, [replicated("a", ["3-c", "2-b", "1-a"], v=3)], new_edits=False)
    assert out == []
    doc = await alice.get(f"/{db}/a?revs=true")
    assert doc["_rev"] == "3-c" and doc["v"] == 3
    assert doc["_revisions"] == {"start": 3, "ids": ["c", "b", "a"]}


async def test_new_edits_false_keeps_concurrent_branches_as_conflicts(alice, db):
    await bulk(alice, db, [replicated("a", ["2-b", "1-a"], side="b")], new_edits=False)
    await bulk(alice, db, [replicated("a", ["2-c", "1-a"], side="c")], new_edits=False)
    doc = await alice.get(f"/{db}/a?conflicts=true")
    assert (doc["_rev"], doc["side"], doc["_conflicts"]) == ("2-c", "c", ["2-b"])
    loser = await alice.get(f"/{db}/a?rev=2-b")
    assert loser["side"] == "b"


async def test_the_winner_is_the_longest_live_branch(alice, db):
    await bulk(alice, db, [replicated("a", ["3-a", "2-a", "1-a"], side="long")], new_edits=False)
    await bulk(alice, db, [replicated("a", ["2-z", "1-a"], side="short")], new_edits=False)
    assert (await alice.get(f"/{db}/a"))["side"] == "long"


async def test_a_deleted_branch_never_beats_a_live_one(alice, db):
    await bulk(alice, db, [replicated("a", ["2-b", "1-a"], side="b")], new_edits=False)
    dead = replicated("a", ["3-z", "2-y", "1-a"], _deleted=True)
    await bulk(alice, db, [dead], new_edits=False)
    doc = await alice.get(f"/{db}/a?deleted_conflicts=true")
    assert doc["_rev"] == "2-b"
    assert doc["_deleted_conflicts"] == ["3-z"]


async def test_pushing_a_known_revision_again_writes_nothing(alice, db):
    doc = replicated("a", ["2-b", "1-a"], v=1)
    await bulk(alice, db, [doc], new_edits=False)
    seq = await update_seq(alice, db)
    assert await bulk(alice, db, [doc], new_edits=False) == []
    assert await update_seq(alice, db) == seq


async def test_pushing_an_ancestor_of_a_leaf_changes_nothing(alice, db):
    await bulk(alice, db, [replicated("a", ["3-c", "2-b", "1-a"], v=3)], new_edits=False)
    await bulk(alice, db, [replicated("a", ["2-b", "1-a"], v=2)], new_edits=False)
    doc = await alice.get(f"/{db}/a?conflicts=true")
    assert doc["_rev"] == "3-c" and "_conflicts" not in doc


async def test_new_edits_false_without_a_rev_is_a_row_error(alice, db):
    out = await bulk(alice, db, [{"_id": "a", "v": 1}, replicated("b", ["1-b"])], new_edits=False)
    assert [(row["id"], row["error"]) for row in out] == [("a", "bad_request")]
    await alice.get(f"/{db}/a", expected_status=404)
    assert (await alice.get(f"/{db}/b"))["_rev"] == "1-b"


async def test_new_edits_false_accepts_a_rev_without_history(alice, db):
    out = await bulk(alice, db, [{"_id": "a", "_rev": "4-abc", "v": 4}], new_edits=False)
    assert out == []
    assert (await alice.get(f"/{db}/a"))["_rev"] == "4-abc"


async def test_new_edits_false_never_reports_a_conflict(alice, db):
    await bulk(alice, db, [{"_id": "a", "v": 1}])
    out = await bulk(alice, db, [replicated("a", ["1-zzz"], v=9)], new_edits=False)
    assert out == []
    doc = await alice.get(f"/{db}/a?conflicts=true")
    assert len(doc["_conflicts"]) == 1


async def test_new_edits_must_be_a_boolean(alice, db):
    body = {"docs": [{"_id": "a"}], "new_edits": "false"}
    err = await alice.post(f"/{db}/_bulk_docs", body, expected_status=400)
    assert err["error"] == "bad_request"
    await alice.get(f"/{db}/a", expected_status=404)


async def test_docs_must_be_a_list(alice, db):
    await alice.post(f"/{db}/_bulk_docs", {"docs": {"_id": "a"}}, expected_status=400)
    await alice.post(f"/{db}/_bulk_docs", {}, expected_status=400)


async def test_an_empty_batch_is_fine(alice, db):
    assert await bulk(alice, db, []) == []


async def test_inspectors_cannot_bulk_write_a_readonly_database(admin, alice):
    await admin.put("/catalog?access_mode=readonly", expected_status=201)
    err = await bulk(alice, "catalog", [{"_id": "a"}], expected_status=403)
    assert err["error"] == "forbidden"
    assert (await alice.get("/catalog"))["update_seq"] == 0


async def test_owned_documents_of_someone_else_are_taken_ids(admin, alice, bob):
    await admin.put("/private", expected_status=201)
    [mine] = await bulk(alice, "private", [{"_id": "a", "v": 1}])
    rows = await bulk(bob, "private", [{"_id": "a", "_rev": mine["rev"], "v": 2}])
    assert rows[0]["error"] == "conflict"
    assert (await alice.get("/private/a"))["v"] == 1


async def test_too_many_documents_in_one_batch_are_refused(aiohttp_client, settings, engine):
    small = dataclasses.replace(settings, max_bulk_docs=2)
    client = await aiohttp_client(create_app(small, migrate=False))
    admin = Couch(client, "admin")
    await admin.put("/field", expected_status=201)
    docs = [{"_id": f"d{i}"} for i in range(3)]
    err = await bulk(admin, "field", docs, expected_status=400)
    assert err["error"] == "bad_request"
    assert (await admin.get("/field"))["update_seq"] == 0
