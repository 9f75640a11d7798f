"""The manager dashboard in a real headless Chromium (Debian's ``chromium``, driven by
Playwright for Python; no browser download) against a live gateway and real PouchDB clients.

A manager signs in through the form; a PouchDB device edits and deletes documents and the
rows appear in the live feed; a conflict pushed with ``new_edits=false`` shows up, its sides
are compared, a clashing merge is refused with the fields named, and "keep theirs" resolves
it for good; the checkpoint a PouchDB pull left is listed; the activity chart is drawn.
Inspectors are told the dashboard is for managers; an expired access token is refreshed.

Every wait is Playwright's auto-waiting ``expect`` with a bounded timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from gateway.settings import Settings
from tests.helpers import PASSWORD, Couch
from tests.interop.browser import expect, launched, skip_reason
from tests.interop.conftest import LiveGateway

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

SKIP = skip_reason()
pytestmark = [pytest.mark.interop, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

WAIT_MS = 20_000  # the longest any expectation waits (a long-poll answers within a second)


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The suite's settings; ``@pytest.mark.parametrize("settings", [ttl], indirect=True)``
    sets the access token lifetime."""
    ttl = getattr(request, "param", None)
    return settings if ttl is None else dataclasses.replace(settings, access_token_ttl_seconds=ttl)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched() as browser:
        yield browser


@dataclasses.dataclass
class Watched:
    page: Page
    problems: list[str]  # console errors (CSP violations among them) and uncaught exceptions
    requests: list[tuple[str, str, int]]  # (method, path, status) of every API answer


async def open_page(browser: Browser) -> Watched:
    page = await browser.new_page()
    watched = Watched(page, [], [])
    page.on("console", lambda m: watched.problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: watched.problems.append(str(exc)))

    def answered(response: Any) -> None:
        path = response.url.split("://", 1)[1].split("/", 1)[1]
        watched.requests.append((response.request.method, "/" + path, response.status))

    page.on("response", answered)
    return watched


async def sign_in(page: Page, gateway: LiveGateway, user: str, password: str = PASSWORD) -> None:
    await page.goto(f"{gateway.url}/dashboard")
    await page.fill("#username", user)
    await page.fill("#password", password)
    await page.click("#login-submit")


def expected_problems(problems: list[str]) -> list[str]:
    """Console errors other than the failed requests a test causes on purpose (Chromium logs
    every non-2xx fetch as "Failed to load resource")."""
    return [p for p in problems if not p.startswith("Failed to load resource")]


async def make_conflict(user: Couch, db: str, doc: str) -> dict[str, Any]:
    """``doc`` at 1-x, the server's 2-… edit, and a pushed 2-… branch (``new_edits=false``)
    that changed ``title`` too (so a three-way merge clashes on it): an open ConflictRecord."""
    base = (await user.put(f"/{db}/{doc}", {"title": "base", "n": 1, "site": "A"}))["rev"]
    await user.put(f"/{db}/{doc}", {"_rev": base, "title": "server", "n": 1, "site": "A"})
    branch = "b" * 32
    pushed = {
        "_id": doc,
        "_rev": "2-" + branch,
        "_revisions": {"start": 2, "ids": [branch, base.split("-")[1]]},
        "title": "field",
        "n": 2,
        "site": "B",
    }
    await user.post(f"/{db}/_bulk_docs", {"new_edits": False, "docs": [pushed]},
                    headers={"X-Device-Id": "tablet-7"}, expected_status=201)  # fmt: skip
    return pushed


async def test_a_manager_watches_changes_resolves_a_conflict_and_sees_lag_and_activity(
    live_gateway: LiveGateway, browser: Browser
) -> None:
    watched = await open_page(browser)
    page = watched.page
    await sign_in(page, live_gateway, "manager")
    await expect(page.locator("#who")).to_have_text("manager (manager)", timeout=WAIT_MS)
    await expect(page.locator("#dashboard-view")).to_be_visible()
    await expect(page.locator("#feed-status")).to_have_text("live", timeout=WAIT_MS)

    # --- a PouchDB device pushes, edits, deletes, then pulls: rows arrive by long-poll
    device = await live_gateway.run_node("dashboard_edit.js", user="alice")
    assert device["pull"]["ok"] and sorted(device["pulled"]) == ["site-report"]
    feed = page.locator("#feed tbody")
    report = feed.locator("tr[data-id='site-report']").first  # newest first
    generation, digest = device["report_rev"].split("-")
    await expect(report).to_contain_text(f"{generation}-{digest[:10]}", timeout=WAIT_MS)
    await expect(report).to_contain_text("alice")
    await expect(report).to_contain_text(live_gateway.db)
    await expect(report).not_to_have_class(re.compile("deleted"))
    tombstone = feed.locator("tr.deleted[data-id='scratch']")
    await expect(tombstone).to_have_count(1, timeout=WAIT_MS)
    await expect(tombstone.locator(".badge-deleted")).to_have_text("deleted")
    struck = await tombstone.locator("td.docid span").first.evaluate(
        "node => getComputedStyle(node).textDecorationLine"
    )
    assert struck == "line-through"

    # --- a conflict appears in the list (refreshed because the feed saw the change)
    alice = live_gateway.couch("alice")
    manager = live_gateway.couch("manager")
    await make_conflict(alice, live_gateway.db, "job")
    row = page.locator("#conflicts tbody tr", has_text="job")
    await expect(row).to_have_count(1, timeout=WAIT_MS)
    await expect(row).to_contain_text("tablet-7")
    conflict_id = await row.get_attribute("data-conflict-id")
    await row.locator("button").click()

    diff = page.locator("#conflict-diff")
    await expect(page.locator("#conflict-title")).to_have_text(f"{live_gateway.db} / job")
    await expect(diff.locator("thead")).to_contain_text("Ancestor")
    cell = "tr[data-field='{}'] td[data-side='{}']"
    for field, side, text in (("title", "ancestor", "base"), ("title", "theirs", "server"),
                              ("title", "mine", "field"), ("site", "theirs", "A"),
                              ("site", "mine", "B"), ("n", "mine", "2")):  # fmt: skip
        await expect(diff.locator(cell.format(field, side))).to_have_text(text)
    changed = re.compile(r"\bchanged\b")
    await expect(diff.locator(cell.format("site", "mine"))).to_have_class(changed)
    await expect(diff.locator(cell.format("site", "theirs"))).not_to_have_class(changed)
    await expect(diff.locator(cell.format("title", "theirs"))).to_have_class(changed)
    await expect(diff.locator("tr[data-field='title']")).to_have_class(re.compile("clash"))

    # a merge clashes on title: refused, the field named, nothing resolved
    await page.click("#conflict-detail [data-strategy='merge']")
    message = page.locator("#conflict-message")
    await expect(message).to_contain_text("Cannot merge", timeout=WAIT_MS)
    await expect(message).to_contain_text("/title")
    assert (await manager.get(f"/api/v1/conflicts/{conflict_id}"))["status"] == "open"

    await page.click("#conflict-detail [data-strategy='keep_theirs']")
    await expect(message).to_contain_text("Resolved (keep theirs)", timeout=WAIT_MS)
    await expect(row).to_have_count(0, timeout=WAIT_MS)  # the open list is refreshed
    await expect(page.locator("#conflict-detail [data-strategy='merge']")).to_be_disabled()
    record = await manager.get(f"/api/v1/conflicts/{conflict_id}")
    assert (record["status"], record["strategy"], record["resolved_by"]) == (
        "resolved", "keep_theirs", "manager")  # fmt: skip
    doc = await manager.get(f"/{live_gateway.db}/job?conflicts=true")
    assert "_conflicts" not in doc and doc["title"] == "server"
    assert doc["_rev"] == record["resolved_rev"]

    # --- the checkpoint registry, with the pull's checkpoint; managers cannot reset
    registry = await manager.get(f"/api/v1/checkpoints?user=alice&db={live_gateway.db}")
    assert registry["results"]
    await page.click("#checkpoints-refresh")
    for checkpoint in registry["results"]:
        found = page.locator(f"#checkpoints tbody tr[data-id='{checkpoint['id']}']")
        await expect(found).to_have_count(1, timeout=WAIT_MS)
        await expect(found).to_contain_text("alice")
        await expect(found).to_contain_text(live_gateway.db)
        await expect(found.locator("button")).to_be_disabled()
        title = await found.locator(".tooltip").get_attribute("title")
        assert title is not None and "Only admins" in title

    # --- the activity chart: documents in (pushed, written) and out (pulled, served)
    chart = page.locator("#stats-chart")
    await expect(chart).to_have_attribute("data-points", "60", timeout=WAIT_MS)
    await expect(chart).to_have_attribute("data-total-in", re.compile(r"^[1-9]\d*$"),
                                          timeout=WAIT_MS)  # fmt: skip
    await expect(chart).to_have_attribute("data-total-out", re.compile(r"^[1-9]\d*$"),
                                          timeout=WAIT_MS)  # fmt: skip
    painted = await chart.evaluate(
        """canvas => {
            const {width, height} = canvas;
            const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
            const colors = new Set();
            for (let i = 0; i < data.length; i += 4) {
                if (data[i + 3]) colors.add(data.slice(i, i + 3).join());
            }
            return colors.size;
        }"""
    )
    assert painted > 3  # grid, labels and both bar colors
    await expect(page.locator("#stats-summary")).to_contain_text("documents in")

    # --- every call used a Bearer token (no cookie) and the CSP blocked nothing
    assert expected_problems(watched.problems) == []
    assert await page.context.cookies() == []


async def test_an_inspector_is_told_the_dashboard_is_for_managers(
    live_gateway: LiveGateway, browser: Browser
) -> None:
    watched = await open_page(browser)
    page = watched.page
    await sign_in(page, live_gateway, "alice", password="wrong password")
    await expect(page.locator("#login-error")).to_have_text("Wrong user name or password.",
                                                            timeout=WAIT_MS)  # fmt: skip
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    forbidden = page.locator("#forbidden-view")
    await expect(forbidden).to_be_visible(timeout=WAIT_MS)
    await expect(forbidden).to_contain_text("managers and admins only")
    await expect(forbidden).to_contain_text("alice (inspector)")
    await expect(page.locator("#dashboard-view")).to_be_hidden()
    assert not [r for r in watched.requests if r[1].startswith("/api/v1/activity")]
    await live_gateway.couch("alice").get("/api/v1/activity", expected_status=403)

    await page.click("#forbidden-logout")
    await expect(page.locator("#login-view")).to_be_visible()
    assert expected_problems(watched.problems) == []


@pytest.mark.parametrize("settings", [2], indirect=True)  # access tokens live 2 to 3 seconds
async def test_an_expired_access_token_is_refreshed_once_and_a_reload_resumes(
    live_gateway: LiveGateway, browser: Browser
) -> None:
    watched = await open_page(browser)
    page = watched.page
    await sign_in(page, live_gateway, "manager")
    await expect(page.locator("#feed-status")).to_have_text("live", timeout=WAIT_MS)
    await asyncio.sleep(3.2)  # let the access token expire (not an assertion)
    before = len(watched.requests)
    await page.click("#checkpoints-refresh")
    await page.click("#conflicts-refresh")
    await live_gateway.couch("alice").put(f"/{live_gateway.db}/late", {"x": 1})
    await expect(page.locator("#feed tr[data-id='late']")).to_have_count(1, timeout=WAIT_MS)
    expired = [r for r in watched.requests[before:] if r[2] == 401]
    refreshes = [r for r in watched.requests if r[1] == "/api/v1/auth/refresh"]
    assert expired and refreshes and all(r[2] == 200 for r in refreshes)
    await expect(page.locator("#dashboard-view")).to_be_visible()
    await expect(page.locator("#checkpoints-message")).to_be_hidden()

    await page.reload()  # the refresh token in sessionStorage resumes the session
    await expect(page.locator("#who")).to_have_text("manager (manager)", timeout=WAIT_MS)
    await expect(page.locator("#feed tr[data-id='late']")).to_have_count(1, timeout=WAIT_MS)
    await page.click("#logout")
    await expect(page.locator("#login-view")).to_be_visible()
    await page.reload()
    await expect(page.locator("#login-view")).to_be_visible(timeout=WAIT_MS)
    assert expected_problems(watched.problems) == []
