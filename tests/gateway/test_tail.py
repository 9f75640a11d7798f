"""``gateway changes --db D [--follow]``: a database's feed in the terminal."""

from __future__ import annotations

import asyncio

import orjson
from click.testing import CliRunner

from gateway.cli import main
from gateway.settings import Settings
from gateway.tail import tail_changes
from tests.helpers import Couch


async def _cli(database_url: str, *args: str) -> tuple[int, list[str]]:
    result = await asyncio.to_thread(
        CliRunner().invoke, main, list(args), env={"GATEWAY_DATABASE_URL": database_url}
    )
    return result.exit_code, result.output.splitlines()


async def test_prints_every_change_with_who_and_tombstones(
    alice: Couch, bob: Couch, db: str, database_url: str
) -> None:
    rev = (await alice.put("/field/a", {"v": 1}))["rev"]
    await bob.put("/field/b", {"v": 1})
    await bob.delete(f"/field/a?rev={rev}")
    code, lines = await _cli(database_url, "changes", "--db", "field")
    assert code == 0, lines
    rows = [orjson.loads(line) for line in lines]
    assert [(r["seq"], r["id"], r["user"], r.get("deleted", False)) for r in rows] == [
        (2, "b", "bob", False),
        (3, "a", "bob", True),
    ]
    code, lines = await _cli(database_url, "changes", "--db", "field", "--since", "2")
    assert [orjson.loads(line)["id"] for line in lines] == ["a"]
    code, lines = await _cli(database_url, "changes", "--db", "field", "--limit", "1")
    assert [orjson.loads(line)["id"] for line in lines] == ["b"]


async def test_unknown_database_and_bad_since_are_errors(database_url: str) -> None:
    code, lines = await _cli(database_url, "changes", "--db", "nowhere")
    assert code != 0 and "does not exist" in " ".join(lines)
    code, _ = await _cli(database_url, "changes", "--db", "field", "--since", "x")
    assert code != 0


async def test_follow_prints_changes_as_they_are_written(
    alice: Couch, db: str, settings: Settings
) -> None:
    await alice.put("/field/before", {"v": 1})
    got: list[dict[str, object]] = []
    follower = asyncio.ensure_future(
        tail_changes(
            settings, "field", since=1, follow=True, limit=2,
            emit=lambda line: got.append(orjson.loads(line)),
        )
    )  # fmt: skip
    await asyncio.sleep(0)
    await alice.put("/field/one", {"v": 1})
    await alice.put("/field/two", {"v": 1})
    last = await asyncio.wait_for(follower, 30)
    assert [r["id"] for r in got] == ["one", "two"] and last == 3
