"""Tombstones: deletes replicate as tombstones; ``gateway tombstones purge`` removes old
ones but never one a registered checkpoint of an active user has not passed (unless
``--force``, after which such replicas are told to reset)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cli import main
from schema.tables import users
from schema.tombstones import parse_age
from tests.helpers import Couch


async def _cli(database_url: str, *args: str) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke, main, list(args), env={"GATEWAY_DATABASE_URL": database_url}
    )


async def _purge(database_url: str, *extra: str) -> Result:
    result = await _cli(database_url, "tombstones", "purge", "--older-than", "0s", *extra)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
async def deleted(alice: Couch, db: str) -> dict[str, Any]:
    """d0..d5 created (seqs 1-6), then d0..d2 deleted (seqs 7-9)."""
    revs = {}
    for i in range(6):
        revs[f"d{i}"] = (await alice.put(f"/field/d{i}", {"i": i}))["rev"]
    for i in range(3):
        await alice.delete(f"/field/d{i}?rev={revs[f'd{i}']}")
    return revs


async def _feed_ids(client: Couch, since: int = 0) -> dict[str, bool]:
    feed = await client.get(f"/field/_changes?since={since}")
    return {row["id"]: row.get("deleted", False) for row in feed["results"]}


async def test_deletes_are_tombstones_in_the_feed_and_hidden_from_listings(
    alice: Couch, deleted: dict[str, Any]
) -> None:
    feed = await _feed_ids(alice)
    assert feed == {"d0": True, "d1": True, "d2": True, "d3": False, "d4": False, "d5": False}
    listed = await alice.get("/field/_all_docs")
    assert [row["id"] for row in listed["rows"]] == ["d3", "d4", "d5"]
    doc = await alice.get("/field/d0", expected_status=404)
    assert doc["reason"] == "deleted"
    info = await alice.get("/field")
    assert (info["doc_count"], info["doc_del_count"]) == (3, 3)


async def test_purge_without_checkpoints_removes_every_old_tombstone(
    alice: Couch, deleted: dict[str, Any], database_url: str
) -> None:
    result = await _purge(database_url, "--db", "field")
    assert result.output.splitlines()[1].split() == ["field", "3", "3", "0", "-", "9"]
    assert await _feed_ids(alice) == {"d3": False, "d4": False, "d5": False}
    gone = await alice.get("/field/d0", expected_status=404)
    assert gone["reason"] == "missing"
    info = await alice.get("/field")
    assert (info["doc_count"], info["doc_del_count"], info["purge_seq"]) == (3, 0, 9)
    # the revisions went with the rows: the ids can be created afresh
    await alice.put("/field/d0", {"again": True})


async def test_dry_run_and_a_young_cutoff_change_nothing(
    alice: Couch, deleted: dict[str, Any], database_url: str
) -> None:
    dry = await _purge(database_url, "--dry-run")
    assert "WOULD PURGE" in dry.output and dry.output.splitlines()[1].split()[2] == "3"
    young = await _cli(database_url, "tombstones", "purge", "--older-than", "90d")
    assert young.exit_code == 0 and young.output.splitlines()[1].split()[1:3] == ["0", "0"]
    assert len(await _feed_ids(alice)) == 6
    assert (await alice.get("/field"))["purge_seq"] == 0


POUCHDB_CHECKPOINT = {"session_id": "s", "last_seq": 8}
COUCHDB_CHECKPOINT = {  # CouchDB's own replicator records source_last_seq / recorded_seq
    "session_id": "s",
    "source_last_seq": "8-g1AAAA",
    "replication_id_version": 4,
    "history": [{"session_id": "s", "recorded_seq": "8-g1AAAA", "start_last_seq": 0}],
}


@pytest.mark.parametrize(
    "checkpoint", [POUCHDB_CHECKPOINT, COUCHDB_CHECKPOINT], ids=["pouchdb", "couchdb"]
)
async def test_a_checkpoint_that_has_not_passed_a_tombstone_keeps_it(
    alice: Couch, bob: Couch, deleted: dict[str, Any], database_url: str, checkpoint: Any
) -> None:
    await bob.put("/field/_local/pull", checkpoint)  # saw d0, d1
    result = await _purge(database_url)
    assert result.output.splitlines()[1].split() == ["field", "3", "2", "1", "8", "8"]
    assert "kept 1 tombstone(s)" in result.output
    assert await _feed_ids(alice) == {"d2": True, "d3": False, "d4": False, "d5": False}
    # bob resumes from his checkpoint: nothing is refused, he gets d2's tombstone
    assert await _feed_ids(bob, since=8) == {"d2": True}


async def test_a_disabled_users_checkpoint_protects_nothing(
    alice: Couch, bob: Couch, deleted: dict[str, Any], database_url: str, engine: AsyncEngine
) -> None:
    await bob.put("/field/_local/pull", {"session_id": "s", "last_seq": 1})
    async with engine.begin() as conn:
        await conn.execute(update(users).where(users.c.name == "bob").values(disabled=True))
    result = await _purge(database_url)
    assert result.output.splitlines()[1].split()[:4] == ["field", "3", "3", "0"]


async def test_force_purges_and_a_replica_behind_it_is_told_to_reset(
    alice: Couch, bob: Couch, deleted: dict[str, Any], database_url: str
) -> None:
    await bob.put("/field/_local/pull", {"session_id": "s", "last_seq": 6})
    await _purge(database_url, "--force")
    assert (await alice.get("/field"))["purge_seq"] == 9
    for feed in ("normal", "longpoll", "continuous", "eventsource"):
        refused = await bob.get(f"/field/_changes?since=6&feed={feed}", expected_status=410)
        assert refused["error"] == "reset_required" and "seq 9" in refused["reason"]
    assert await _feed_ids(bob, since=0) == {"d3": False, "d4": False, "d5": False}
    assert await _feed_ids(bob, since=9) == {}


@pytest.mark.parametrize("raw", ["", "90", "d", "-1d", "1y", "1.5d", "²d"])
def test_bad_ages_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_age(raw)


async def test_the_cli_refuses_a_bad_age(database_url: str) -> None:
    result = await _cli(database_url, "tombstones", "purge", "--older-than", "soon")
    assert result.exit_code != 0 and "--older-than" in result.output
