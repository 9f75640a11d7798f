"""Server-level routes: ``/``, ``/_all_dbs``, ``/_uuids``, ``/_session``, health."""

from __future__ import annotations

import uuid

from aiohttp import web
from sqlalchemy import text

from gateway import __version__
from gateway.auth import (
    authenticate,
    check_password,
    clear_session_cookie,
    context,
    set_session_cookie,
)
from gateway.jsonio import JSON, json_response, loads, query_int, read_body
from gateway.keys import ENGINE, SETTINGS
from gateway.metrics import CONTENT_TYPE, METRICS, render
from replication import BadRequest, Forbidden, Unauthorized
from replication.errors import ServiceUnavailable, UnsupportedMediaType
from schema.databases import list_databases
from schema.engine import read_transaction
from schema.users import User, find_user

FORM = "application/x-www-form-urlencoded"
SERVER_UUID = uuid.uuid5(uuid.NAMESPACE_URL, "replication-gateway").hex


async def welcome(request: web.Request) -> web.Response:
    """``GET /``: CouchDB's welcome object."""
    return json_response(
        {
            "couchdb": "Welcome",
            "version": "3.3.3",
            "git_sha": "gateway",
            "uuid": SERVER_UUID,
            "features": ["access-ready"],
            "vendor": {"name": "replication-gateway", "version": __version__},
        }
    )


async def all_dbs(request: web.Request) -> web.Response:
    """``GET /_all_dbs``."""
    async with read_transaction(request.app[ENGINE]) as conn:
        return json_response(await list_databases(conn))


async def uuids(request: web.Request) -> web.Response:
    """``GET /_uuids?count=N``."""
    count = query_int(request, "count", 1, minimum=1) or 1
    if count > 1000:
        raise BadRequest("count may not exceed 1000")
    return json_response({"uuids": [uuid.uuid4().hex for _ in range(count)]})


def _roles(user: User) -> list[str]:
    return ["_admin", user.role] if user.role == "admin" else [user.role]


async def get_session(request: web.Request) -> web.Response:
    """``GET /_session``: who the caller is (anonymous allowed)."""
    try:
        ctx = await authenticate(request)
    except Unauthorized:
        ctx = None
    user_ctx = (
        {"name": ctx.user.name, "roles": _roles(ctx.user)} if ctx else {"name": None, "roles": []}
    )
    info = {"authentication_handlers": ["cookie", "default"]}
    if ctx:
        info["authenticated"] = "cookie" if ctx.method == "cookie" else "default"
    return json_response({"ok": True, "userCtx": user_ctx, "info": info})


async def post_session(request: web.Request) -> web.Response:
    """``POST /_session``: log in with name and password, set the ``AuthSession`` cookie."""
    ctype = request.content_type
    if "Content-Type" in request.headers and ctype not in (JSON, FORM) and "+json" not in ctype:
        raise UnsupportedMediaType(
            "Content-Type must be application/x-www-form-urlencoded or application/json"
        )
    raw = await read_body(request)
    if request.content_type == FORM:
        form = await request.post()
        name, password = form.get("name"), form.get("password")
    else:
        data = loads(raw) if raw else {}
        if not isinstance(data, dict):
            raise BadRequest("Request body must be a JSON object")
        name, password = data.get("name", data.get("username")), data.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        raise BadRequest("name and password are required")
    if "\x00" in name:  # no user has one, and PostgreSQL text cannot hold it
        raise Unauthorized("Name or password is incorrect.")
    async with read_transaction(request.app[ENGINE]) as conn:
        user = await find_user(conn, name)
    user = await check_password(request, name, None if user and user.disabled else user, password)
    resp = json_response({"ok": True, "name": user.name, "roles": _roles(user)})
    set_session_cookie(request, resp, user)  # HttpOnly, SameSite (see gateway.csrf)
    return resp


async def delete_session(request: web.Request) -> web.Response:
    """``DELETE /_session``: log out."""
    resp = json_response({"ok": True})
    clear_session_cookie(request, resp)
    return resp


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process is up."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: the database answers."""
    try:
        async with read_transaction(request.app[ENGINE]) as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable("Database unreachable.") from exc
    return json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format.  Public unless ``GATEWAY_METRICS_PUBLIC`` is
    false; then only admins (Basic or Bearer, like any route) may scrape it."""
    if not request.app[SETTINGS].metrics_public and context(request).user.role != "admin":
        raise Forbidden("Only admins may read the metrics.")
    body = await render(request.app[METRICS], request.app.get(ENGINE))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def whoami(request: web.Request) -> web.Response:
    """Small helper used by tools: the authenticated user."""
    user = context(request).user
    return json_response({"name": user.name, "role": user.role})
