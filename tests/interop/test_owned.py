"""Two inspectors sync with one ``owned`` database, one with a Bearer token and one with
HTTP Basic credentials: each ends with exactly their own documents; a manager's replication
gets all of them."""

from __future__ import annotations

import asyncio

from tests.helpers import PASSWORD
from tests.interop.conftest import LiveGateway

OWNED = "owned"


def _ids(prefix: str, n: int) -> list[str]:
    return sorted(f"{prefix}-{i}" for i in range(n))


async def test_inspectors_replicate_only_their_own_documents_and_a_manager_gets_all(
    live_gateway: LiveGateway,
) -> None:
    await live_gateway.couch("admin").put(f"/{OWNED}?access_mode=owned", expected_status=201)
    tokens = await live_gateway.couch(None).post(
        "/api/v1/auth/login", {"username": "alice", "password": PASSWORD}
    )
    db_env = {"GATEWAY_DB_URL": live_gateway.db_url(OWNED)}
    alice, bob = await asyncio.gather(  # at the same time, into the same database
        live_gateway.run_node(
            "owned.js", "alice", "15", env={**db_env, "GATEWAY_TOKEN": tokens["access_token"]}
        ),
        live_gateway.run_node("owned.js", "bob", "10", user="bob", env=db_env),
    )
    for result in (alice, bob):
        for phase in ("push", "pull", "again"):
            assert result[phase]["ok"] is True and result[phase]["doc_write_failures"] == 0
            assert result[phase]["errors"] == []
    assert alice["push"]["docs_written"] == 15 and bob["push"]["docs_written"] == 10
    assert alice["replica_ids"] == _ids("alice", 15) == alice["mine_ids"]
    assert bob["replica_ids"] == _ids("bob", 10) == bob["mine_ids"]

    manager = await live_gateway.run_node("owned.js", "manager", "0", user="manager", env=db_env)
    assert manager["pull"]["docs_written"] == 25
    assert manager["replica_ids"] == sorted(_ids("alice", 15) + _ids("bob", 10))
