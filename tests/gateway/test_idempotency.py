"""``Idempotency-Key`` on the field API's mutating routes: stored in the database per user,
replayed byte for byte, 422 for a different request, one write under concurrent duplicates."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.cli import main
from gateway.idempotency import request_hash
from gateway.settings import Settings
from schema.tables import idempotency_keys, users
from tests.helpers import Couch

API = "/api/v1/inspections"
NEW = {"template_id": "tpl-1", "title": "Boiler room", "site": "Block C", "responses": {}}

Answer = tuple[int, dict[str, str], bytes]  # status, headers, body


async def send(
    couch: Couch,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request as ``couch``'s user with ``Idempotency-Key: key``; the raw answer."""
    extra = dict(headers or {})
    if key is not None:
        extra["Idempotency-Key"] = key
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    async with couch.client.request(method, path, data=data, headers=couch.headers(extra)) as r:
        return r.status, dict(r.headers), await r.read()


def replayed(answer: Answer) -> bool:
    return answer[1].get("Idempotent-Replayed") == "true"


async def count_inspections(couch: Couch) -> int:
    return len((await couch.get(API))["results"])


async def user_id(engine: AsyncEngine, name: str) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(users.c.id).where(users.c.name == name))).scalar_one()


async def key_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        counted = await conn.execute(select(func.count()).select_from(idempotency_keys))
        return counted.scalar_one()


async def test_a_replay_returns_the_stored_answer_byte_for_byte_and_writes_once(
    alice: Couch,
) -> None:
    key = str(uuid.uuid4())
    first = await send(alice, "POST", API, NEW, key=key)
    again = await send(alice, "POST", API, NEW, key=key)
    assert first[0] == again[0] == 201
    assert again[2] == first[2]
    assert again[1]["Content-Type"] == first[1]["Content-Type"]
    assert replayed(again) and not replayed(first)
    # The same JSON with other key order and whitespace is the same request.
    reordered = (
        b'{ "responses": {}, "site": "Block C", "title": "Boiler room",\n"template_id": "tpl-1"}'
    )
    third = await send(alice, "POST", API, raw=reordered, key=key)
    assert third[0] == 201 and third[2] == first[2] and replayed(third)
    assert await count_inspections(alice) == 1


async def test_a_replayed_update_or_delete_is_the_stored_answer_not_a_stale_version(
    alice: Couch,
) -> None:
    made = await alice.post(API, NEW, expected_status=201)
    path = f"{API}/{made['id']}"
    patch = {"version": 1, "title": "Boiler room 2"}
    first = await send(alice, "PATCH", path, patch, key="patch-1")
    again = await send(alice, "PATCH", path, patch, key="patch-1")
    assert first[0] == again[0] == 200 and again[2] == first[2] and replayed(again)
    assert orjson.loads(first[2])["version"] == 2
    gone = await send(alice, "DELETE", f"{path}?version=2", key="delete-1")
    gone_again = await send(alice, "DELETE", f"{path}?version=2", key="delete-1")
    assert gone[0] == gone_again[0] == 200 and gone_again[2] == gone[2]
    assert (await alice.get(f"/inspections/{made['id']}", expected_status=404))["error"]
    assert await count_inspections(alice) == 0


async def test_the_same_key_with_another_request_is_422(alice: Couch) -> None:
    key = "k-" + uuid.uuid4().hex
    assert (await send(alice, "POST", API, NEW, key=key))[0] == 201
    for method, path, body in [
        ("POST", API, {**NEW, "title": "Other"}),
        ("POST", f"{API}?x=1", NEW),
        ("POST", "/api/v1/sync/batch", {"operations": []}),
    ]:
        status, _, raw = await send(alice, method, path, body, key=key)
        assert status == 422, raw
        assert orjson.loads(raw)["error"] == "idempotency_key_reused"
        assert orjson.loads(raw)["reason"]
    assert await count_inspections(alice) == 1


async def test_keys_belong_to_one_user(alice: Couch, bob: Couch) -> None:
    mine = await send(alice, "POST", API, NEW, key="shared-key")
    theirs = await send(bob, "POST", API, NEW, key="shared-key")
    assert mine[0] == theirs[0] == 201 and not replayed(theirs)
    assert orjson.loads(mine[2])["id"] != orjson.loads(theirs[2])["id"]
    other_body = await send(bob, "POST", API, {**NEW, "title": "Bob's"}, key="shared-key")
    assert other_body[0] == 422  # bob's own key now, whatever alice did with hers
    assert await count_inspections(alice) == 1 and await count_inspections(bob) == 1


async def test_a_4xx_answer_is_stored_and_replayed(alice: Couch) -> None:
    bad = {**NEW, "id": "not-a-uuid"}
    first = await send(alice, "POST", API, bad, key="bad-id")
    again = await send(alice, "POST", API, bad, key="bad-id")
    assert first[0] == again[0] == 400 and again[2] == first[2] and replayed(again)
    # A stale version makes one ConflictRecord, however often the client retries.
    made = await alice.post(API, NEW, expected_status=201)
    await alice.request("PATCH", f"{API}/{made['id']}", {"version": 1, "title": "v2"})
    stale = {"version": 1, "title": "mine"}
    first = await send(alice, "PATCH", f"{API}/{made['id']}", stale, key="stale")
    again = await send(alice, "PATCH", f"{API}/{made['id']}", stale, key="stale")
    assert first[0] == again[0] == 409 and again[2] == first[2] and replayed(again)
    conflicts = await alice.get("/api/v1/conflicts", params={"doc_id": made["id"]})
    assert len(conflicts["results"]) == 1


async def test_a_5xx_drops_the_claim_so_a_retry_runs(
    alice: Couch, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.handlers import inspections

    real = inspections.apply_operations
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return await real(*args, **kwargs)

    monkeypatch.setattr(inspections, "apply_operations", flaky)
    failed = await send(alice, "POST", API, NEW, key="retry-me")
    assert failed[0] == 500
    retried = await send(alice, "POST", API, NEW, key="retry-me")
    assert retried[0] == 201 and not replayed(retried)
    assert (await send(alice, "POST", API, NEW, key="retry-me"))[2] == retried[2]
    assert await count_inspections(alice) == 1


async def test_a_key_still_in_progress_is_409_with_retry_after(
    alice: Couch, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    body = orjson.dumps(NEW)
    async with engine.begin() as conn:
        await conn.execute(
            insert(idempotency_keys).values(
                user_id=await user_id(engine, "alice"), key="running", status=None,
                request_hash=request_hash("POST", API, "application/json", body),
                created_at=now, expires_at=now + timedelta(minutes=5),
            )
        )  # fmt: skip
    status, headers, raw = await send(alice, "POST", API, raw=body, key="running")
    assert status == 409 and headers["Retry-After"] == "1"
    assert orjson.loads(raw)["error"] == "request_in_progress"
    assert (await send(alice, "POST", API, {**NEW, "title": "x"}, key="running"))[0] == 422
    assert await count_inspections(alice) == 0


async def test_expired_keys_are_reusable(alice: Couch, engine: AsyncEngine) -> None:
    first = await send(alice, "POST", API, NEW, key="old")
    async with engine.begin() as conn:
        await conn.execute(
            update(idempotency_keys).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    again = await send(alice, "POST", API, NEW, key="old")
    assert again[0] == 201 and not replayed(again) and again[2] != first[2]
    other = await send(alice, "POST", API, {**NEW, "title": "new"}, key="old")
    assert other[0] == 422  # the fresh row is live again
    # An abandoned claim (its instance died mid-request) frees itself after its lease.
    async with engine.begin() as conn:
        await conn.execute(
            update(idempotency_keys).values(
                status=None, body=None, expires_at=datetime.now(UTC) - timedelta(seconds=1)
            )
        )
    assert (await send(alice, "POST", API, {**NEW, "title": "new"}, key="old"))[0] == 201
    assert await count_inspections(alice) == 3


async def _cli(database_url: str, tmp_path: Path, *args: str) -> Result:
    env = {"GATEWAY_DATABASE_URL": database_url, "GATEWAY_DATA_DIR": str(tmp_path)}
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)


async def test_the_purge_command_deletes_expired_keys(
    alice: Couch, bob: Couch, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    await send(alice, "POST", API, NEW, key="a1")
    await send(alice, "POST", API, NEW, key="a2")
    await send(bob, "POST", API, NEW, key="b1")
    async with engine.begin() as conn:
        await conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.key.in_(["a1", "b1"]))
            .values(expires_at=datetime.now(UTC) - timedelta(hours=1))
        )
    dry = await _cli(database_url, tmp_path, "idempotency", "purge", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.strip() == "would purge 2 expired idempotency key(s)"
    assert await key_rows(engine) == 3
    done = await _cli(database_url, tmp_path, "idempotency", "purge")
    assert done.exit_code == 0, done.output
    assert done.output.strip() == "purged 2 expired idempotency key(s)"
    assert await key_rows(engine) == 1
    again = await _cli(database_url, tmp_path, "idempotency", "purge")
    assert again.output.strip() == "purged 0 expired idempotency key(s)"
    replay = await send(alice, "POST", API, NEW, key="a2")
    assert replay[0] == 201 and replayed(replay)


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9"])
async def test_malformed_keys_are_400(alice: Couch, key: str) -> None:
    headers = {"Idempotency-Key": key.encode("utf-8").decode("latin-1")}
    status, _, raw = await send(alice, "POST", API, NEW, headers=headers)
    assert status == 400, raw
    assert orjson.loads(raw)["error"] == "bad_request"
    assert await count_inspections(alice) == 0


async def test_the_longest_key_and_keys_on_other_routes(
    alice: Couch, client: Any, engine: AsyncEngine
) -> None:
    longest = "~" * 255
    assert (await send(alice, "POST", API, NEW, key=longest))[0] == 201
    assert replayed(await send(alice, "POST", API, NEW, key=longest))
    # Reads and the auth routes ignore the header: login must hand out fresh tokens.
    assert (await send(alice, "GET", API, key="bad\tkey"))[0] == 200
    login = {"username": "alice", "password": alice.password}
    tokens = [
        orjson.loads((await send(alice, "POST", "/api/v1/auth/login", login, key="login"))[2])
        for _ in range(2)
    ]
    assert tokens[0]["refresh_token"] != tokens[1]["refresh_token"]
    assert await key_rows(engine) == 1


async def test_a_batch_is_replayed_as_its_207(alice: Couch) -> None:
    batch = {"operations": [{"op": "create", "data": NEW}, {"op": "create", "data": NEW}]}
    first = await send(alice, "POST", "/api/v1/sync/batch", batch, key="batch-1")
    again = await send(alice, "POST", "/api/v1/sync/batch", batch, key="batch-1")
    assert first[0] == again[0] == 207 and again[2] == first[2] and replayed(again)
    assert [r["outcome"] for r in orjson.loads(first[2])["results"]] == ["created", "created"]
    assert await count_inspections(alice) == 2


async def test_concurrent_duplicates_on_two_instances_write_once(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    instances = [
        Couch(
            await aiohttp_client(create_app(dataclasses.replace(settings), migrate=False)), "alice"
        )
        for _ in range(2)
    ]
    for round_ in range(5):
        key = f"race-{round_}"
        answers = await asyncio.gather(
            *(send(couch, "POST", API, NEW, key=key) for couch in instances * 2)
        )
        created = [a for a in answers if a[0] == 201 and not replayed(a)]
        assert len(created) == 1, [(a[0], a[2][:200]) for a in answers]
        for status, headers, raw in answers:
            if status == 201:
                assert raw == created[0][2]
            else:
                assert status == 409 and headers["Retry-After"] == "1", raw
                assert orjson.loads(raw)["error"] == "request_in_progress"
    assert await count_inspections(instances[0]) == 5


async def test_claim_work_in_the_background_ends_with_its_app(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release still retrying (the database was away) is cancelled when the app closes,
    before its engine is disposed, instead of outliving it and opening connections."""
    from gateway import idempotency
    from gateway.keys import ENGINE

    # the release waits this long before retrying: it is surely still waiting at the close
    monkeypatch.setattr(idempotency, "RELEASE_RETRY_SECONDS", 3600)

    client = await aiohttp_client(create_app(settings, migrate=False))
    app_engine = client.server.app[ENGINE]
    task = idempotency._release_in_background(app_engine, 1, "k", datetime.now(UTC))
    assert not task.done()
    await client.close()
    assert task.cancelled()
    assert app_engine not in idempotency._BACKGROUND


async def test_a_replayed_create_repeats_its_location_and_etag(manager: Couch) -> None:
    """A client whose first answer was lost retries with the same key: the replay must
    tell it where the new template is and which version it has (for ``If-Match``)."""
    template = {"name": "Boiler", "fields": [{"id": "ok", "type": "boolean", "label": "OK?"}]}
    first = await send(manager, "POST", "/api/v1/templates", template, key="tpl-create")
    again = await send(manager, "POST", "/api/v1/templates", template, key="tpl-create")
    assert first[0] == again[0] == 201 and replayed(again)
    sent, replay = ({k.lower(): v for k, v in a[1].items()} for a in (first, again))
    assert sent["location"].startswith("/api/v1/templates/") and sent["etag"].startswith('"1-')
    assert replay["location"] == sent["location"] and replay["etag"] == sent["etag"]
    assert len((await manager.get("/api/v1/templates"))["results"]) == 1
