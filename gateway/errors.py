"""The one place where errors become HTTP statuses, and the JSON error middleware.

Domain code raises ``replication.errors`` classes (CouchDB ``error`` name + ``reason``);
this table maps them to statuses like ``chttpd:error_info/1``.  Anything unknown is logged
and becomes a 500 that exposes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from gateway.logs import request_id
from replication import errors as e

log = logging.getLogger("gateway.errors")

STATUS: dict[type[e.GatewayError], int] = {
    e.BadRequest: 400,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.MethodNotAllowed: 405,
    e.NotAcceptable: 406,
    e.Conflict: 409,
    e.FileExists: 412,
    e.PreconditionFailed: 412,
    e.MissingStub: 412,
    e.ResetRequired: 410,
    e.TooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.TooManyRequests: 429,
    e.ServiceUnavailable: 503,
}

# aiohttp's own HTTP exceptions, in CouchDB's words.
HTTP_ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    413: "too_large",
    415: "bad_content_type",
    416: "requested_range_not_satisfiable",
    429: "too_many_requests",
}


def status_of(exc: e.GatewayError) -> int:
    """Return the HTTP status for a domain error (walking its class hierarchy)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def error_response(
    status: int, error: str, reason: str, extra: dict[str, object] | None = None
) -> web.Response:
    """Return a CouchDB-shaped error response (``extra`` adds fields after the two)."""
    return web.Response(
        status=status,
        body=orjson.dumps({"error": error, "reason": reason, **(extra or {})}),
        content_type="application/json",
    )


def response_for(exc: e.GatewayError) -> web.Response:
    """Return the response for a domain error."""
    extra = {"fields": list(exc.paths)} if isinstance(exc, e.MergeConflict) else None
    resp = error_response(status_of(exc), exc.error, exc.reason, extra)
    if isinstance(exc, e.Unauthorized):
        resp.headers["WWW-Authenticate"] = 'Basic realm="gateway"'
    elif isinstance(exc, e.TooManyRequests) and exc.retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, exc.retry_after))
    return resp


def _unavailable(exc: DBAPIError) -> bool:
    """Tell whether a database error means "unreachable" (503) rather than a bug (500)."""
    return exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a CouchDB-shaped JSON body; never leak internals."""
    try:
        return await handler(request)
    except e.GatewayError as exc:
        return response_for(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        name = HTTP_ERROR_NAMES.get(exc.status, "error")
        reason = exc.reason if exc.status != 413 else "The request entity is too large."
        resp = error_response(exc.status, name, reason)
        for header in ("Allow", "Retry-After"):
            if header in exc.headers:
                resp.headers[header] = exc.headers[header]
        return resp
    except (ConnectionResetError, TimeoutError):
        raise
    except (DBAPIError, OSError) as exc:
        if isinstance(exc, DBAPIError) and not _unavailable(exc):
            log.exception("database error on %s %s", request.method, request.path)
            return error_response(500, "internal_server_error", "An internal error occurred.")
        log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        resp = error_response(503, "service_unavailable", "The database is unavailable; retry.")
        resp.headers["Retry-After"] = "2"
        return resp
    except Exception:
        log.exception(
            "unhandled error on %s %s",
            request.method,
            request.path,
            extra={"request_id": request_id.get()},  # also for handlers without our formatter
        )
        return error_response(500, "internal_server_error", "An internal error occurred.")
