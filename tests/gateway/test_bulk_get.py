"""``POST /{db}/_bulk_get``: what a replicator fetches after ``_revs_diff``."""

from __future__ import annotations

import base64

from tests.helpers import Couch


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def bulk_get(couch: Couch, db: str, docs: list, query: str = "", **kw) -> list:
    body = await couch.post(f"/{db}/_bulk_get{query}", {"docs": docs}, **kw)
    return body["results"]


async def push(couch: Couch, db: str, doc_id: str, path: list[str], **body) -> None:
    start = int(path[0].split("-")[0])
    doc = {
        "_id": doc_id,
        "_rev": path[0],
        "_revisions": {"start": start, "ids": [r.split("-")[1] for r in path]},
        **body,
    }
    await couch.post(f"/{db}/_bulk_docs", {"docs": [doc], "new_edits": False}, expected_status=201)


async def test_documents_come_back_in_request_order(alice, db):
    await alice.put(f"/{db}/a", {"v": "a"})
    await alice.put(f"/{db}/b", {"v": "b"})
    results = await bulk_get(alice, db, [{"id": "b"}, {"id": "a"}])
    assert [r["id"] for r in results] == ["b", "a"]
    assert [r["docs"][0]["ok"]["v"] for r in results] == ["b", "a"]


async def test_a_specific_revision_is_returned(alice, db):
    first = (await alice.put(f"/{db}/a", {"v": 1}))["rev"]
    await alice.put(f"/{db}/a", {"_rev": first, "v": 2})
    [result] = await bulk_get(alice, db, [{"id": "a", "rev": first}])
    assert result["docs"] == [{"ok": {"_id": "a", "_rev": first, "v": 1}}]


async def test_a_missing_document_is_an_error_entry(alice, db):
    [result] = await bulk_get(alice, db, [{"id": "ghost"}])
    assert result["id"] == "ghost"
    [entry] = result["docs"]
    assert entry["error"]["id"] == "ghost"
    assert entry["error"]["error"] == "not_found"
    assert isinstance(entry["error"]["reason"], str)


async def test_a_missing_revision_is_an_error_entry_naming_it(alice, db):
    await alice.put(f"/{db}/a", {"v": 1})
    [result] = await bulk_get(alice, db, [{"id": "a", "rev": "7-nothere"}])
    [entry] = result["docs"]
    assert entry["error"]["rev"] == "7-nothere"
    assert entry["error"]["error"] == "not_found"


async def test_revs_true_adds_the_revision_history(alice, db):
    await push(alice, db, "a", ["3-c", "2-b", "1-a"], v=3)
    [result] = await bulk_get(alice, db, [{"id": "a", "rev": "3-c"}], "?revs=true")
    doc = result["docs"][0]["ok"]
    assert doc["_revisions"] == {"start": 3, "ids": ["c", "b", "a"]}


async def test_without_revs_there_is_no_history(alice, db):
    await push(alice, db, "a", ["2-b", "1-a"], v=2)
    [result] = await bulk_get(alice, db, [{"id": "a", "rev": "2-b"}])
    assert "_revisions" not in result["docs"][0]["ok"]


async def test_latest_resolves_an_old_revision_to_its_leaves(alice, db):
    await push(alice, db, "a", ["3-c", "2-b", "1-a"], v=3)
    await push(alice, db, "a", ["2-x", "1-a"], v=2)
    [result] = await bulk_get(alice, db, [{"id": "a", "rev": "1-a"}], "?latest=true")
    assert sorted(d["ok"]["_rev"] for d in result["docs"]) == ["2-x", "3-c"]


async def test_without_latest_an_ancestor_body_is_not_stored(alice, db):
    await push(alice, db, "a", ["2-b", "1-a"], v=2)
    [result] = await bulk_get(alice, db, [{"id": "a", "rev": "1-a"}])
    assert result["docs"][0]["error"]["error"] == "not_found"


async def test_a_tombstone_revision_is_returned_as_deleted(alice, db):
    first = (await alice.put(f"/{db}/a", {"v": 1}))["rev"]
    tomb = (await alice.delete(f"/{db}/a?rev={first}"))["rev"]
    [result] = await bulk_get(alice, db, [{"id": "a", "rev": tomb}])
    assert result["docs"][0]["ok"]["_deleted"] is True


async def test_attachments_true_inlines_attachment_data(alice, db):
    att = {"n.txt": {"content_type": "text/plain", "data": b64(b"hello")}}
    await alice.put(f"/{db}/a", {"_attachments": att})
    [plain] = await bulk_get(alice, db, [{"id": "a"}])
    assert plain["docs"][0]["ok"]["_attachments"]["n.txt"]["stub"] is True
    [full] = await bulk_get(alice, db, [{"id": "a"}], "?attachments=true")
    assert full["docs"][0]["ok"]["_attachments"]["n.txt"]["data"] == b64(b"hello")


async def test_atts_since_skips_attachments_the_client_already_has(alice, db):
    first = await alice.put(f"/{db}/a", {"_attachments": {"old.txt": {"data": b64(b"old")}}})
    doc = await alice.get(f"/{db}/a")
    doc["_attachments"]["new.txt"] = {"data": b64(b"new")}
    second = await alice.put(f"/{db}/a", doc)
    item = {"id": "a", "rev": second["rev"], "atts_since": [first["rev"]]}
    [result] = await bulk_get(alice, db, [item])
    atts = result["docs"][0]["ok"]["_attachments"]
    assert atts["old.txt"].get("stub") is True and "data" not in atts["old.txt"]
    assert atts["new.txt"]["data"] == b64(b"new")


async def test_atts_since_counts_only_revisions_on_the_path_of_the_one_sent(alice, db):
    """The replicator fills atts_since from possible_ancestors, which may be leaves of
    another branch: those say nothing about this branch's attachments, which must come
    inline (a stub there is one the target cannot resolve: missing_stub)."""
    att = {"x.txt": {"content_type": "text/plain", "revpos": 2, "data": b64(b"x")}}
    await push(alice, db, "d", ["2-bbb", "1-aaa"], _attachments=att)
    await push(alice, db, "d", ["3-ccc", "2-bbb", "1-aaa"], _attachments=att)
    await push(alice, db, "d", ["2-zzz", "1-aaa"])
    other_branch = {"id": "d", "rev": "3-ccc", "atts_since": ["2-zzz"]}
    [result] = await bulk_get(alice, db, [other_branch])
    assert result["docs"][0]["ok"]["_attachments"]["x.txt"]["data"] == b64(b"x")
    same_branch = {"id": "d", "rev": "3-ccc", "atts_since": ["2-bbb", "2-zzz"]}
    [result] = await bulk_get(alice, db, [same_branch])
    assert result["docs"][0]["ok"]["_attachments"]["x.txt"].get("stub") is True
    query = {"open_revs": '["3-ccc"]', "atts_since": '["2-zzz"]'}
    got = await alice.get(f"/{db}/d", params=query, headers={"Accept": "application/json"})
    assert got[0]["ok"]["_attachments"]["x.txt"]["data"] == b64(b"x")


async def test_documents_of_other_owners_look_missing(admin, alice, bob):
    await admin.put("/private", expected_status=201)
    rev = (await alice.put("/private/a", {"secret": 1}))["rev"]
    [result] = await bulk_get(bob, "private", [{"id": "a", "rev": rev}])
    assert "ok" not in result["docs"][0]
    assert result["docs"][0]["error"]["error"] == "not_found"


async def test_a_malformed_body_is_a_bad_request(alice, db):
    await alice.post(f"/{db}/_bulk_get", {"docs": "a"}, expected_status=400)
    await alice.post(f"/{db}/_bulk_get", {"nodocs": []}, expected_status=400)


async def test_a_malformed_entry_is_an_error_for_that_entry_alone(alice, db):
    """As CouchDB: one bad entry is a bad_request result of its own; the others are served."""
    rev = (await alice.put(f"/{db}/a", {"n": 1}))["rev"]
    entries = [{"rev": "1-a"}, {"id": "a", "rev": "x"}, {"id": "a", "atts_since": "1-a"}, 7,
               {"id": "a", "rev": rev}]  # fmt: skip
    results = await bulk_get(alice, db, entries)
    assert len(results) == 5
    for result, doc_id in zip(results[:4], [None, "a", "a", None], strict=True):
        assert result["id"] == doc_id
        assert result["docs"][0]["error"]["error"] == "bad_request"
    assert results[4]["docs"][0]["ok"]["_rev"] == rev


async def test_an_entry_without_rev_gets_every_leaf(alice, db):
    """CouchDB reads a missing ``rev`` as ``open_revs=all``: conflicts and deleted leaves
    come back too; a missing document is a not_found error."""
    await push(alice, db, "d", ["2-bbb", "1-aaa"])
    await push(alice, db, "d", ["2-ccc", "1-aaa"])
    await push(alice, db, "d", ["2-ddd", "1-aaa"], _deleted=True)
    [found, missing] = await bulk_get(alice, db, [{"id": "d"}, {"id": "nope"}])
    assert sorted(doc["ok"]["_rev"] for doc in found["docs"]) == ["2-bbb", "2-ccc", "2-ddd"]
    assert missing["docs"][0]["error"]["error"] == "not_found"


async def test_only_the_entry_with_atts_since_gets_attachment_data(alice, db):
    first = await alice.put(f"/{db}/a", {"_attachments": {"old.txt": {"data": b64(b"o")}}})
    await alice.put(f"/{db}/b", {"_attachments": {"b.txt": {"data": b64(b"b")}}})
    doc = await alice.get(f"/{db}/a")
    doc["_attachments"]["new.txt"] = {"data": b64(b"n")}
    second = await alice.put(f"/{db}/a", doc)
    entries = [{"id": "a", "rev": second["rev"], "atts_since": [first["rev"]]}, {"id": "b"}]
    with_since, plain = await bulk_get(alice, db, entries)
    assert with_since["docs"][0]["ok"]["_attachments"]["new.txt"]["data"] == b64(b"n")
    assert plain["docs"][0]["ok"]["_attachments"]["b.txt"].get("stub") is True
