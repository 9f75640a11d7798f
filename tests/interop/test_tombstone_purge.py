"""A real PouchDB replica offline across a tombstone purge: the purge keeps what its
checkpoint has not passed, so its next pull (and a pull from scratch after its checkpoint
is reset) still removes every document deleted meanwhile; after a forced purge its pull is
refused with a clear ``reset_required``."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner

from gateway.cli import main
from tests.interop.conftest import LiveGateway


async def _purge(database_url: str, *extra: str) -> str:
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["tombstones", "purge", "--older-than", "0s", *extra],
        env={"GATEWAY_DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    return result.output


async def _seed(gateway: LiveGateway, n: int) -> dict[str, str]:
    alice = gateway.couch("alice")
    docs = [{"_id": f"d{i}", "i": i} for i in range(n)]
    rows = await alice.post(f"/{gateway.db}/_bulk_docs", {"docs": docs}, expected_status=201)
    return {row["id"]: row["rev"] for row in rows}


async def _delete(gateway: LiveGateway, revs: dict[str, str], ids: list[str]) -> None:
    bob = gateway.couch("bob")  # somebody else deletes them while the replica is offline
    for doc_id in ids:
        await bob.delete(f"/{gateway.db}/{doc_id}?rev={revs[doc_id]}")


async def _signal(gateway: LiveGateway, n: int) -> None:
    await gateway.couch("admin").put(f"/{gateway.db}/signal-{n}", {})


async def test_an_offline_replica_still_learns_every_deletion_across_purges(
    live_gateway: LiveGateway, database_url: str
) -> None:
    revs = await _seed(live_gateway, 10)
    node = await live_gateway.start_node("offline.js", "2", user="alice")
    start = await node.read_json_line()
    assert start["ids"] == sorted(revs)

    await _delete(live_gateway, revs, ["d0", "d1", "d2", "d3", "d4"])
    report = await _purge(database_url, "--db", live_gateway.db)
    assert report.splitlines()[1].split()[1:4] == ["5", "0", "5"]  # all five kept for it
    await _signal(live_gateway, 1)
    back = await node.read_json_line()
    assert back["pull"]["ok"] is True
    assert back["ids"] == ["d5", "d6", "d7", "d8", "d9"]

    # offline again: more deletions; a purge takes only the five tombstones it has seen;
    # then its checkpoint is reset on the server, so it pulls again from scratch
    await _delete(live_gateway, revs, ["d5", "d6"])
    report = await _purge(database_url, "--db", live_gateway.db)
    assert report.splitlines()[1].split()[1:4] == ["7", "5", "2"]
    admin = live_gateway.couch("admin")
    reset = await admin.delete("/api/v1/checkpoints", params={"user": "alice"})
    assert reset["changed"]
    await _signal(live_gateway, 2)
    last = await node.result()
    assert last["pull"]["ok"] is True and last["pull"]["since"][0] == "0"
    assert last["ids"] == ["d7", "d8", "d9"]


async def test_after_a_forced_purge_a_replica_behind_it_is_told_to_reset(
    live_gateway: LiveGateway, database_url: str
) -> None:
    revs = await _seed(live_gateway, 6)
    node = await live_gateway.start_node("offline.js", "1", user="alice")
    await node.read_json_line()
    await _delete(live_gateway, revs, ["d0", "d1"])
    report = await _purge(database_url, "--db", live_gateway.db, "--force")
    assert report.splitlines()[1].split()[1:4] == ["2", "2", "0"]
    await _signal(live_gateway, 1)
    refused = await node.result()
    assert refused["pull"]["ok"] is False
    assert refused["pull"]["status"] == 410 and refused["pull"]["error"] == "reset_required"
    assert "Reset it" in refused["pull"]["reason"]
    assert refused["ids"] == [f"d{i}" for i in range(6)]  # nothing silently kept as live
