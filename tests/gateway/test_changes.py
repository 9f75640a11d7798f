"""``GET|POST /{db}/_changes``: normal, longpoll, continuous and eventsource feeds.

Streaming feeds are started as a task before the write they wait for, and bounded by a
``limit`` or a small ``timeout`` so that no test depends on how long anything takes.
"""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest

import schema.changes
from tests.helpers import Couch


async def write(couch: Couch, db: str, *ids: str, **body) -> dict[str, str]:
    rows = await couch.post(
        f"/{db}/_bulk_docs", {"docs": [{"_id": i, **body} for i in ids]}, expected_status=201
    )
    return {row["id"]: row["rev"] for row in rows}


async def changes(couch: Couch, db: str, query: str = "", body: dict | None = None, **kw):
    if body is not None:
        return await couch.post(f"/{db}/_changes{query}", body, **kw)
    return await couch.get(f"/{db}/_changes{query}", **kw)


def ids(feed: dict) -> list[str]:
    return [row["id"] for row in feed["results"]]


async def stream(client, couch: Couch, path: str) -> tuple[str, bytes]:
    """Read a whole streaming response (the caller bounds it with limit or timeout)."""
    async with client.get(path, headers=couch.headers()) as resp:
        assert resp.status == 200
        return resp.headers["Content-Type"], await resp.read()


async def test_each_row_names_the_document_its_winning_rev_and_seq(alice, db):
    revs = await write(alice, db, "a", "b")
    feed = await changes(alice, db)
    assert feed["results"] == [
        {"seq": 1, "id": "a", "changes": [{"rev": revs["a"]}]},
        {"seq": 2, "id": "b", "changes": [{"rev": revs["b"]}]},
    ]
    assert feed["last_seq"] == 2 and feed["pending"] == 0


async def test_every_document_appears_once_at_its_latest_seq(alice, db):
    revs = await write(alice, db, "a", "b")
    await alice.put(f"/{db}/a", {"_rev": revs["a"], "v": 2})
    feed = await changes(alice, db)
    assert [(r["id"], r["seq"]) for r in feed["results"]] == [("b", 2), ("a", 3)]


async def test_deletions_are_changes_marked_deleted(alice, db):
    revs = await write(alice, db, "a")
    await alice.delete(f"/{db}/a?rev={revs['a']}")
    [row] = (await changes(alice, db))["results"]
    assert row["deleted"] is True and row["changes"][0]["rev"].startswith("2-")


async def test_since_skips_what_the_reader_has_seen(alice, db):
    await write(alice, db, "a", "b", "c")
    assert ids(await changes(alice, db, "?since=2")) == ["c"]
    assert ids(await changes(alice, db, "?since=1-g1AAAAopaque")) == ["b", "c"]


async def test_since_now_starts_at_the_current_seq(alice, db):
    await write(alice, db, "a", "b")
    feed = await changes(alice, db, "?since=now")
    assert feed["results"] == [] and feed["last_seq"] == 2


async def test_limit_stops_early_and_reports_pending_changes(alice, db):
    await write(alice, db, "a", "b", "c")
    feed = await changes(alice, db, "?limit=1")
    assert ids(feed) == ["a"]
    assert feed["last_seq"] == 1 and feed["pending"] == 2


async def test_pending_counts_documents_not_sequence_numbers(alice, db):
    """``b`` edited nine times is one change still to come, as in CouchDB."""
    await write(alice, db, "a")
    rev = (await alice.put(f"/{db}/b", {"n": 0}))["rev"]
    for n in range(1, 10):
        rev = (await alice.put(f"/{db}/b", {"_rev": rev, "n": n}))["rev"]
    await write(alice, db, "c")
    feed = await changes(alice, db, "?limit=1")
    assert ids(feed) == ["a"] and feed["pending"] == 2


async def test_pending_counts_exactly_only_the_last_few_documents(
    alice, db, monkeypatch: pytest.MonkeyPatch
):
    """Far from the end, ``pending`` is the number of changes made since (an upper bound, as
    CouchDB's is for a filtered feed), so no batch counts every document still to come."""
    monkeypatch.setattr(schema.changes, "PENDING_EXACT_UP_TO", 3)
    await write(alice, db, "a")
    rev = (await alice.put(f"/{db}/b", {"n": 0}))["rev"]
    for n in range(1, 5):  # b: seqs 2 to 6, one document
        rev = (await alice.put(f"/{db}/b", {"_rev": rev, "n": n}))["rev"]
    await write(alice, db, "c", "d", "e")  # seqs 7 to 9
    first = await changes(alice, db, "?limit=1")
    # 4 documents (b, c, d, e) remain: more than 3, so the 8 changes made since seq 1
    assert ids(first) == ["a"] and first["pending"] == 8
    near_end = await changes(alice, db, f"?limit=1&since={first['last_seq']}")
    assert ids(near_end) == ["b"] and near_end["pending"] == 3  # c, d, e: counted exactly


async def test_pending_in_an_owned_database_counts_only_the_callers_documents(admin, alice, bob):
    await admin.put("/own?access_mode=owned")
    await write(alice, "own", "a", "b")
    await write(bob, "own", "c", "d", "e")
    feed = await changes(alice, "own", "?limit=1")
    assert ids(feed) == ["a"] and feed["pending"] == 1  # b; bob's three are not hers


async def test_descending_lists_the_newest_first(alice, db):
    await write(alice, db, "a", "b", "c")
    assert ids(await changes(alice, db, "?descending=true")) == ["c", "b", "a"]
    assert ids(await changes(alice, db, "?descending=true&limit=1")) == ["c"]


async def test_include_docs_adds_the_winning_revision(alice, db):
    revs = await write(alice, db, "a", v=1)
    [row] = (await changes(alice, db, "?include_docs=true"))["results"]
    assert row["doc"] == {"_id": "a", "_rev": revs["a"], "v": 1}


async def test_include_docs_of_a_deletion_is_a_tombstone(alice, db):
    revs = await write(alice, db, "a", v=1)
    gone = (await alice.delete(f"/{db}/a?rev={revs['a']}"))["rev"]
    [row] = (await changes(alice, db, "?include_docs=true"))["results"]
    assert row["doc"] == {"_id": "a", "_rev": gone, "_deleted": True}


async def push_conflict(couch: Couch, db: str) -> None:
    for leaf in ("b", "c"):
        doc = {"_id": "x", "_rev": f"2-{leaf}", "_revisions": {"start": 2, "ids": [leaf, "a"]}}
        await couch.post(
            f"/{db}/_bulk_docs", {"docs": [doc], "new_edits": False}, expected_status=201
        )


async def test_style_all_docs_lists_every_leaf(alice, db):
    await push_conflict(alice, db)
    [main] = (await changes(alice, db))["results"]
    assert main["changes"] == [{"rev": "2-c"}]
    [every] = (await changes(alice, db, "?style=all_docs"))["results"]
    assert sorted(c["rev"] for c in every["changes"]) == ["2-b", "2-c"]


async def test_conflicts_with_include_docs_lists_the_losing_leaves(alice, db):
    await push_conflict(alice, db)
    [row] = (await changes(alice, db, "?include_docs=true&conflicts=true"))["results"]
    assert row["doc"]["_conflicts"] == ["2-b"]


async def test_seq_interval_leaves_out_most_seqs_but_not_last_seq(alice, db):
    await write(alice, db, "a", "b", "c", "d")
    feed = await changes(alice, db, "?seq_interval=2")
    assert ids(feed) == ["a", "b", "c", "d"]
    seqs = [row["seq"] for row in feed["results"]]
    assert seqs.count(None) == 2 and 4 in seqs
    assert feed["last_seq"] == 4


async def test_doc_ids_filter_from_the_query_string(alice, db):
    await write(alice, db, "a", "b", "c")
    feed = await changes(alice, db, '?filter=_doc_ids&doc_ids=["c","a"]')
    assert ids(feed) == ["a", "c"] and feed["last_seq"] == 3


async def test_doc_ids_filter_from_a_post_body(alice, db):
    await write(alice, db, "a", "b", "c")
    feed = await changes(alice, db, "?filter=_doc_ids", {"doc_ids": ["b"]})
    assert ids(feed) == ["b"]


async def test_doc_ids_filter_needs_a_list_of_ids(alice, db):
    await changes(alice, db, "?filter=_doc_ids", expected_status=400)
    await changes(alice, db, "?filter=_doc_ids", {"doc_ids": "a"}, expected_status=400)


async def test_last_seq_advances_even_when_the_filter_matches_nothing(alice, db):
    await write(alice, db, "a", "b", "c")
    feed = await changes(alice, db, '?filter=_doc_ids&doc_ids=["zzz"]')
    assert feed["results"] == [] and feed["last_seq"] == 3
    feed = await changes(alice, db, "?filter=_design")
    assert feed["results"] == [] and feed["last_seq"] == 3


async def test_design_filter_keeps_only_design_documents(alice, db):
    await write(alice, db, "a", "_design/app", "b")
    feed = await changes(alice, db, "?filter=_design")
    assert ids(feed) == ["_design/app"] and feed["last_seq"] == 3


async def test_selector_filter_keeps_matching_documents(alice, db):
    pytest.importorskip("replication.selector")
    await write(alice, db, "a", "c", kind="photo")
    await write(alice, db, "b", kind="note")
    feed = await changes(alice, db, "?filter=_selector", {"selector": {"kind": "note"}})
    assert ids(feed) == ["b"] and feed["last_seq"] == 3
    feed = await changes(alice, db, "?filter=_selector", {"selector": {"kind": "none"}})
    assert feed["results"] == [] and feed["last_seq"] == 3


async def test_selector_filter_needs_a_selector(alice, db):
    err = await changes(alice, db, "?filter=_selector", {}, expected_status=400)
    assert err["error"] == "bad_request"


async def test_a_custom_filter_function_is_refused(alice, db):
    err = await changes(alice, db, "?filter=app/by_kind", expected_status=400)
    assert err["error"] == "bad_request"


async def test_bad_parameters_are_bad_requests(alice, db):
    for query in ("feed=bogus", "since=abc", "style=nope", "limit=-1", "descending=yes"):
        await changes(alice, db, f"?{query}", expected_status=400)


async def test_owned_feeds_show_only_the_callers_documents_but_advance_past_others(
    admin, alice, bob
):
    await admin.put("/private", expected_status=201)
    await write(bob, "private", "b1")
    await write(alice, "private", "a1", "a2")
    feed = await changes(bob, "private")
    assert ids(feed) == ["b1"] and feed["last_seq"] == 3
    assert ids(await changes(admin, "private")) == ["b1", "a1", "a2"]


async def test_longpoll_returns_at_once_when_changes_are_waiting(alice, db):
    await write(alice, db, "a")
    feed = await changes(alice, db, "?feed=longpoll&timeout=10000")
    assert ids(feed) == ["a"]


async def test_longpoll_waits_for_the_next_change(client, alice, db):
    await write(alice, db, "a")
    path = f"/{db}/_changes?feed=longpoll&since=1&timeout=10000"
    task = asyncio.create_task(stream(client, alice, path))
    await write(alice, db, "b")
    _, raw = await asyncio.wait_for(task, 30)
    feed = orjson.loads(raw)
    assert ids(feed) == ["b"] and feed["last_seq"] == 2


async def test_longpoll_times_out_with_no_rows(alice, db):
    await write(alice, db, "a")
    query = "?feed=longpoll&since=now&timeout=50&heartbeat=10"
    feed = await asyncio.wait_for(changes(alice, db, query), 30)
    assert feed["results"] == [] and feed["last_seq"] == 1


async def test_continuous_streams_one_json_line_per_change(client, alice, db):
    await write(alice, db, "a")
    path = f"/{db}/_changes?feed=continuous&since=0&limit=2&timeout=10000"
    task = asyncio.create_task(stream(client, alice, path))
    revs = await write(alice, db, "b")
    _, raw = await asyncio.wait_for(task, 30)
    lines = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    assert [line.get("id") for line in lines[:2]] == ["a", "b"]
    assert lines[1]["changes"] == [{"rev": revs["b"]}]
    assert lines[-1] == {"last_seq": 2}


async def test_continuous_ends_with_last_seq_after_its_timeout(client, alice, db):
    await write(alice, db, "a", "b")
    path = f"/{db}/_changes?feed=continuous&since=1&timeout=50"
    _, raw = await asyncio.wait_for(stream(client, alice, path), 30)
    lines = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    assert [line.get("id") for line in lines[:-1]] == ["b"]
    assert lines[-1] == {"last_seq": 2}


async def test_eventsource_sends_server_sent_events(client, alice, db):
    path = f"/{db}/_changes?feed=eventsource&since=0&limit=1&timeout=10000"
    task = asyncio.create_task(stream(client, alice, path))
    await write(alice, db, "a")
    content_type, raw = await asyncio.wait_for(task, 30)
    assert content_type.startswith("text/event-stream")
    events = [block for block in raw.decode().split("\n\n") if block.startswith("data: ")]
    data, event_id = events[0].split("\n")
    assert orjson.loads(data[len("data: ") :])["id"] == "a"
    assert event_id == "id: 1"


async def test_an_eventsource_reconnect_resumes_from_last_event_id(client, alice, db):
    """A browser's EventSource reconnects with ``Last-Event-ID``: it overrides the URL's
    ``since`` (as in CouchDB), so nothing is replayed and nothing skipped."""
    await write(alice, db, "a", "b", "c")
    path = f"/{db}/_changes?feed=eventsource&since=0&timeout=0"
    headers = alice.headers({"Last-Event-ID": "2"})
    async with client.get(path, headers=headers) as resp:
        raw = (await resp.read()).decode()
    ids = [orjson.loads(b[len("data: ") :].split("\n")[0])["id"] for b in raw.split("\n\n")
           if b.startswith("data: ") and '"id"' in b.split("\n")[0]]  # fmt: skip
    assert ids == ["c"]


async def test_include_docs_with_attachments_inlines_their_data(alice, db):
    """As CouchDB: ``attachments=true`` (with ``include_docs``) sends the data as base64;
    without it the documents carry stubs."""
    data = base64.b64encode(b"hello").decode()
    await alice.put(f"/{db}/a", {"_attachments": {"n.txt": {"content_type": "text/plain",
                                                            "data": data}}})  # fmt: skip
    await write(alice, db, "b")
    full = await alice.get(f"/{db}/_changes?include_docs=true&attachments=true")
    docs = {r["id"]: r["doc"] for r in full["results"]}
    assert docs["a"]["_attachments"]["n.txt"]["data"] == data and "_attachments" not in docs["b"]
    stubs = await alice.get(f"/{db}/_changes?include_docs=true")
    assert stubs["results"][0]["doc"]["_attachments"]["n.txt"]["stub"] is True


async def test_local_documents_are_not_changes(alice, db):
    await alice.put(f"/{db}/_local/cp", {"seq": 1})
    feed = await changes(alice, db)
    assert feed["results"] == [] and feed["last_seq"] == 0
