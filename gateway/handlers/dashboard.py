"""The manager dashboard (``/dashboard``) and its chart data (``/api/v1/activity/stats``).

The dashboard is static: ``gateway/dashboard/`` (HTML, CSS and ES modules, no build step).
The pages hold no data, so they are public; everything they show comes from the staff-only
APIs, called with a Bearer token.  Only the files found in that directory when this module
is imported are served, looked up by exact name (no path is ever joined from the URL, so
``..``, encoded slashes and hidden files are simply unknown names: 404).  Every dashboard
response carries a strict Content-Security-Policy (scripts and styles from files of this
origin only, no inline code, no framing) and ``Cache-Control: no-cache`` (revalidated with
the ``ETag`` on each load, so an upgraded gateway never runs stale scripts).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.access import require_staff
from gateway.auth import context
from gateway.jsonio import json_response, query_int
from gateway.stats import MAX_MINUTES, STATS, ActivityStats
from replication import BadRequest

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboard"
CONTENT_TYPES = {
    ".html": ("text/html", "utf-8"),
    ".js": ("text/javascript", "utf-8"),
    ".css": ("text/css", "utf-8"),
    ".svg": ("image/svg+xml", "utf-8"),
    ".png": ("image/png", None),
    ".ico": ("image/x-icon", None),
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    charset: str | None
    etag: str


def load_assets(directory: Path = DASHBOARD_DIR) -> dict[str, Asset]:
    """Every servable file of ``directory`` by name (no subdirectories, no dot files)."""
    assets: dict[str, Asset] = {}
    if not directory.is_dir():
        return assets
    for path in sorted(directory.iterdir()):
        kind = CONTENT_TYPES.get(path.suffix)
        if kind is None or path.name.startswith(".") or not path.is_file():
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[path.name] = Asset(body, kind[0], kind[1], etag)
    return assets


ASSETS = load_assets()
INDEX = "index.html"


def _not_found() -> web.Response:
    return json_response(
        {"error": "not_found", "reason": "No such dashboard file."},
        status=404,
        headers=SECURITY_HEADERS,
    )


def _serve(request: web.Request, name: str) -> web.Response:
    asset = ASSETS.get(name)
    if asset is None:
        return _not_found()
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset=asset.charset, headers=headers
    )


async def index(request: web.Request) -> web.Response:
    """``GET /dashboard``: the page (public: it holds no data)."""
    return _serve(request, INDEX)


async def asset(request: web.Request) -> web.Response:
    """``GET /dashboard/{path}``: ``/dashboard/`` is the page, else one file by exact name."""
    path = request.match_info.get("path", "")
    return _serve(request, path or INDEX)


async def stats_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/activity/stats?minutes=60`` (staff): documents in (written) and out
    (served by ``_bulk_get`` and ``_changes?include_docs``) per minute, oldest first:
    ``{"minutes": [{"at", "in", "out"}, ...]}``, across instances when Redis is configured."""
    require_staff(context(request).user, "read the activity stats")
    minutes = query_int(request, "minutes", 60, minimum=1) or 60
    if minutes > MAX_MINUTES:
        raise BadRequest(f"minutes must be at most {MAX_MINUTES}")
    stats = request.app.get(STATS) or ActivityStats(None)
    return json_response({"minutes": await stats.minutes(minutes)})
