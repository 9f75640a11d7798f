"""``GET|POST /{db}/_all_docs``: live documents in raw id order, or by ``keys``."""

from __future__ import annotations

import orjson

from tests.helpers import Couch

IDS = ["a", "b", "c", "d", "e"]
JSON_PARAMS = {"key", "keys", "startkey", "endkey", "start_key", "end_key"}


async def seed(couch: Couch, db: str, ids: list[str] = IDS) -> dict[str, str]:
    rows = await couch.post(
        f"/{db}/_bulk_docs", {"docs": [{"_id": i, "n": i} for i in ids]}, expected_status=201
    )
    return {row["id"]: row["rev"] for row in rows}


async def ids_of(couch: Couch, db: str, **params: object) -> list[str]:
    query = {k: orjson.dumps(v).decode() if k in JSON_PARAMS else v for k, v in params.items()}
    body = await couch.get(f"/{db}/_all_docs", params=query)
    return [row["id"] for row in body["rows"]]


async def test_rows_list_every_live_document_with_its_winning_rev(alice, db):
    revs = await seed(alice, db)
    body = await alice.get(f"/{db}/_all_docs")
    assert body["total_rows"] == 5 and body["offset"] == 0
    assert body["rows"][0] == {"id": "a", "key": "a", "value": {"rev": revs["a"]}}
    assert [row["id"] for row in body["rows"]] == IDS


async def test_ids_sort_by_code_point_not_by_locale(alice, db):
    await seed(alice, db, ["b", "B", "a", "_design/x", "é"])
    assert await ids_of(alice, db) == ["B", "_design/x", "a", "b", "é"]


async def test_deleted_documents_are_left_out_and_not_counted(alice, db):
    revs = await seed(alice, db)
    await alice.delete(f"/{db}/c?rev={revs['c']}")
    body = await alice.get(f"/{db}/_all_docs")
    assert [row["id"] for row in body["rows"]] == ["a", "b", "d", "e"]
    assert body["total_rows"] == 4


async def test_local_documents_are_never_listed(alice, db):
    await alice.put(f"/{db}/_local/cp", {"seq": 1})
    await seed(alice, db, ["a"])
    assert await ids_of(alice, db) == ["a"]


async def test_startkey_and_endkey_bound_the_range_inclusively(alice, db):
    await seed(alice, db)
    assert await ids_of(alice, db, startkey="b", endkey="d") == ["b", "c", "d"]
    assert await ids_of(alice, db, start_key="b", end_key="d") == ["b", "c", "d"]


async def test_inclusive_end_false_leaves_out_the_endkey(alice, db):
    await seed(alice, db)
    assert await ids_of(alice, db, startkey="b", endkey="d", inclusive_end="false") == ["b", "c"]


async def test_descending_reverses_the_order_and_the_meaning_of_the_keys(alice, db):
    await seed(alice, db)
    assert await ids_of(alice, db, descending="true") == list(reversed(IDS))
    assert await ids_of(alice, db, descending="true", startkey="d", endkey="b") == ["d", "c", "b"]
    got = await ids_of(
        alice, db, descending="true", startkey="d", endkey="b", inclusive_end="false"
    )
    assert got == ["d", "c"]


async def test_skip_and_limit_page_through_the_rows(alice, db):
    await seed(alice, db)
    assert await ids_of(alice, db, skip="1", limit="2") == ["b", "c"]
    assert await ids_of(alice, db, limit="0") == []
    body = await alice.get(f"/{db}/_all_docs?skip=3")
    assert body["offset"] == 3 and [r["id"] for r in body["rows"]] == ["d", "e"]


async def test_key_selects_one_document(alice, db):
    await seed(alice, db)
    assert await ids_of(alice, db, key="c") == ["c"]
    assert await ids_of(alice, db, key="zzz") == []


async def test_include_docs_adds_each_document(alice, db):
    revs = await seed(alice, db, ["a"])
    body = await alice.get(f"/{db}/_all_docs?include_docs=true")
    assert body["rows"][0]["doc"] == {"_id": "a", "_rev": revs["a"], "n": "a"}


async def test_include_docs_with_conflicts_lists_the_losing_leaves(alice, db):
    for leaf in ("b", "c"):
        doc = {"_id": "x", "_rev": f"2-{leaf}", "_revisions": {"start": 2, "ids": [leaf, "a"]}}
        body = {"docs": [doc], "new_edits": False}
        await alice.post(f"/{db}/_bulk_docs", body, expected_status=201)
    body = await alice.get(f"/{db}/_all_docs?include_docs=true&conflicts=true")
    assert body["rows"][0]["doc"]["_conflicts"] == ["2-b"]
    plain = await alice.get(f"/{db}/_all_docs?include_docs=true")
    assert "_conflicts" not in plain["rows"][0]["doc"]


async def test_update_seq_is_added_when_asked(alice, db):
    await seed(alice, db)
    assert "update_seq" not in await alice.get(f"/{db}/_all_docs")
    body = await alice.get(f"/{db}/_all_docs?update_seq=true")
    assert body["update_seq"] == 5


async def test_post_keys_answers_rows_in_key_order(alice, db):
    revs = await seed(alice, db)
    body = await alice.post(f"/{db}/_all_docs", {"keys": ["d", "a"]})
    assert body["rows"] == [
        {"id": "d", "key": "d", "value": {"rev": revs["d"]}},
        {"id": "a", "key": "a", "value": {"rev": revs["a"]}},
    ]


async def test_keys_report_deleted_and_missing_documents(alice, db):
    revs = await seed(alice, db)
    gone = (await alice.delete(f"/{db}/b?rev={revs['b']}"))["rev"]
    body = await alice.post(f"/{db}/_all_docs?include_docs=true", {"keys": ["b", "zz", "a"]})
    deleted, missing, live = body["rows"]
    assert deleted["id"] == "b" and deleted["value"] == {"rev": gone, "deleted": True}
    assert deleted["doc"] is None
    assert missing == {"key": "zz", "error": "not_found"}
    assert live["doc"]["n"] == "a"


async def test_keys_also_work_as_a_get_parameter(alice, db):
    await seed(alice, db)
    assert await ids_of(alice, db, keys=["e", "c"]) == ["e", "c"]


async def test_keys_must_be_a_list_of_strings(alice, db):
    await alice.post(f"/{db}/_all_docs", {"keys": "a"}, expected_status=400)
    await alice.post(f"/{db}/_all_docs", {"keys": [1]}, expected_status=400)


async def test_post_takes_every_parameter_in_the_body_too(alice, db):
    """CouchDB 3 accepts the query parameters as body members of a POST (IBM's SDKs send
    them so); the body's win over the URL's."""
    await seed(alice, db)
    body = await alice.post(f"/{db}/_all_docs", {"keys": ["a", "b", "c"], "limit": 1})
    assert [row["id"] for row in body["rows"]] == ["a"]
    body = await alice.post(f"/{db}/_all_docs?include_docs=false", {"include_docs": True,
                                                                      "keys": ["b"]})  # fmt: skip
    assert body["rows"][0]["doc"]["n"] == "b"
    body = await alice.post(f"/{db}/_all_docs", {"startkey": "b", "endkey": "c"})
    assert [row["id"] for row in body["rows"]] == ["b", "c"]
    await alice.post(f"/{db}/_all_docs", {"limit": [1]}, expected_status=400)


async def test_docid_bounds_are_plain_ids_not_json(alice, db):
    await seed(alice, db)
    assert await ids_of(alice, db, startkey_docid="c") == ["c", "d", "e"]
    assert await ids_of(alice, db, end_key_doc_id="b") == ["a", "b"]


async def test_bad_parameters_are_bad_requests(alice, db):
    for query in ("limit=-1", "limit=x", "skip=no", "descending=maybe", "startkey=nojson"):
        err = await alice.get(f"/{db}/_all_docs?{query}", expected_status=400)
        assert err["error"] == "bad_request"


async def test_owned_databases_list_only_the_callers_documents(admin, alice, bob):
    await admin.put("/private", expected_status=201)
    await seed(alice, "private", ["a1", "a2"])
    await seed(bob, "private", ["b1"])
    body = await bob.get("/private/_all_docs")
    assert [row["id"] for row in body["rows"]] == ["b1"]
    assert body["total_rows"] == 1
    keys = await bob.post("/private/_all_docs", {"keys": ["a1"]})
    assert keys["rows"] == [{"key": "a1", "error": "not_found"}]
    assert await ids_of(admin, "private") == ["a1", "a2", "b1"]
