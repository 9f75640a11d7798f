"""Operations (SPEC §8): ``GET /metrics`` series, request ids, structured JSON logs, and no
credentials in any log line."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.logs import JsonFormatter, TextFormatter, request_id
from gateway.settings import Settings, load_settings
from schema.conflicts import ConflictTally
from tests.gateway.test_conflicts import _branches
from tests.gateway.test_inspections import API as INSPECTIONS
from tests.gateway.test_inspections import _create
from tests.helpers import PASSWORD, Couch, basic

SERIES = (
    "gateway_http_requests",
    "gateway_http_request_duration_seconds",
    "gateway_docs_written",
    "gateway_docs_read",
    "gateway_conflicts_opened",
    "gateway_conflicts_resolved",
    "gateway_feed_listeners",
    "gateway_checkpoint_lag",
    "gateway_db_pool_size",
    "gateway_db_pool_checked_out",
)


async def scrape(client: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``GET /metrics`` (anonymous), parsed: sample name -> [(labels, value)]."""
    async with client.get("/metrics") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, [])
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(scraped: dict[str, Any], name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when it is absent)."""
    for got, val in scraped.get(name, []):
        if got == labels:
            return val
    return 0.0


async def test_metrics_is_public_prometheus_text_with_every_series(client: Any) -> None:
    scraped = await scrape(client)
    for name in SERIES:
        assert name in scraped, name
    for feed in ("longpoll", "continuous", "eventsource"):
        assert value(scraped, "gateway_feed_listeners", feed=feed) == 0
    assert value(scraped, "gateway_db_pool_size") >= 0


async def test_metrics_can_be_restricted_to_admins(
    aiohttp_client: Any, settings: Settings, engine: Any
) -> None:
    from gateway.app import create_app

    client = await aiohttp_client(create_app(replace(settings, metrics_public=False)))
    assert (await Couch(client, None).get("/metrics", expected_status=401))["error"]
    assert (await Couch(client, "manager").get("/metrics", expected_status=403))["error"]
    text = await Couch(client, "admin").get("/metrics")
    assert b"gateway_http_requests_total" in text


def test_the_settings_read_the_log_format_and_metrics_visibility() -> None:
    got = load_settings(
        {"GATEWAY_LOG_FORMAT": "Text", "GATEWAY_METRICS_PUBLIC": "false"}, dotenv_path=""
    )
    assert got.log_format == "text" and got.metrics_public is False
    defaults = load_settings({}, dotenv_path="")
    assert defaults.log_format == "json" and defaults.metrics_public is True
    with pytest.raises(SystemExit):
        load_settings({"GATEWAY_LOG_FORMAT": "xml"}, dotenv_path="")


async def test_requests_are_counted_by_route_pattern_not_raw_path(
    client: Any, alice: Couch, db: str
) -> None:
    for i in range(50):
        await alice.get(f"/field/doc-{i}", expected_status=404)
    scraped = await scrape(client)
    routes = {labels["route"] for labels, _ in scraped["gateway_http_requests_total"]}
    assert not any("doc-" in r or "field" in r for r in routes), routes
    assert "/{db}/{docid}" in routes and "/{db}" in routes
    doc_route = {"method": "GET", "route": "/{db}/{docid}"}
    assert value(scraped, "gateway_http_requests_total", status="404", **doc_route) == 50
    assert value(scraped, "gateway_http_request_duration_seconds_count", **doc_route) == 50
    await alice.get("/_no_such_route", expected_status=404)
    scraped = await scrape(client)
    unmatched = {"method": "GET", "route": "(unmatched)", "status": "404"}
    assert value(scraped, "gateway_http_requests_total", **unmatched) == 1


async def test_successful_writes_count_as_docs_written_per_database(
    client: Any, admin: Couch, alice: Couch, db: str
) -> None:
    await admin.put("/other?access_mode=shared", expected_status=201)
    await alice.put("/field/a", {"n": 1})
    rows = await alice.post(
        "/field/_bulk_docs",
        {"docs": [{"_id": "b"}, {"_id": "c"}, {"_id": "a"}]},  # "a" without _rev: a conflict
        expected_status=201,
    )
    assert [r.get("error") for r in rows] == [None, None, "conflict"]
    await alice.put("/other/x", {"n": 1})
    scraped = await scrape(client)
    assert value(scraped, "gateway_docs_written_total", db="field") == 3
    assert value(scraped, "gateway_docs_written_total", db="other") == 1


async def test_rest_writes_count_as_docs_written_and_in_the_dashboard(
    client: Any, alice: Couch, manager: Couch
) -> None:
    """The field REST API writes the same documents: a batch, a template and a conflict
    resolution count in ``/metrics`` and in the dashboard's per-minute ``in`` like any
    CouchDB write; refused operations do not."""
    new = {"template_id": "t", "title": "x", "site": "s", "responses": {}}
    ops = [{"op": "create", "data": new} for _ in range(3)] + [{"op": "explode"}]
    await alice.post("/api/v1/sync/batch", {"operations": ops}, expected_status=207)
    made = await alice.post("/api/v1/inspections", new, expected_status=201)
    path = f"/api/v1/inspections/{made['id']}"
    await alice.request("PATCH", path, {"version": 1, "title": "y"})
    stale = await alice.request("PATCH", path, {"version": 1, "title": "z"}, expected_status=409)
    await manager.post(
        f"/api/v1/conflicts/{stale['conflict_id']}/resolve", {"strategy": "keep_mine"}
    )
    await manager.post("/api/v1/templates", {"name": "T", "fields": []}, expected_status=201)
    scraped = await scrape(client)
    assert value(scraped, "gateway_docs_written_total", db="inspections") == 6
    assert value(scraped, "gateway_docs_written_total", db="templates") == 1
    minutes = (await manager.get("/api/v1/activity/stats?minutes=2"))["minutes"]
    assert sum(m["in"] for m in minutes) == 7


async def test_documents_served_count_as_docs_read(client: Any, alice: Couch, db: str) -> None:
    await alice.post("/field/_bulk_docs", {"docs": [{"_id": "a"}, {"_id": "b"}]},
                     expected_status=201)  # fmt: skip
    got = await alice.post(
        "/field/_bulk_get", {"docs": [{"id": "a"}, {"id": "b"}, {"id": "missing"}]}
    )
    assert len(got["results"]) == 3
    assert value(await scrape(client), "gateway_docs_read_total", db="field") == 2
    await alice.get("/field/a")
    assert value(await scrape(client), "gateway_docs_read_total", db="field") == 3
    await alice.get("/field/_changes")  # no bodies: nothing read
    assert value(await scrape(client), "gateway_docs_read_total", db="field") == 3
    changes = await alice.get("/field/_changes?include_docs=true")
    assert len(changes["results"]) == 2
    assert value(await scrape(client), "gateway_docs_read_total", db="field") == 5


async def test_replicated_conflicts_open_and_resolutions_close_records(
    client: Any, alice: Couch, manager: Couch, db: str
) -> None:
    await _branches(alice)
    scraped = await scrape(client)
    assert value(scraped, "gateway_conflicts_opened_total", db="field") == 1
    assert not scraped.get("gateway_conflicts_resolved_total")
    [record] = (await manager.get("/api/v1/conflicts", params={"status": "open"}))["results"]
    await manager.post(f"/api/v1/conflicts/{record['id']}/resolve", {"strategy": "keep_mine"})
    scraped = await scrape(client)
    assert value(scraped, "gateway_conflicts_opened_total", db="field") == 1
    assert value(scraped, "gateway_conflicts_resolved_total", db="field", strategy="keep_mine") == 1
    await _branches(alice, doc="job2")
    doc = await alice.get("/field/job2?conflicts=true")
    loser = doc["_conflicts"][0]
    await alice.delete(f"/field/job2?rev={loser}")  # deleting a branch closes its record
    scraped = await scrape(client)
    assert value(scraped, "gateway_conflicts_opened_total", db="field") == 2
    assert (
        value(scraped, "gateway_conflicts_resolved_total", db="field", strategy="replicated") == 1
    )


async def test_a_policy_resolution_counts_as_opened_and_resolved(
    client: Any, admin: Couch, alice: Couch, db: str
) -> None:
    await admin.put("/field/_conflict_policy", "server_wins", expected_status=200)
    await _branches(alice)
    scraped = await scrape(client)
    assert value(scraped, "gateway_conflicts_opened_total", db="field") == 1
    assert (
        value(scraped, "gateway_conflicts_resolved_total", db="field", strategy="keep_theirs") == 1
    )


async def test_a_stale_rest_update_counts_as_an_opened_conflict(
    client: Any, alice: Couch, manager: Couch
) -> None:
    """The REST API's refused stale versions open ConflictRecords too; /metrics counts them,
    and their resolution, like replicated conflicts."""
    made = await _create(alice)
    path = f"{INSPECTIONS}/{made['id']}"
    await alice.request("PATCH", path, {"version": 1, "site": "Block D"})
    assert not (await scrape(client)).get("gateway_conflicts_opened_total")
    refused = await alice.request("PATCH", path, {"version": 1, "title": "x"}, expected_status=409)
    batch = await alice.post(
        "/api/v1/sync/batch",
        {"operations": [{"op": "update", "id": made["id"], "version": 1, "data": {"title": "y"}}]},
        expected_status=207,
    )
    assert batch["results"][0]["status"] == 409
    scraped = await scrape(client)
    assert value(scraped, "gateway_conflicts_opened_total", db="inspections") == 2
    await manager.post(f"/api/v1/conflicts/{refused['conflict_id']}/resolve", {"strategy": "merge"})
    scraped = await scrape(client)
    resolved = "gateway_conflicts_resolved_total"
    assert value(scraped, resolved, db="inspections", strategy="merge") == 1


def test_the_tally_counts_closes_by_strategy() -> None:
    tally = ConflictTally()
    tally.opened += 2
    tally.close("replicated", 1)
    tally.close("keep_theirs", 1)
    tally.close("merge", 0)  # nothing closed: no series
    assert (tally.opened, tally.closed) == (2, {"replicated": 1, "keep_theirs": 1})


async def test_a_record_that_moves_is_neither_opened_nor_closed_again(
    client: Any, alice: Couch, manager: Couch, db: str
) -> None:
    await _branches(alice)
    [record] = (await manager.get("/api/v1/conflicts", params={"status": "open"}))["results"]
    doc = await alice.get("/field/job?conflicts=true")
    loser = doc["_conflicts"][0]
    await alice.put("/field/job", {"_rev": loser, "title": "again"})  # the branch grows
    moved = await manager.get(f"/api/v1/conflicts/{record['id']}")
    assert moved["status"] == "open" and loser not in (moved["mine"]["rev"], moved["theirs"]["rev"])
    await alice.put("/field/other", {"v": 1})  # creating a document touches no record
    scraped = await scrape(client)
    assert value(scraped, "gateway_conflicts_opened_total", db="field") == 1
    assert not scraped.get("gateway_conflicts_resolved_total")


async def test_resurrecting_a_deleted_branch_opens_a_conflict(
    client: Any, alice: Couch, db: str
) -> None:
    _, _, mine = await _branches(alice)
    tombstone = (await alice.delete(f"/field/job?rev={mine}"))["rev"]  # closes the record
    await alice.put("/field/job", {"_rev": tombstone, "back": True})  # a live branch again
    assert len((await alice.get("/field/job?conflicts=true"))["_conflicts"]) == 1
    scraped = await scrape(client)
    assert value(scraped, "gateway_conflicts_opened_total", db="field") == 2
    assert (
        value(scraped, "gateway_conflicts_resolved_total", db="field", strategy="replicated") == 1
    )


async def test_a_waiting_longpoll_shows_in_the_feed_listeners_gauge(
    client: Any, alice: Couch, db: str
) -> None:
    feed = asyncio.create_task(alice.get("/field/_changes?feed=longpoll&since=now&timeout=60000"))
    try:
        for _ in range(500):
            scraped = await scrape(client)
            if value(scraped, "gateway_feed_listeners", feed="longpoll") == 1:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the longpoll never showed in gateway_feed_listeners")
        assert not feed.done()
        await alice.put("/field/wake", {"n": 1})
        got = await asyncio.wait_for(feed, 30)
        assert [r["id"] for r in got["results"]] == ["wake"]
    finally:
        feed.cancel()
    assert value(await scrape(client), "gateway_feed_listeners", feed="longpoll") == 0


async def test_checkpoint_lag_is_read_from_the_registry_when_scraped(
    client: Any, alice: Couch, bob: Couch, db: str
) -> None:
    await alice.post("/field/_bulk_docs", {"docs": [{"_id": f"d{i}"} for i in range(5)]},
                     expected_status=201)  # fmt: skip
    assert "field" not in {
        labels.get("db") for labels, _ in (await scrape(client))["gateway_checkpoint_lag"]
    }
    await alice.put("/field/_local/rep-1", {"session_id": "s", "last_seq": 2})
    await bob.put("/field/_local/rep-2", {"session_id": "t", "last_seq": "4"})
    assert value(await scrape(client), "gateway_checkpoint_lag", db="field") == 3  # the max
    await alice.put("/field/late", {"n": 1})
    assert value(await scrape(client), "gateway_checkpoint_lag", db="field") == 4


# --- request ids -----------------------------------------------------------------------------


async def test_a_sane_request_id_is_echoed_and_anything_else_replaced(
    client: Any, alice: Couch, db: str
) -> None:
    async with client.get("/healthz", headers={"X-Request-Id": "abc-123_X.y"}) as resp:
        assert resp.headers["X-Request-Id"] == "abc-123_X.y"
    async with client.get("/healthz") as resp:
        generated = resp.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    seen = {generated}
    for bad in ("x" * 129, "has space", "caf\u00e9", ""):
        async with client.get("/healthz", headers={"X-Request-Id": bad}) as resp:
            assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"]), bad
            seen.add(resp.headers["X-Request-Id"])
    assert len(seen) == 5  # every request gets an id of its own
    async with client.get("/field/nothing", headers=alice.headers()) as resp:  # errors too
        assert resp.status == 404 and re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])


async def test_streamed_feeds_carry_the_request_id_and_cors_exposes_it(
    client: Any, alice: Couch, db: str
) -> None:
    headers = alice.headers({"X-Request-Id": "feed-1", "Origin": "http://app.example"})
    async with client.get("/field/_changes?feed=continuous&timeout=10", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == "feed-1"
        assert "x-request-id" in resp.headers["Access-Control-Expose-Headers"]
        await resp.read()


# --- structured logs -------------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged during the test, as the JSON formatter writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line]


async def test_access_lines_are_json_with_the_request_id(
    client: Any, alice: Couch, db: str, log_lines: io.StringIO
) -> None:
    await alice.put("/field/doc-1", {"n": 1}, headers={"X-Request-Id": "req-42"})
    lines = parsed(log_lines)
    [line] = [x for x in lines if x.get("request_id") == "req-42" and x["logger"] ==
              "gateway.access"]  # fmt: skip
    assert line["level"] == "INFO" and line["msg"] == "PUT /{db}/{docid} 201"
    assert line["method"] == "PUT" and line["route"] == "/{db}/{docid}"
    assert line["path"] == "/field/doc-1" and line["status"] == 201
    assert line["user"] == "alice" and line["db"] == "field"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["ts"].endswith("+00:00")
    assert request_id.get() is None  # reset after the request


async def test_an_unhandled_error_is_logged_with_the_request_id(
    aiohttp_client: Any, settings: Settings, engine: Any, log_lines: io.StringIO
) -> None:
    from gateway.app import create_app

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("kaboom")

    app = create_app(settings, migrate=False)
    app.router.add_get("/boom", boom)
    client = await aiohttp_client(app)
    async with client.get(
        "/boom", headers={"Authorization": basic("admin"), "X-Request-Id": "err-7"}
    ) as resp:
        assert resp.status == 500 and resp.headers["X-Request-Id"] == "err-7"
        assert (await resp.json())["error"] == "internal_server_error"
    lines = [x for x in parsed(log_lines) if x.get("request_id") == "err-7"]
    [error] = [x for x in lines if x["logger"] == "gateway.errors"]
    assert error["level"] == "ERROR" and "kaboom" in error["exc"]
    [access] = [x for x in lines if x["logger"] == "gateway.access"]
    assert access["status"] == 500 and access["route"] == "/boom"


async def test_no_password_token_or_cookie_is_ever_logged(
    client: Any, alice: Couch, db: str, log_lines: io.StringIO
) -> None:
    secrets: list[str] = [PASSWORD, basic("alice").split()[1], "wrong-password-123"]
    secrets.append(base64.b64encode(b"alice:wrong-password-123").decode())
    async with client.post("/_session", json={"name": "alice", "password": PASSWORD}) as resp:
        assert resp.status == 200
        cookie = resp.cookies["AuthSession"].value
    secrets.append(cookie)
    async with client.get("/_session", headers={"Cookie": f"AuthSession={cookie}"}) as resp:
        assert resp.status == 200
    await alice.get("/field")
    await alice.put("/field/doc", {"password": PASSWORD})  # a body is never logged either
    await Couch(client, "alice", "wrong-password-123").get("/field", expected_status=401)
    async with client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    ) as resp:
        tokens = await resp.json()
    secrets += [tokens["access_token"], tokens["refresh_token"]]
    async with client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ) as resp:
        assert resp.status == 200
    async with client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    ) as resp:
        assert resp.status == 200
        fresh = await resp.json()
    secrets += [fresh["access_token"], fresh["refresh_token"]]
    async with client.post(  # a spent refresh token: refused, and still not logged
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    ) as resp:
        assert resp.status == 401
    text = log_lines.getvalue()
    lines = parsed(log_lines)
    assert len([x for x in lines if x["logger"] == "gateway.access"]) >= 9
    for secret in secrets:
        assert secret not in text
    assert "Authorization" not in text and "AuthSession" not in text


def test_the_formatters_carry_extra_fields_and_the_request_id() -> None:
    record = logging.LogRecord("gateway.x", logging.WARNING, __file__, 1, "hi %s", ("you",), None)
    record.route = "/{db}"
    token = request_id.set("rid-1")
    try:
        line = orjson.loads(JsonFormatter().format(record))
        text = TextFormatter().format(record)
    finally:
        request_id.reset(token)
    assert line["msg"] == "hi you" and line["level"] == "WARNING" and line["logger"] == "gateway.x"
    assert line["request_id"] == "rid-1" and line["route"] == "/{db}"
    assert "hi you" in text and "request_id=rid-1" in text and "route=/{db}" in text
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "ValueError: bad" in orjson.loads(JsonFormatter().format(record))["exc"]


def test_generated_request_ids_are_random_and_tell_nothing_about_the_instance() -> None:
    from gateway.logging_mw import new_request_id

    ids = [new_request_id() for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    # no shared prefix, no counter: nothing to tell instances apart or to count requests by
    assert len({i[:16] for i in ids}) == len({i[16:] for i in ids}) == 1000
