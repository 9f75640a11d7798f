"""ConflictRecords: opened with the write that causes them, kept in step with the tree,
listed, resolved (keep_mine, keep_theirs, merge with and without a body), and the
per-database conflict policies."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from tests.helpers import Couch

DOC = "/field/job"


async def _branches(client: Couch, db: str = "field", doc: str = "job") -> tuple[str, str, str]:
    """Create ``doc`` at 1-x, then push two 2-… branches (new_edits=false): a conflict.

    Returns (base rev, server branch rev, pushed branch rev)."""
    created = await client.put(f"/{db}/{doc}", {"title": "base", "n": 1, "site": "A"})
    base = created["rev"]
    theirs = (await client.put(f"/{db}/{doc}", {"_rev": base, "title": "server", "n": 1,
                                                "site": "A"}))["rev"]  # fmt: skip
    mine = "2-" + "b" * 32
    await client.post(
        f"/{db}/_bulk_docs",
        {
            "new_edits": False,
            "docs": [
                {
                    "_id": doc,
                    "_rev": mine,
                    "_revisions": {"start": 2, "ids": ["b" * 32, base.split("-")[1]]},
                    "title": "base",
                    "n": 2,
                    "site": "B",
                }
            ],
        },
        expected_status=201,
        headers={"X-Device-Id": "tablet-7"},
    )
    return base, theirs, mine


async def _open(client: Couch, **params: str) -> list[dict[str, Any]]:
    listed = await client.get("/api/v1/conflicts", params={"status": "open", **params})
    return listed["results"]


async def test_a_pushed_branch_opens_one_record_with_both_sides_and_the_ancestor(
    alice: Couch, manager: Couch, db: str
) -> None:
    base, theirs, mine = await _branches(alice)
    [record] = await _open(manager)
    assert record["db"] == "field" and record["doc_id"] == "job" and record["status"] == "open"
    assert record["pushed_by"] == "alice" and record["device"] == "tablet-7"
    assert record["ancestor"] == {"rev": base, "body": {"title": "base", "n": 1, "site": "A"}}
    sides = {record["mine"]["rev"]: record["mine"]["body"], record["theirs"]["rev"]:
             record["theirs"]["body"]}  # fmt: skip
    assert sides == {
        mine: {"title": "base", "n": 2, "site": "B"},
        theirs: {"title": "server", "n": 1, "site": "A"},
    }
    info = await manager.get("/field")
    assert info["open_conflicts"] == 1
    assert (await manager.get(f"/api/v1/conflicts/{record['id']}")) == record


async def test_replaying_the_same_push_opens_no_second_record(alice: Couch, manager: Couch,
                                                               db: str) -> None:  # fmt: skip
    _, _, mine = await _branches(alice)
    doc = await alice.get(f"{DOC}?rev={mine}&revs=true")
    for _ in range(3):
        await alice.post("/field/_bulk_docs", {"new_edits": False, "docs": [doc]},
                         expected_status=201)  # fmt: skip
    assert len(await _open(manager)) == 1


async def test_extending_the_losing_branch_moves_the_record(alice: Couch, manager: Couch,
                                                            db: str) -> None:  # fmt: skip
    _, theirs, mine = await _branches(alice)
    [before] = await _open(manager)
    loser = before["mine"]["rev"] if before["mine"]["rev"] != theirs else theirs
    extended = await alice.put(DOC, {"_rev": loser, "title": "again", "n": 3, "site": "B"})
    [after] = await _open(manager)
    assert after["id"] == before["id"]
    assert extended["rev"] in (after["mine"]["rev"], after["theirs"]["rev"])
    assert mine != extended["rev"]


async def test_deleting_the_losing_revision_closes_the_record_as_replicated(
    alice: Couch, manager: Couch, db: str
) -> None:
    await _branches(alice)
    doc = await alice.get(f"{DOC}?conflicts=true")
    [loser] = doc["_conflicts"]
    await alice.delete(f"{DOC}?rev={loser}")
    assert await _open(manager) == []
    [closed] = (await manager.get("/api/v1/conflicts", params={"status": "resolved"}))["results"]
    assert closed["strategy"] == "replicated" and closed["resolved_by"] == "alice"
    assert closed["resolved_rev"] == doc["_rev"]
    assert (await manager.get("/field"))["open_conflicts"] == 0


@pytest.mark.parametrize("strategy", ["keep_mine", "keep_theirs"])
async def test_keep_one_side_writes_one_revision_and_tombstones_the_other(
    alice: Couch, manager: Couch, db: str, strategy: str
) -> None:
    _, _theirs, _mine = await _branches(alice)
    [record] = await _open(manager)
    kept = record["mine"] if strategy == "keep_mine" else record["theirs"]
    resolved = await manager.post(f"/api/v1/conflicts/{record['id']}/resolve",
                                  {"strategy": strategy})  # fmt: skip
    assert resolved["status"] == "resolved" and resolved["strategy"] == strategy
    assert resolved["resolved_by"] == "manager" and resolved["resolved_rev"] == resolved["rev"]
    doc = await alice.get(f"{DOC}?conflicts=true&deleted_conflicts=true")
    assert doc["_rev"] == resolved["rev"] and "_conflicts" not in doc
    assert {k: v for k, v in doc.items() if not k.startswith("_")} == kept["body"]
    assert int(doc["_rev"].split("-")[0]) == int(kept["rev"].split("-")[0]) + 1
    assert len(doc["_deleted_conflicts"]) == 1  # the other leaf, tombstoned
    again = await manager.post(f"/api/v1/conflicts/{record['id']}/resolve",
                               {"strategy": strategy}, expected_status=409)  # fmt: skip
    assert again["error"] == "conflict"
    assert (await manager.get("/field"))["open_conflicts"] == 0


async def test_merge_without_a_body_merges_fields_against_the_ancestor(
    alice: Couch, manager: Couch, db: str
) -> None:
    await _branches(alice)  # server changed title; pushed branch changed n and site
    [record] = await _open(manager)
    resolved = await manager.post(f"/api/v1/conflicts/{record['id']}/resolve",
                                  {"strategy": "merge"})  # fmt: skip
    doc = await alice.get(DOC)
    assert doc["_rev"] == resolved["rev"]
    assert {k: v for k, v in doc.items() if not k.startswith("_")} == {
        "title": "server", "n": 2, "site": "B"}  # fmt: skip


async def test_merge_refuses_with_the_fields_both_sides_changed(
    alice: Couch, manager: Couch, db: str
) -> None:
    base = (await alice.put(DOC, {"title": "base", "n": 1}))["rev"]
    await alice.put(DOC, {"_rev": base, "title": "server", "n": 1})
    await alice.post("/field/_bulk_docs", {"new_edits": False, "docs": [
        {"_id": "job", "_rev": "2-" + "c" * 32, "_revisions": {"start": 2, "ids": [
            "c" * 32, base.split("-")[1]]}, "title": "device", "n": 1}]},
        expected_status=201)  # fmt: skip
    [record] = await _open(manager)
    refused = await manager.post(f"/api/v1/conflicts/{record['id']}/resolve",
                                 {"strategy": "merge"}, expected_status=409)  # fmt: skip
    assert refused["error"] == "conflict" and refused["fields"] == ["/title"]
    assert len(await _open(manager)) == 1  # nothing written, still open
    explicit = await manager.post(
        f"/api/v1/conflicts/{record['id']}/resolve",
        {"strategy": "merge", "body": {"title": "both", "n": 9}},
    )
    doc = await alice.get(f"{DOC}?conflicts=true")
    assert doc["_rev"] == explicit["rev"] and doc["title"] == "both" and "_conflicts" not in doc


async def test_only_staff_and_the_owner_see_and_resolve(
    admin: Couch, alice: Couch, bob: Couch, manager: Couch
) -> None:
    await admin.put("/owned?access_mode=owned")
    await _branches(alice, db="owned")
    [record] = await _open(manager)
    assert [r["id"] for r in await _open(alice)] == [record["id"]]
    assert await _open(bob) == []
    missing = await bob.get(f"/api/v1/conflicts/{record['id']}", expected_status=404)
    nothing = await bob.get("/api/v1/conflicts/999999", expected_status=404)
    assert missing == nothing
    await bob.post(f"/api/v1/conflicts/{record['id']}/resolve", {"strategy": "keep_mine"},
                   expected_status=404)  # fmt: skip
    assert (await bob.get("/owned"))["open_conflicts"] == 0
    assert (await alice.get("/owned"))["open_conflicts"] == 1
    await alice.post(f"/api/v1/conflicts/{record['id']}/resolve", {"strategy": "keep_mine"})
    assert await _open(manager) == []


@pytest.mark.parametrize(
    "body,status",
    [
        ({}, 400),
        ({"strategy": "keep_both"}, 400),
        ({"strategy": "keep_mine", "body": {"a": 1}}, 400),
        ({"strategy": "merge", "body": [1]}, 400),
    ],
)
async def test_bad_resolve_requests_are_400(manager: Couch, alice: Couch, db: str,
                                            body: dict[str, Any], status: int) -> None:  # fmt: skip
    await _branches(alice)
    [record] = await _open(manager)
    err = await manager.post(f"/api/v1/conflicts/{record['id']}/resolve", body,
                             expected_status=status)  # fmt: skip
    assert set(err) == {"error", "reason"}
    assert len(await _open(manager)) == 1


async def test_list_filters_and_paginates(alice: Couch, manager: Couch, db: str) -> None:
    for i in range(5):
        await _branches(alice, doc=f"job{i}")
    page1 = await manager.get("/api/v1/conflicts", params={"limit": "2", "db": "field"})
    page2 = await manager.get("/api/v1/conflicts", params={"limit": "2", "cursor": page1["next"]})
    page3 = await manager.get("/api/v1/conflicts", params={"limit": "2", "cursor": page2["next"]})
    ids = [r["doc_id"] for p in (page1, page2, page3) for r in p["results"]]
    assert ids == [f"job{i}" for i in range(5)] and page3["next"] is None
    only = await manager.get("/api/v1/conflicts", params={"doc_id": "job3"})
    assert [r["doc_id"] for r in only["results"]] == ["job3"]
    assert (await manager.get("/api/v1/conflicts", params={"db": "other"}))["results"] == []
    await manager.get("/api/v1/conflicts", params={"status": "weird"}, expected_status=400)
    await manager.get("/api/v1/conflicts", params={"cursor": "!!"}, expected_status=400)


@pytest.mark.parametrize(
    "policy,expected",
    [
        ("server_wins", {"title": "server", "n": 1, "site": "A"}),
        ("client_wins", {"title": "base", "n": 2, "site": "B"}),
        ("merge", {"title": "server", "n": 2, "site": "B"}),
    ],
)
async def test_policies_resolve_at_write_time(
    admin: Couch, alice: Couch, manager: Couch, db: str, policy: str, expected: dict[str, Any]
) -> None:
    await admin.put("/field/_conflict_policy", policy, expected_status=200)
    assert await alice.get("/field/_conflict_policy") == policy
    await _branches(alice)
    doc = await alice.get(f"{DOC}?conflicts=true")
    assert "_conflicts" not in doc
    assert {k: v for k, v in doc.items() if not k.startswith("_")} == expected
    [record] = (await manager.get("/api/v1/conflicts"))["results"]
    assert record["status"] == "auto_resolved"
    assert record["strategy"] == {"server_wins": "keep_theirs", "client_wins": "keep_mine",
                                  "merge": "merge"}[policy]  # fmt: skip
    assert record["resolved_rev"] == doc["_rev"]


async def test_merge_policy_leaves_an_unclean_merge_open(
    admin: Couch, alice: Couch, manager: Couch, db: str
) -> None:
    await admin.put("/field/_conflict_policy", "merge", expected_status=200)
    base = (await alice.put(DOC, {"title": "base"}))["rev"]
    await alice.put(DOC, {"_rev": base, "title": "server"})
    await alice.post("/field/_bulk_docs", {"new_edits": False, "docs": [
        {"_id": "job", "_rev": "2-" + "c" * 32, "_revisions": {"start": 2, "ids": [
            "c" * 32, base.split("-")[1]]}, "title": "device"}]},
        expected_status=201)  # fmt: skip
    assert len(await _open(manager)) == 1
    assert len((await alice.get(f"{DOC}?conflicts=true"))["_conflicts"]) == 1


async def test_only_admins_set_the_policy(manager: Couch, admin: Couch, db: str) -> None:
    await manager.put("/field/_conflict_policy", "merge", expected_status=403)
    await admin.put("/field/_conflict_policy", "sometimes", expected_status=400)
    await admin.put("/field/_conflict_policy", 7, expected_status=400)
    assert (await admin.get("/field"))["conflict_policy"] == "manual"


async def _cli(database_url: str, *args: str) -> Result:
    """Run ``gateway ARGS`` on the test database (in a thread: the CLI runs its own loop)."""
    return await asyncio.to_thread(
        CliRunner().invoke, main, list(args), env={"GATEWAY_DATABASE_URL": database_url}
    )


async def test_cli_lists_shows_and_resolves(
    alice: Couch, manager: Couch, db: str, database_url: str
) -> None:
    await _branches(alice)
    [record] = await _open(manager)
    listed = await _cli(database_url, "conflicts", "list", "--db", "field", "--status", "open")
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split()[:4] == ["ID", "DB", "DOC", "STATUS"]
    assert row.split()[:4] == [str(record["id"]), "field", "job", "open"]
    shown = await _cli(database_url, "conflicts", "show", str(record["id"]))
    assert orjson.loads(shown.output) == record
    resolved = await _cli(
        database_url, "conflicts", "resolve", str(record["id"]), "--strategy", "keep_theirs"
    )
    assert resolved.exit_code == 0, resolved.output
    doc = await alice.get(f"{DOC}?conflicts=true")
    assert f"resolved (keep_theirs): the document is now at {doc['_rev']}" in resolved.output
    assert doc["title"] == record["theirs"]["body"]["title"] and "_conflicts" not in doc
    again = await _cli(
        database_url, "conflicts", "resolve", str(record["id"]), "--strategy", "keep_mine"
    )
    assert again.exit_code != 0 and "already resolved" in again.output
    empty = await _cli(database_url, "conflicts", "list", "--status", "open")
    assert empty.output.strip() == "no conflicts"


async def test_cli_merge_reports_the_clashing_fields_and_takes_a_body(
    alice: Couch, manager: Couch, db: str, database_url: str
) -> None:
    base = (await alice.put(DOC, {"title": "base"}))["rev"]
    await alice.put(DOC, {"_rev": base, "title": "server"})
    await alice.post("/field/_bulk_docs", {"new_edits": False, "docs": [
        {"_id": "job", "_rev": "2-" + "c" * 32, "_revisions": {"start": 2, "ids": [
            "c" * 32, base.split("-")[1]]}, "title": "device"}]},
        expected_status=201)  # fmt: skip
    [record] = await _open(manager)
    rid = str(record["id"])
    refused = await _cli(database_url, "conflicts", "resolve", rid, "--strategy", "merge")
    assert refused.exit_code != 0 and "/title" in refused.output
    bad = await _cli(database_url, "conflicts", "resolve", rid, "--strategy", "merge",
                     "--body", "[1]")  # fmt: skip
    assert bad.exit_code != 0
    done = await _cli(database_url, "conflicts", "resolve", rid, "--strategy", "merge",
                      "--body", '{"title": "agreed"}')  # fmt: skip
    assert done.exit_code == 0, done.output
    assert (await alice.get(DOC))["title"] == "agreed"


async def test_cli_sets_the_policy(admin: Couch, db: str, database_url: str) -> None:
    result = await _cli(database_url, "dbs", "set-policy", "field", "client_wins")
    assert result.exit_code == 0, result.output
    assert (await admin.get("/field"))["conflict_policy"] == "client_wins"
    bad = await _cli(database_url, "dbs", "set-policy", "field", "never")
    assert bad.exit_code != 0
    missing = await _cli(database_url, "dbs", "set-policy", "nowhere", "merge")
    assert missing.exit_code != 0


async def test_three_roots_then_a_growing_branch_keep_one_record_per_loser(
    alice: Couch, manager: Couch, db: str
) -> None:
    """Found by the scale-out test: two records once claimed the same revision (a 500)."""
    for letter in "cba":
        doc = {"_id": "job", "_rev": "1-" + letter * 32, "n": letter}
        await alice.post("/field/_bulk_docs", {"new_edits": False, "docs": [doc]},
                         expected_status=201)  # fmt: skip
    grown = {"_id": "job", "_rev": "2-" + "z" * 32, "n": "z",
             "_revisions": {"start": 2, "ids": ["z" * 32, "b" * 32]}}  # fmt: skip
    await alice.post("/field/_bulk_docs", {"new_edits": False, "docs": [grown]},
                     expected_status=201)  # fmt: skip
    doc = await alice.get(f"{DOC}?conflicts=true")
    assert doc["_rev"] == grown["_rev"]
    records = await _open(manager)
    losers = sorted(doc["_conflicts"])
    assert (
        sorted(
            r["mine"]["rev"] if r["theirs"]["rev"] == doc["_rev"] else r["theirs"]["rev"]
            for r in records
        )
        == losers
    )
    assert all(doc["_rev"] in (r["mine"]["rev"], r["theirs"]["rev"]) for r in records)
