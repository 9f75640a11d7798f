"""``/api/v1/auth``: login, refresh (rotating), logout, me."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.auth import check_password, context
from gateway.jsonio import json_response, read_json_object
from gateway.keys import ENGINE, SETTINGS
from gateway.tokens import make_access_token
from replication import BadRequest, Unauthorized
from schema.engine import read_transaction, write_transaction
from schema.tokens import (
    Rotation,
    family_of,
    issue_refresh,
    revoke_access,
    revoke_family,
    use_refresh,
)
from schema.users import User, find_user, get_user_by_id


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise BadRequest(f"`{key}` must be a non-empty string")
    return value


def _token_response(request: web.Request, user: User, refresh: str) -> web.Response:
    settings = request.app[SETTINGS]
    access, _ = make_access_token(settings.secret_key, user, settings.access_token_ttl_seconds)
    return json_response(
        {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": settings.access_token_ttl_seconds,
        },
        headers={"Cache-Control": "no-store"},
    )


async def login(request: web.Request) -> web.Response:
    """``POST /api/v1/auth/login {"username", "password"}``."""
    body = await read_json_object(request)
    name, password = _string(body, "username"), _string(body, "password")
    settings = request.app[SETTINGS]
    async with read_transaction(request.app[ENGINE]) as conn:
        user = await find_user(conn, name)
    user = await check_password(request, name, None if user and user.disabled else user, password)
    async with write_transaction(request.app[ENGINE]) as conn:
        refresh = await issue_refresh(
            conn, user.id, timedelta(days=settings.refresh_token_ttl_days)
        )
    return _token_response(request, user, refresh)


async def refresh(request: web.Request) -> web.Response:
    """``POST /api/v1/auth/refresh {"refresh_token"}``: a new pair; the old token is spent."""
    body = await read_json_object(request)
    token = _string(body, "refresh_token")
    settings = request.app[SETTINGS]
    async with write_transaction(request.app[ENGINE]) as conn:
        rotation = await use_refresh(conn, token)  # commits a reuse's family revocation too
        if isinstance(rotation, Rotation):
            user = await get_user_by_id(conn, rotation.user_id)
            if user is None or user.disabled:
                rotation = Unauthorized("Account disabled.")
            else:
                new_token = await issue_refresh(
                    conn,
                    user.id,
                    timedelta(days=settings.refresh_token_ttl_days),
                    family=rotation.family,
                )
    if not isinstance(rotation, Rotation):
        raise rotation
    return _token_response(request, user, new_token)


async def logout(request: web.Request) -> web.Response:
    """``POST /api/v1/auth/logout``: revoke this access token and the refresh family given."""
    ctx = context(request)
    body: dict[str, Any] = {}
    if request.can_read_body:
        body = await read_json_object(request)
    async with write_transaction(request.app[ENGINE]) as conn:
        token = body.get("refresh_token")
        if isinstance(token, str) and token:
            family = await family_of(conn, token, ctx.user.id)
            if family is not None:
                await revoke_family(conn, family)
        if ctx.token is not None:
            expires = datetime.fromtimestamp(ctx.token.expires_at, UTC)
            await revoke_access(conn, ctx.token.jti, expires)
    return json_response({"ok": True})


async def me(request: web.Request) -> web.Response:
    """``GET /api/v1/auth/me``."""
    user = context(request).user
    return json_response({"id": user.id, "username": user.name, "role": user.role})
