"""Two PouchDB replicas edit the same document offline and both push; the conflict is
resolved (by a manager through the API, or by the database's policy); both replicas pull
and end with identical documents and no ``_conflicts``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.interop.conftest import LiveGateway

A_EDIT = {"title": "from-a", "n": 1, "site": "A"}  # replica A changed the title
B_EDIT = {"title": "base", "n": 2, "site": "B"}  # replica B changed n and site
MERGED = {"title": "from-a", "n": 2, "site": "B"}


def _content(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


async def _converged(result: dict[str, Any], expected: dict[str, Any]) -> None:
    for side in ("pull_a", "pull_b"):
        assert result[side]["ok"] is True and result[side]["errors"] == []
    assert result["a"] == result["b"] == result["gateway"]
    assert "_conflicts" not in result["a"]
    assert _content(result["a"]) == expected


@pytest.mark.parametrize(
    "strategy,expected",
    [("keep_mine", B_EDIT), ("keep_theirs", A_EDIT), ("merge", MERGED)],
)
async def test_a_manager_resolves_and_both_replicas_converge(
    live_gateway: LiveGateway, strategy: str, expected: dict[str, Any]
) -> None:
    node = await live_gateway.start_node("converge.js")
    pushed = await node.read_json_line()
    assert pushed["phase"] == "pushed"
    manager = live_gateway.couch("manager")
    listed = await manager.get(
        "/api/v1/conflicts", params={"db": live_gateway.db, "status": "open"}
    )
    [record] = listed["results"]
    assert record["doc_id"] == "job" and record["pushed_by"] == "alice"
    assert record["mine"]["body"] == B_EDIT and record["theirs"]["body"] == A_EDIT
    assert record["ancestor"]["body"] == {"title": "base", "n": 1, "site": "A"}
    resolved = await manager.post(
        f"/api/v1/conflicts/{record['id']}/resolve", {"strategy": strategy}
    )
    result = await node.result()
    await _converged(result, expected)
    assert result["a"]["_rev"] == resolved["rev"]


@pytest.mark.parametrize(
    "policy,expected",
    [("server_wins", A_EDIT), ("client_wins", B_EDIT), ("merge", MERGED)],
)
async def test_each_policy_resolves_at_push_and_both_replicas_converge(
    live_gateway: LiveGateway, policy: str, expected: dict[str, Any]
) -> None:
    admin = live_gateway.couch("admin")
    await admin.put(f"/{live_gateway.db}/_conflict_policy", policy, expected_status=200)
    result = await live_gateway.run_node("converge.js")
    await _converged(result, expected)
    [record] = (await admin.get("/api/v1/conflicts", params={"db": live_gateway.db}))["results"]
    assert record["status"] == "auto_resolved" and record["resolved_rev"] == result["a"]["_rev"]
