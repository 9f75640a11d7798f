"""The checkpoint registry: ``GET|DELETE /api/v1/checkpoints`` and ``gateway checkpoints``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from tests.helpers import Couch

CP = "/field/_local/rep-1"


@pytest.fixture
async def checkpoints(admin: Couch, alice: Couch, bob: Couch, db: str) -> None:
    """Eight writes to ``field``; alice's checkpoints at 5 and 8, bob's at 2."""
    for i in range(8):
        await alice.put(f"/field/doc{i}", {"i": i})
    history = [{"session_id": "s2", "last_seq": 5}, {"session_id": "s1", "last_seq": 3}]
    await alice.put(CP, {"session_id": "s2", "last_seq": 5, "history": history})
    await alice.put("/field/_local/rep-2", {"session_id": "t", "last_seq": "8"})
    await bob.put(CP, {"session_id": "b", "last_seq": 2})


def _rows(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(c["user"], c["id"], c["seq"], c["db_seq"], c["lag"]) for c in body["results"]]


async def test_staff_list_every_checkpoint_with_its_lag(
    checkpoints: None, manager: Couch, admin: Couch
) -> None:
    listed = await manager.get("/api/v1/checkpoints")
    assert _rows(listed) == [
        ("alice", "_local/rep-1", 5, 8, 3),
        ("alice", "_local/rep-2", 8, 8, 0),
        ("bob", "_local/rep-1", 2, 8, 6),
    ]
    assert all(c["db"] == "field" and c["updated_at"] for c in listed["results"])
    only_bob = await admin.get("/api/v1/checkpoints", params={"user": "bob", "db": "field"})
    assert _rows(only_bob) == [("bob", "_local/rep-1", 2, 8, 6)]
    none = await admin.get("/api/v1/checkpoints", params={"db": "elsewhere"})
    assert none["results"] == []


async def test_inspectors_cannot_read_or_reset_the_registry(
    checkpoints: None, alice: Couch, manager: Couch
) -> None:
    denied = await alice.get("/api/v1/checkpoints", expected_status=403)
    assert denied["error"] == "forbidden"
    await alice.delete("/api/v1/checkpoints", params={"user": "bob"}, expected_status=403)
    await manager.delete("/api/v1/checkpoints", params={"user": "bob"}, expected_status=403)
    assert (await bob_checkpoint(manager)) == 2


async def bob_checkpoint(staff: Couch) -> int:
    listed = await staff.get("/api/v1/checkpoints", params={"user": "bob"})
    return listed["results"][0]["seq"]


async def test_reset_deletes_only_that_users_checkpoints(
    checkpoints: None, admin: Couch, alice: Couch, bob: Couch
) -> None:
    bob_before = await bob.get(CP)
    reset = await admin.delete("/api/v1/checkpoints", params={"user": "alice"})
    assert reset["action"] == "deleted"
    assert sorted(c["id"] for c in reset["changed"]) == ["_local/rep-1", "_local/rep-2"]
    await alice.get(CP, expected_status=404)
    await alice.get("/field/_local/rep-2", expected_status=404)
    assert await bob.get(CP) == bob_before


async def test_reset_by_id_accepts_the_id_with_or_without_its_prefix(
    checkpoints: None, admin: Couch, alice: Couch
) -> None:
    await admin.delete("/api/v1/checkpoints", params={"user": "alice", "id": "rep-2"})
    await alice.get("/field/_local/rep-2", expected_status=404)
    await alice.get(CP)
    await admin.delete("/api/v1/checkpoints", params={"user": "alice", "id": "_local/rep-1"})
    await alice.get(CP, expected_status=404)


async def test_rewind_lowers_every_recorded_seq_and_bumps_the_rev(
    checkpoints: None, admin: Couch, alice: Couch
) -> None:
    before = await alice.get(CP)
    reset = await admin.delete("/api/v1/checkpoints", params={"user": "alice", "to_seq": "4"})
    assert reset["action"] == "rewound"
    assert [(c["id"], c["seq"]) for c in reset["changed"]] == [
        ("_local/rep-1", 4),
        ("_local/rep-2", 4),
    ]
    after = await alice.get(CP)
    assert after["last_seq"] == 4 and after["session_id"] == "s2"
    assert after["history"] == [
        {"session_id": "s2", "last_seq": 4},
        {"session_id": "s1", "last_seq": 3},
    ]
    assert after["_rev"] == "0-2" and before["_rev"] == "0-1"
    assert (await alice.get("/field/_local/rep-2"))["last_seq"] == "4"  # the type is kept
    # a checkpoint already before N is left alone
    again = await admin.delete("/api/v1/checkpoints", params={"user": "alice", "to_seq": "4"})
    assert again["changed"] == []


async def test_dry_run_changes_nothing(checkpoints: None, admin: Couch, alice: Couch) -> None:
    planned = await admin.delete("/api/v1/checkpoints", params={"user": "alice", "dry_run": "true"})
    assert planned["dry_run"] is True and len(planned["changed"]) == 2
    await alice.get(CP)


@pytest.mark.parametrize(
    "params,status",
    [
        ({}, 400),
        ({"user": ""}, 400),
        ({"user": "nobody"}, 404),
        ({"user": "alice", "to_seq": "-1"}, 400),
        ({"user": "alice", "to_seq": "x"}, 400),
        ({"user": "alice", "dry_run": "maybe"}, 400),
    ],
)
async def test_bad_reset_requests_are_clear_errors(
    checkpoints: None, admin: Couch, alice: Couch, params: dict[str, str], status: int
) -> None:
    body = await admin.delete("/api/v1/checkpoints", params=params, expected_status=status)
    assert set(body) == {"error", "reason"}
    await alice.get(CP)


async def _cli(database_url: str, *args: str, stdin: str | None = None) -> Result:
    """Run ``gateway ARGS`` on the test database (in a thread: the CLI runs its own loop)."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, main, list(args), input=stdin, env={"GATEWAY_DATABASE_URL": database_url}
    )


async def test_cli_list_prints_a_readable_table(checkpoints: None, database_url: str) -> None:
    result = await _cli(database_url, "checkpoints", "list", "--user", "alice")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["USER", "DB", "ID", "SEQ", "DB", "SEQ", "LAG", "UPDATED"]
    assert lines[1].split()[:6] == ["alice", "field", "_local/rep-1", "5", "8", "3"]
    assert lines[2].split()[:6] == ["alice", "field", "_local/rep-2", "8", "8", "0"]
    assert len(lines) == 3
    empty = await _cli(database_url, "checkpoints", "list", "--db", "nowhere")
    assert empty.output.strip() == "no checkpoints"


async def test_cli_reset_asks_first_and_changes_nothing_when_refused(
    checkpoints: None, database_url: str, alice: Couch
) -> None:
    refused = await _cli(database_url, "checkpoints", "reset", "--user", "alice", stdin="n\n")
    assert refused.exit_code != 0 and "_local/rep-1" in refused.output
    await alice.get(CP)
    agreed = await _cli(
        database_url, "checkpoints", "reset", "--user", "alice", "--id", "rep-1", stdin="y\n"
    )
    assert agreed.exit_code == 0, agreed.output
    assert "deleted: 1 checkpoint(s) of alice" in agreed.output
    await alice.get(CP, expected_status=404)
    await alice.get("/field/_local/rep-2")


async def test_cli_reset_with_yes_and_to_seq(
    checkpoints: None, database_url: str, alice: Couch, bob: Couch
) -> None:
    result = await _cli(
        database_url, "checkpoints", "reset", "--user", "alice", "--db", "field",
        "--to-seq", "6", "--yes",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rewound to seq 6: 1 checkpoint(s) of alice" in result.output
    assert (await alice.get("/field/_local/rep-2"))["last_seq"] == "6"
    assert (await alice.get(CP))["last_seq"] == 5
    assert (await bob.get(CP))["last_seq"] == 2
    missing = await _cli(database_url, "checkpoints", "reset", "--user", "zed", "--yes")
    assert missing.exit_code != 0 and "zed" in missing.output


def test_a_rewind_lowers_couchdb_replicator_checkpoints_too() -> None:
    """CouchDB's replicator records ``source_last_seq`` and per-session ``recorded_seq``;
    a rewind lowers those as it lowers PouchDB's ``last_seq``, and keeps the sessions."""
    from schema.checkpoints import rewind_body

    body = {
        "session_id": "s2",
        "source_last_seq": "9-g1AAAA",
        "history": [
            {"session_id": "s2", "recorded_seq": "9-g1AAAA", "start_time": "t"},
            {"session_id": "s1", "recorded_seq": 3},
        ],
    }
    rewound = rewind_body(body, 4)
    assert rewound["source_last_seq"] == "4" and rewound["session_id"] == "s2"
    assert rewound["history"] == [
        {"session_id": "s2", "recorded_seq": "4", "start_time": "t"},
        {"session_id": "s1", "recorded_seq": 3},
    ]
