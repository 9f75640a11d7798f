"""``/api/v1/photos``: signed direct uploads to Cloudinary, confirmed and recorded here.

Whoever may see an inspection may add photos to it; anyone else gets the 404 of a missing
inspection.  Cloudinary being unreachable is a retryable 503 and records nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from gateway.auth import context
from gateway.errors import error_response
from gateway.jsonio import json_response, read_json_object
from gateway.keys import ENGINE, SETTINGS
from gateway.photos import (
    CloudinaryError,
    account_of,
    check_asset,
    existing_for,
    fetch_asset,
    find_photo,
    list_photos,
    parse_public_id,
    record_photo,
    upload_params,
)
from gateway.restdb import rest_db
from replication import BadRequest
from schema.engine import read_transaction, write_transaction
from schema.inspections import canonical_id, get_inspection

DB = "inspections"
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _upstream_errors(handler: Handler) -> Handler:
    """Answer a ``CloudinaryError`` with its status (and ``Retry-After`` when retryable)."""

    @wraps(handler)
    async def wrapper(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except CloudinaryError as exc:
            resp = error_response(exc.status, exc.error, exc.reason)
            if exc.retry_after is not None:
                resp.headers["Retry-After"] = str(exc.retry_after)
            return resp

    return wrapper


def _body(data: dict[str, Any], allowed: set[str]) -> str:
    unknown = set(data) - allowed
    if unknown:
        raise BadRequest(f"Unknown members: {', '.join(sorted(unknown))}")
    raw = data.get("inspection_id")
    try:
        return canonical_id(raw)
    except BadRequest as exc:
        raise BadRequest("inspection_id (a UUID) is required") from exc


def _version(raw: object) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw < 2**63:
        return raw
    raise BadRequest("version must be a positive integer")


async def _visible(request: web.Request, inspection_id: str) -> None:
    """404 unless the caller may see the inspection."""
    access = await rest_db(request, DB)
    async with read_transaction(request.app[ENGINE]) as conn:
        await get_inspection(conn, access.db, inspection_id, access.owner)


async def upload_params_handler(request: web.Request) -> web.Response:
    """``POST /api/v1/photos/upload-params {"inspection_id"}`` → ``{upload_url, params,
    expires_at}``: the signed form fields to post the image with, straight to Cloudinary."""
    inspection_id = _body(await read_json_object(request), {"inspection_id"})
    settings = request.app[SETTINGS]
    account = account_of(settings)
    await _visible(request, inspection_id)
    return json_response(upload_params(account, settings, inspection_id))


@_upstream_errors
async def confirm_handler(request: web.Request) -> web.Response:
    """``POST /api/v1/photos/confirm {"inspection_id", "public_id", "version"?}``: verify the
    upload with Cloudinary and record it (201; the same confirmation again: 200)."""
    data = await read_json_object(request)
    inspection_id = _body(data, {"inspection_id", "public_id", "version"})
    public_id = parse_public_id(data.get("public_id"))
    version = _version(data.get("version"))
    settings = request.app[SETTINGS]
    account = account_of(settings)
    access = await rest_db(request, DB)
    engine = request.app[ENGINE]
    async with read_transaction(engine) as conn:
        await get_inspection(conn, access.db, inspection_id, access.owner)
        found = await find_photo(conn, public_id)
    if found is not None:  # confirmed before: nothing to ask Cloudinary
        return json_response(existing_for(found, inspection_id))
    asset = await fetch_asset(account, public_id)
    check_asset(asset, settings, inspection_id, version)
    try:
        async with write_transaction(engine) as conn:
            # still visible (it may have been deleted while Cloudinary answered)
            await get_inspection(conn, access.db, inspection_id, access.owner)
            uploader = context(request).user.id
            photo, created = await record_photo(conn, inspection_id, asset, uploader)
    except IntegrityError:  # a concurrent confirmation of the same public_id won
        async with read_transaction(engine) as conn:
            found = await find_photo(conn, public_id)
        if found is None:
            raise
        photo, created = existing_for(found, inspection_id), False
    return json_response(photo, status=201 if created else 200)


async def list_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/inspections/{inspection_id}/photos`` → ``{"results": [photo, ...]}``."""
    inspection_id = canonical_id(request.match_info["inspection_id"])
    access = await rest_db(request, DB)
    async with read_transaction(request.app[ENGINE]) as conn:
        await get_inspection(conn, access.db, inspection_id, access.owner)
        found = await list_photos(conn, inspection_id)
    return json_response({"results": found})
