"""The manager dashboard's static files (``/dashboard``) and its chart data
(``GET /api/v1/activity/stats``): security headers, content types, no path traversal, and
per-minute documents in/out, in process or shared through Redis (127.0.0.1:6379, database 7,
flushed by these tests only).  The browser test is ``tests/interop/test_dashboard.py``."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import pytest
import redis.asyncio as aioredis
from yarl import URL

from gateway.app import create_app
from gateway.handlers.dashboard import ASSETS, DASHBOARD_DIR
from gateway.settings import Settings
from gateway.stats import KEY_PREFIX, TTL_SECONDS, ActivityStats
from gateway.stats import STATS as STATS_KEY
from tests.helpers import Couch

REDIS_URL = os.environ.get("GATEWAY_TEST_DASHBOARD_REDIS_URL", "redis://127.0.0.1:6379/7")
UNREACHABLE = "redis://127.0.0.1:1/7"
STATS = "/api/v1/activity/stats"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def assert_secure(headers: Any) -> None:
    for name, value in SECURITY.items():
        assert headers.get(name) == value, name
    csp = headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp and "*" not in csp


async def fetch(client: Any, path: str | URL, **headers: str) -> tuple[int, Any, bytes]:
    async with client.get(path, headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


# --- static files ---------------------------------------------------------------------------


def test_every_file_of_the_dashboard_directory_is_servable() -> None:
    on_disk = {p.name for p in DASHBOARD_DIR.iterdir() if p.is_file()}
    assert {"index.html", "app.js", "style.css"} <= on_disk
    assert set(ASSETS) == on_disk  # a file of another type would silently 404


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/", "/dashboard/index.html"])
async def test_the_page_is_public_and_locked_down(client: Any, path: str) -> None:
    status, headers, body = await fetch(client, path)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert_secure(headers)
    assert b'<script type="module" src="/dashboard/app.js"></script>' in body


async def test_every_asset_has_its_content_type_and_the_headers(client: Any) -> None:
    for name in ASSETS:
        status, headers, body = await fetch(client, f"/dashboard/{name}")
        assert status == 200, name
        assert headers["Content-Type"] == TYPES[os.path.splitext(name)[1]], name
        assert body == (DASHBOARD_DIR / name).read_bytes()
        assert_secure(headers)
        assert headers["ETag"]
        status, again, body = await fetch(client, f"/dashboard/{name}", **{
            "If-None-Match": headers["ETag"]})  # fmt: skip
        assert (status, body) == (304, b"")
        assert_secure(again)
    async with client.head("/dashboard/app.js") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/javascript")


class _Inline(HTMLParser):
    """Collects what a strict CSP would block in a page: inline scripts, handlers, styles."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        self.problems += [f"{tag}[{n}]" for n in names if n.startswith("on") or n == "style"]
        if tag == "style":
            self.problems.append("<style>")
        if tag == "script":
            src = dict(attrs).get("src")
            if not src:
                self.problems.append("<script> without src")
            else:
                self.scripts.append(src)
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline script text")


async def test_the_page_has_no_inline_code(client: Any) -> None:
    _, _, body = await fetch(client, "/dashboard")
    parser = _Inline()
    parser.feed(body.decode())
    assert parser.problems == []
    assert parser.scripts == ["/dashboard/app.js"]
    for name, asset in ASSETS.items():  # modules import each other, never a CDN
        if name.endswith(".js"):
            assert b"http://" not in asset.body and b"https://" not in asset.body, name


@pytest.mark.parametrize(
    "raw",
    [
        "/dashboard/%2e%2e/gateway/app.py",
        "/dashboard/%2E%2E%2Fgateway%2Fapp.py",
        "/dashboard/..%2f..%2fsetup.cfg",
        "/dashboard/%2e%2e",
        "/dashboard/app.js/..%2f..%2fapp.py",
        "/dashboard/./app.js%00",
        "/dashboard/.hidden",
        "/dashboard/nope.js",
        "/dashboard/dashboard.py",
        "/dashboard/sub/app.js",
    ],
)
async def test_traversal_and_unknown_names_are_404(client: Any, raw: str) -> None:
    for user in (None, "manager"):
        headers = Couch(client, user).headers()
        async with client.get(URL(raw, encoded=True), headers=headers) as resp:
            body = await resp.read()
            assert resp.status == 404, (raw, user, body)
            assert_secure(resp.headers)
            assert b"import" not in body and b"[metadata]" not in body


async def test_a_dot_dot_path_is_normalized_out_of_the_dashboard(client: Any) -> None:
    """``/dashboard/../gateway/app.py`` is ``/gateway/app.py`` to the server: a document
    route, never a file (anonymous: 401; a manager: no such database, 404)."""
    raw = URL("/dashboard/../gateway/app.py", encoded=True)
    for user, expected in ((None, 401), ("manager", 404)):
        async with client.get(raw, headers=Couch(client, user).headers()) as resp:
            body = await resp.read()
            assert resp.status == expected and b"import" not in body


async def test_only_get_is_public_under_dashboard(anon: Couch) -> None:
    for method in ("PUT", "POST", "DELETE"):
        err = await anon.request(method, "/dashboard/app.js", {}, expected_status=None)
        assert err["error"] in ("unauthorized", "method_not_allowed"), (method, err)


# --- the stats endpoint ---------------------------------------------------------------------


def _totals(body: dict[str, Any]) -> tuple[int, int]:
    return sum(m["in"] for m in body["minutes"]), sum(m["out"] for m in body["minutes"])


async def _write_and_read(user: Couch, db: str, n: int = 3) -> None:
    docs = [{"_id": f"d{i}", "n": i} for i in range(n)]
    rows = await user.post(f"/{db}/_bulk_docs", {"docs": docs}, expected_status=201)
    assert all(r["ok"] for r in rows)
    got = await user.post(f"/{db}/_bulk_get", {"docs": [{"id": "d0"}, {"id": "d1"}]})
    assert len(got["results"]) == 2


async def test_stats_are_staff_only(anon: Couch, alice: Couch, manager: Couch,
                                    admin: Couch) -> None:  # fmt: skip
    assert (await anon.get(STATS, expected_status=401))["error"] == "unauthorized"
    assert (await alice.get(STATS, expected_status=403))["error"] == "forbidden"
    for user in (manager, admin):
        body = await user.get(STATS)
        assert len(body["minutes"]) == 60
    for bad in ("0", "181", "x", "-1"):
        await manager.get(f"{STATS}?minutes={bad}", expected_status=400)
    assert len((await manager.get(f"{STATS}?minutes=5"))["minutes"]) == 5


async def test_stats_count_documents_written_and_served(manager: Couch, alice: Couch,
                                                        db: str) -> None:  # fmt: skip
    before = _totals(await manager.get(STATS))
    await _write_and_read(alice, db)
    await alice.put(f"/{db}/single", {"x": 1})  # one more in
    # a conflict row is not a write; nor are plain _changes rows
    await alice.post(f"/{db}/_bulk_docs", {"docs": [{"_id": "d0", "n": 9}]}, expected_status=201)
    await alice.get(f"/{db}/_changes")
    changes = await alice.get(f"/{db}/_changes?include_docs=true")  # every row is a document
    after = _totals(await manager.get(STATS))
    assert after[0] - before[0] == 4
    assert after[1] - before[1] == 2 + len(changes["results"])

    body = await manager.get(f"{STATS}?minutes=3")
    ats = [m["at"] for m in body["minutes"]]
    assert ats == sorted(ats) and all(a.endswith(":00+00:00") for a in ats)
    assert body["minutes"][-1]["in"] + body["minutes"][-2]["in"] >= 4  # now (or a minute ago)


async def test_in_process_counters_per_minute_and_pruning() -> None:
    now = [600_000.0]
    stats = ActivityStats(None, clock=lambda: now[0])
    stats.count("in", 2)
    stats.count("out", 5)
    stats.count("in", 0)
    now[0] += 60
    stats.count("in", 1)
    minutes = await stats.minutes(3)
    assert [(m["in"], m["out"]) for m in minutes] == [(0, 0), (2, 5), (1, 0)]
    assert minutes[-1]["at"] == "1970-01-07T22:41:00+00:00"
    now[0] += 60 * 400  # far past the retention: old minutes are forgotten
    stats.count("out", 1)
    assert len(stats._local) == 1
    with pytest.raises(ValueError):
        stats.count("sideways", 1)


# --- Redis ----------------------------------------------------------------------------------


@pytest.fixture
async def redis_db() -> AsyncIterator[aioredis.Redis]:
    """The dedicated Redis database, empty at the start of the test."""
    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def _start(aiohttp_client: Any, settings: Settings, redis_url: str) -> Any:
    return await aiohttp_client(create_app(dataclasses.replace(settings, redis_url=redis_url),
                                           migrate=False))  # fmt: skip


@pytest.mark.usefixtures("patient_redis")
async def test_two_instances_share_the_counts_through_redis(
    aiohttp_client: Any, settings: Settings, engine: Any, redis_db: aioredis.Redis
) -> None:
    one = await _start(aiohttp_client, settings, REDIS_URL)
    two = await _start(aiohttp_client, settings, REDIS_URL)
    await Couch(one, "admin").put("/field?access_mode=shared", expected_status=201)
    await _write_and_read(Couch(one, "alice"), "field")  # 3 in, 2 out on instance one
    await Couch(two, "alice").put("/field/other", {"x": 1})  # 1 in on instance two
    # each instance sends its counts in the background, right after counting: wait for that
    # (a read always includes the reading instance's own counts)
    for client in (one, two):
        await client.app[STATS_KEY].drain()
    for client in (one, two):
        assert _totals(await Couch(client, "manager").get(STATS)) == (4, 2)
    keys = sorted(k.decode() for k in await redis_db.keys(KEY_PREFIX + "*"))
    assert {k.split(":")[2] for k in keys} == {"in", "out"}
    ttls = [await redis_db.ttl(k) for k in keys]
    assert all(0 < ttl <= TTL_SECONDS for ttl in ttls)


async def test_an_unreachable_redis_counts_in_process(
    aiohttp_client: Any, settings: Settings, engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await _start(aiohttp_client, settings, UNREACHABLE)
    await Couch(client, "admin").put("/field?access_mode=shared", expected_status=201)
    with caplog.at_level(logging.WARNING, logger="gateway.stats"):
        await _write_and_read(Couch(client, "alice"), "field")
        assert _totals(await Couch(client, "manager").get(STATS)) == (3, 2)
        await Couch(client, "alice").put("/field/more", {"x": 1})
        assert _totals(await Couch(client, "manager").get(STATS)) == (4, 2)
    warnings = [r for r in caplog.records if r.name == "gateway.stats"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()


async def test_pending_counts_are_flushed_on_shutdown(redis_db: aioredis.Redis) -> None:
    stats = ActivityStats(aioredis.from_url(REDIS_URL), clock=lambda: 1_200_000.0)
    stats.count("in", 7)  # scheduled, not yet sent
    await stats.close()
    assert await redis_db.get(f"{KEY_PREFIX}in:20000") == b"7"
    await stats._redis.aclose()  # type: ignore[union-attr]
