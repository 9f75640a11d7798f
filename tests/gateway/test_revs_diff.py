"""``POST /{db}/_revs_diff``: which revisions a source has that this side lacks.

Fixture tree of document ``a``:

    1-a -- 2-b -- 3-c
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway import auth as auth_module
from gateway.handlers import bulk
from tests.helpers import Couch, basic


async def seed(couch: Couch, db: str) -> None:
    doc = {"_id": "a", "_rev": "3-c", "_revisions": {"start": 3, "ids": ["c", "b", "a"]}, "v": 3}
    await couch.post(f"/{db}/_bulk_docs", {"docs": [doc], "new_edits": False}, expected_status=201)


async def revs_diff(couch: Couch, db: str, body: dict, **kw) -> dict:
    return await couch.post(f"/{db}/_revs_diff", body, **kw)


async def test_known_revisions_are_left_out_entirely(alice, db):
    await seed(alice, db)
    assert await revs_diff(alice, db, {"a": ["1-a", "2-b", "3-c"]}) == {}


async def test_unknown_revisions_are_missing(alice, db):
    await seed(alice, db)
    diff = await revs_diff(alice, db, {"a": ["3-c", "4-d"]})
    assert diff["a"]["missing"] == ["4-d"]


async def test_possible_ancestors_are_known_leaves_below_the_missing_generation(alice, db):
    await seed(alice, db)
    diff = await revs_diff(alice, db, {"a": ["5-e"]})
    assert diff == {"a": {"missing": ["5-e"], "possible_ancestors": ["3-c"]}}


async def test_no_possible_ancestors_when_the_missing_revision_is_older(alice, db):
    await seed(alice, db)
    diff = await revs_diff(alice, db, {"a": ["2-x"]})
    assert diff == {"a": {"missing": ["2-x"]}}


async def test_an_unknown_document_is_missing_every_revision(alice, db):
    diff = await revs_diff(alice, db, {"ghost": ["1-a", "2-b"]})
    assert diff == {"ghost": {"missing": ["1-a", "2-b"]}}


async def test_several_documents_are_answered_at_once(alice, db):
    await seed(alice, db)
    diff = await revs_diff(alice, db, {"a": ["3-c"], "b": ["1-z"], "c": []})
    assert diff == {"b": {"missing": ["1-z"]}}


async def test_a_repeated_revision_is_reported_once(alice, db):
    diff = await revs_diff(alice, db, {"x": ["1-a", "1-a"]})
    assert diff["x"]["missing"] == ["1-a"]


async def test_an_empty_request_answers_an_empty_object(alice, db):
    assert await revs_diff(alice, db, {}) == {}


async def test_a_revision_pushed_after_the_diff_is_no_longer_missing(alice, db):
    assert "a" in await revs_diff(alice, db, {"a": ["3-c"]})
    await seed(alice, db)
    assert await revs_diff(alice, db, {"a": ["3-c"]}) == {}


async def test_other_owners_documents_look_absent(admin, alice, bob):
    await admin.put("/private", expected_status=201)
    await seed(alice, "private")
    assert await revs_diff(alice, "private", {"a": ["3-c"]}) == {}
    diff = await revs_diff(bob, "private", {"a": ["3-c"]})
    assert diff == {"a": {"missing": ["3-c"]}}


async def test_revisions_must_be_a_list_of_rev_strings(alice, db):
    err = await revs_diff(alice, db, {"a": "1-a"}, expected_status=400)
    assert err["error"] == "bad_request"
    await revs_diff(alice, db, {"a": ["nonsense"]}, expected_status=400)
    await revs_diff(alice, db, {"a": [1]}, expected_status=400)
    await alice.post(f"/{db}/_revs_diff", ["1-a"], expected_status=400)


# --- the documents are read with the caller (PostgreSQL: one round trip per _revs_diff) -------


async def seed_two(couch: Couch, db: str) -> None:
    await seed(couch, db)
    doc = {"_id": "b", "_rev": "2-y", "_revisions": {"start": 2, "ids": ["y", "x"]}, "v": 2}
    await couch.post(f"/{db}/_bulk_docs", {"docs": [doc], "new_edits": False}, expected_status=201)


TWO_DIFF = {
    "a": {"missing": ["4-d"], "possible_ancestors": ["3-c"]},
    "b": {"missing": ["3-z"], "possible_ancestors": ["2-y"]},
    "ghost": {"missing": ["1-x"]},
}


@pytest.mark.postgres_only
async def test_the_documents_are_read_in_the_callers_round_trip(alice, db, monkeypatch):
    await seed_two(alice, db)

    async def read_again(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the handler read the documents a second time")

    monkeypatch.setattr(bulk, "load_states", read_again)
    body = {"a": ["3-c", "4-d"], "b": ["2-y", "3-z"], "ghost": ["1-x"]}
    assert await revs_diff(alice, db, body) == TWO_DIFF  # each tree with its own document


async def test_a_body_that_is_not_read_ahead_is_answered_the_same(alice, client, db, monkeypatch):
    await seed_two(alice, db)
    reads: list[int] = []
    real = bulk.load_states

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(bulk, "load_states", counted)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: not read ahead
        yield orjson.dumps({"a": ["3-c", "4-d"], "b": ["2-y", "3-z"], "ghost": ["1-x"]})

    async with client.post(f"/{db}/_revs_diff", data=chunked(), headers=alice.headers()) as resp:
        assert resp.status == 200
        assert await resp.json() == TWO_DIFF
    assert reads == [1]


async def test_a_stranger_gets_401_whatever_the_revs_diff_body(client, alice, db):
    await seed(alice, db)
    big = b'{"a": ["' + b"x" * (66 * 1024 * 1024) + b'"]}'  # unpacks beyond the 64 MiB limit
    bodies = {
        "not json": (b"{not json", {}),
        "a diff": (b'{"a": ["3-c"]}', {}),
        "an array": (b'["a"]', {}),
        "gzip beyond the request limit": (gzip.compress(big, 9), {"Content-Encoding": "gzip"}),
    }
    for label, (body, extra) in bodies.items():
        for auth in (basic("alice", "wrong"), basic("nobody", "x")):
            headers = {"Content-Type": "application/json", "Authorization": auth, **extra}
            async with client.post(f"/{db}/_revs_diff", data=body, headers=headers) as resp:
                assert resp.status == 401, label
                assert (await resp.json())["error"] == "unauthorized", label
        async with client.post(f"/{db}/_revs_diff", data=body, headers=extra) as resp:
            assert resp.status == 401, label  # no credentials at all


async def test_a_body_that_is_not_what_its_encoding_says_is_400_not_500(client, alice, db):
    headers = alice.headers({"Content-Encoding": "gzip"})
    async with client.post(f"/{db}/_revs_diff", data=b'{"a": ["1-a"]}', headers=headers) as resp:
        assert resp.status == 400
        err = await resp.json()
        assert err["error"] == "bad_request" and "gzip" in err["reason"]


async def test_a_compressed_revs_diff_is_answered_after_authentication(client, alice, db):
    await seed_two(alice, db)
    body = gzip.compress(orjson.dumps({"a": ["3-c", "4-d"], "b": ["2-y", "3-z"], "ghost": ["1-x"]}))
    headers = alice.headers({"Content-Encoding": "gzip"})
    async with client.post(f"/{db}/_revs_diff", data=body, headers=headers) as resp:
        assert resp.status == 200
        assert await resp.json() == TWO_DIFF


@pytest.mark.postgres_only
async def test_a_stranger_cannot_make_the_caller_lookup_probe_many_documents(
    client, alice, db, monkeypatch
):
    from schema import users

    asked: list[int] = []
    real = users.find_caller

    async def spy(*args: Any, doc_ids: list[str] | None = None, **kwargs: Any) -> Any:
        asked.append(len(doc_ids or ()))
        return await real(*args, doc_ids=doc_ids, **kwargs)

    monkeypatch.setattr(auth_module, "find_caller", spy)
    many = orjson.dumps({f"d{i:05d}": ["1-a"] for i in range(auth_module.PREFETCH_MAX_IDS + 1)})
    headers = {"Content-Type": "application/json", "Authorization": basic("alice", "wrong")}
    async with client.post(f"/{db}/_revs_diff", data=many, headers=headers) as resp:
        assert resp.status == 401
    async with client.post(f"/{db}/_revs_diff", data=b'{"a": ["1-a"]}', headers=headers) as resp:
        assert resp.status == 401
    assert asked == [0, 1]  # too many ids: none looked up ahead; a replicator's batch: all


async def test_a_revs_diff_body_is_parsed_once(alice, db, monkeypatch):
    await seed_two(alice, db)
    body = {"a": ["3-c", "4-d"], "b": ["2-y", "3-z"], "ghost": ["1-x"]}
    raw = orjson.dumps(body)
    parses: list[bytes] = []
    real = orjson.loads

    def counted(data: Any) -> Any:
        if data == raw:
            parses.append(data)
        return real(data)

    monkeypatch.setattr(orjson, "loads", counted)
    assert await revs_diff(alice, db, body) == TWO_DIFF
    assert len(parses) == 1  # read ahead with the caller (PostgreSQL) or by the handler
