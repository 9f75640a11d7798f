"""An operator resets a user's checkpoint; that user's real PouchDB pull starts over (or
resumes from N) and ends with the same data, while other users' checkpoints are untouched."""

from __future__ import annotations

from typing import Any

import pytest

from tests.interop.conftest import LiveGateway

N_DOCS = 12


async def _seed(gateway: LiveGateway) -> list[dict[str, Any]]:
    alice = gateway.couch("alice")
    docs = [{"_id": f"d{i:02}", "n": i} for i in range(N_DOCS)]
    for doc in docs:  # one write per doc: seqs 1..N_DOCS, in id order
        await alice.put(f"/{gateway.db}/{doc['_id']}", {"n": doc["n"]})
    return docs


@pytest.mark.parametrize("to_seq", [None, 4], ids=["delete", "rewind-to-4"])
async def test_a_reset_checkpoint_makes_pouchdb_start_over_or_resume_from_n(
    live_gateway: LiveGateway, to_seq: int | None
) -> None:
    await _seed(live_gateway)
    args = ("delete",) if to_seq is None else ("rewind", str(to_seq))
    node = await live_gateway.start_node("reset.js", *args, user="alice")
    pulled = await node.read_json_line()
    assert pulled["phase"] == "pulled" and int(pulled["last_seq"]) == N_DOCS
    checkpoint_path = f"/{live_gateway.db}/{pulled['id']}"

    # bob's replicator happens to use the same replication id: his checkpoint must survive
    bob = live_gateway.couch("bob")
    bob_doc = {"session_id": "bob-session", "last_seq": 3, "history": []}
    await bob.put(checkpoint_path, bob_doc)
    bob_before = await bob.get(checkpoint_path)

    admin = live_gateway.couch("admin")
    params = {"user": "alice", "db": live_gateway.db, "id": pulled["id"]}
    if to_seq is not None:
        params["to_seq"] = str(to_seq)
    reset = await admin.delete("/api/v1/checkpoints", params=params)
    assert [(c["user"], c["id"]) for c in reset["changed"]] == [("alice", pulled["id"])]

    result = await node.result()
    assert result["pull1"]["docs_read"] == N_DOCS
    # the second pull asks for the feed from the start (or from N), not from the old
    # checkpoint; it finds the replica already holds those revisions, so it reads nothing
    assert result["pull2_since"][0] == ("0" if to_seq is None else str(to_seq))
    assert result["pull2"]["ok"] is True and result["pull2"]["docs_read"] == 0
    assert int(result["last_seq_after"]) == N_DOCS
    assert sorted((d["id"], d["n"]) for d in result["docs"]) == [
        (f"d{i:02}", i) for i in range(N_DOCS)
    ]
    assert await bob.get(checkpoint_path) == bob_before
