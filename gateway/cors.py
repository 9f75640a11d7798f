"""CORS for browser clients (PouchDB in a browser sends credentials and JSON bodies)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.keys import SETTINGS

ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "accept, authorization, content-type, origin, referer, x-device-id, idempotency-key"
EXPOSE_HEADERS = (
    "content-type, cache-control, accept-ranges, etag, server, x-couch-request-id, retry-after, "
    "x-request-id, idempotent-replayed"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _allowed(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if not origin:
        return None
    allowed = request.app[SETTINGS].cors_origins
    if "*" in allowed or origin in allowed:
        return origin
    return None


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer preflights and add CORS headers for allowed origins."""
    origin = _allowed(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if origin is None:
            return web.Response(status=403)
        resp: web.StreamResponse = web.Response(status=204)
        resp.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        resp.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        resp.headers["Access-Control-Max-Age"] = "600"
    else:
        if origin is not None:
            request["cors_origin"] = origin
        resp = await handler(request)
    if origin is not None and not resp.prepared:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Credentials"] = "true"
        resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        resp.headers["Vary"] = "Origin"
    return resp


def add_cors_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """Add CORS headers to a streaming response before it is prepared."""
    origin = request.get("cors_origin")
    if origin:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Credentials"] = "true"
        resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        resp.headers["Vary"] = "Origin"
