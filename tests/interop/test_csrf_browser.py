"""The session cookie and its CSRF check in a real headless Chromium (Debian's ``chromium``
driven by Playwright, as in ``test_dashboard.py``) with PouchDB's browser build.

Three origins on 127.0.0.1, one site: the gateway, a browser app on an allowed CORS origin,
and a hostile page on another port (not allowed).  ``SameSite=Lax`` lets the browser send
the cookie to the gateway from both pages (they are the same site), which is exactly the
case the origin check exists for: the app replicates with its cookie, the hostile page's
form and ``no-cors`` fetch are refused with 403 (not 401: the browser did send the cookie).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from gateway.settings import Settings
from tests.helpers import PASSWORD
from tests.interop.browser import launched, skip_reason
from tests.interop.conftest import NODE_MODULES, LiveGateway

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext

POUCHDB_JS = NODE_MODULES / "pouchdb" / "dist" / "pouchdb.min.js"
SKIP = skip_reason() or (
    None if POUCHDB_JS.is_file() else "needs PouchDB's browser build (npm ci at the repo root)"
)
pytestmark = [pytest.mark.interop, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

WAIT_MS = 20_000
PAGE = '<!doctype html><meta charset="utf-8"><script src="/pouchdb.min.js"></script>'

# A form that makes the browser POST ``{"_id":"<id>","x":"="}`` as text/plain: the field
# name and value are joined by "=", which the JSON string swallows.
FORM = """<!doctype html><form id="f" method="POST" enctype="text/plain" action="{action}">
<input name='{{"_id":"{doc}","x":"' value='"}}'></form>"""


@dataclasses.dataclass
class Pages:
    """Two static sites: the browser app (allowed) and a hostile page (not allowed)."""

    app: str
    evil: str


async def serve_pages(runners: list[web.AppRunner]) -> str:
    app = web.Application()
    app.router.add_get("/pouchdb.min.js", lambda _: web.FileResponse(POUCHDB_JS))
    app.router.add_get("/", lambda _: web.Response(text=PAGE, content_type="text/html"))
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    runners.append(runner)
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


@pytest.fixture
async def pages() -> AsyncIterator[Pages]:
    runners: list[web.AppRunner] = []
    try:
        yield Pages(app=await serve_pages(runners), evil=await serve_pages(runners))
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
def settings(settings: Settings, pages: Pages) -> Settings:
    """Only the app's origin is allowed."""
    return dataclasses.replace(settings, cors_origins=(pages.app,))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched() as browser:
        yield browser


LOGIN_AND_REPLICATE = """async ({gw, db, user, password}) => {
  const login = await fetch(gw + '/_session', {
    method: 'POST', credentials: 'include',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({name: user, password}),
  });
  const remote = new PouchDB(gw + '/' + db);  // the http adapter sends credentials: include
  const local = new PouchDB('device-' + Date.now());
  await local.bulkDocs([{_id: 'b1', v: 1}, {_id: 'b2', v: 2}]);
  const push = await local.replicate.to(remote);
  const other = new PouchDB('other-' + Date.now());
  const pull = await other.replicate.from(remote);
  const ids = (await other.allDocs()).rows.map((r) => r.id);
  return {login: login.status, pushed: push.docs_written, pulled: pull.docs_written, ids,
          scriptSees: document.cookie};
}"""


async def log_in_from_the_app(context: BrowserContext, gw: LiveGateway, pages: Pages) -> Any:
    page = await context.new_page()
    await page.goto(pages.app + "/")
    args = {"gw": gw.url, "db": gw.db, "user": "alice", "password": PASSWORD}
    return await page.evaluate(LOGIN_AND_REPLICATE, args)


async def test_browser_pouchdb_on_an_allowed_origin_replicates_with_the_cookie(
    live_gateway: LiveGateway, pages: Pages, browser: Browser
) -> None:
    """Preflights, ``credentials: include`` and the ``HttpOnly; SameSite=Lax`` cookie work
    for the app: it pushes and pulls, and no script can read the cookie."""
    context = await browser.new_context()
    result = await log_in_from_the_app(context, live_gateway, pages)
    assert result["login"] == 200
    assert (result["pushed"], result["pulled"]) == (2, 2) and result["ids"] == ["b1", "b2"]
    assert "AuthSession" not in result["scriptSees"]  # HttpOnly
    (cookie,) = [c for c in await context.cookies() if c["name"] == "AuthSession"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    alice = live_gateway.couch("alice")
    await alice.get(f"/{live_gateway.db}/b1")


async def test_a_same_site_hostile_page_cannot_write_with_the_cookie(
    live_gateway: LiveGateway, pages: Pages, browser: Browser
) -> None:
    """The hostile page's text/plain form and ``no-cors`` fetch carry the cookie (403, not
    401) and write nothing; the same form from the app's page writes, so the refusal is the
    origin check and not the body."""
    context = await browser.new_context()
    assert (await log_in_from_the_app(context, live_gateway, pages))["login"] == 200
    target = f"{live_gateway.url}/{live_gateway.db}"
    page = await context.new_page()

    await page.goto(pages.evil + "/")
    await page.set_content(FORM.format(action=target, doc="pwned"))
    async with page.expect_navigation(timeout=WAIT_MS):
        await page.evaluate("document.getElementById('f').submit()")
    answer = await page.evaluate("document.body.innerText")
    assert '"error":"forbidden"' in answer and "Cross-site request refused" in answer, answer

    await page.goto(pages.evil + "/")
    fetched = await page.evaluate(
        """async (url) => {
          const r = await fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include',
            headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({_id: 'pwned2'})});
          return r.type;
        }""",
        target,
    )
    assert fetched == "opaque"  # sent and answered; the page may not read the answer
    alice = live_gateway.couch("alice")
    for doc in ("pwned", "pwned2"):
        await alice.get(f"/{live_gateway.db}/{doc}", expected_status=404)

    await page.goto(pages.app + "/")
    await page.set_content(FORM.format(action=target, doc="formed"))
    async with page.expect_navigation(timeout=WAIT_MS):
        await page.evaluate("document.getElementById('f').submit()")
    assert '"ok":true' in await page.evaluate("document.body.innerText")
    await alice.get(f"/{live_gateway.db}/formed")
