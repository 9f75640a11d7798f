"""The one place where errors become HTTP statuses, and the JSON error middleware.

Domain code raises ``replication.errors`` classes (CouchDB ``error`` name + ``reason``);
this table maps them to statuses like ``chttpd:error_info/1``.  A database that cannot
answer (refused, reset, timed out, shutting down or starting up, out of connections: see
``_unavailable``) is a 503 with ``Retry-After``.  Anything unknown is logged and becomes a
500 that exposes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

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

UNAVAILABLE_RETRY_AFTER = "2"  # seconds, on every 503 for an unreachable database


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
        # Never a Basic challenge: a browser would prompt, then attach the typed credentials
        # to every request to the gateway, cross-site forms included (ambient, like a cookie;
        # see gateway.csrf).  CouchDB sends none by default; clients send Basic unasked.
        resp.headers["WWW-Authenticate"] = 'Bearer realm="gateway"'
    elif isinstance(exc, e.TooManyRequests) and exc.retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, exc.retry_after))
    elif isinstance(exc, e.ServiceUnavailable) and exc.error == "service_unavailable":
        resp.headers["Retry-After"] = UNAVAILABLE_RETRY_AFTER  # not for "not_configured"
    return resp


# SQLSTATEs of a database that is not there right now (shutting down, starting up, out of
# connections, the connection lost) rather than of a bad statement: 503, retry later.
UNAVAILABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error: the driver's error or the one it was raised from
    (asyncpg's errors reach SQLAlchemy as a generic ``Error`` carrying it)."""
    seen = exc
    for _ in range(3):
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str):
            return code
        cause = seen.__cause__
        if cause is None:
            return None
        seen = cause
    return None


def _unavailable(exc: DBAPIError) -> bool:
    """Tell whether a database error means "unreachable" (503) rather than a bug (500)."""
    if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
        return True
    code = _sqlstate(exc.orig) if exc.orig is not None else None
    return code is not None and code.startswith(UNAVAILABLE_SQLSTATES)


def _client_gone(request: web.Request) -> bool:
    """Whether the client's own connection is closed (a reset or timeout was theirs)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _unavailable_response(request: web.Request, exc: BaseException) -> web.Response:
    log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
    resp = error_response(503, "service_unavailable", "The database is unavailable; retry.")
    resp.headers["Retry-After"] = UNAVAILABLE_RETRY_AFTER
    return resp


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


STREAM_STARTED: web.RequestKey[bool] = web.RequestKey("gateway_stream_started", bool)


async def mark_stream_started(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the response's headers are going out.  When that happens
    inside the handler (a streamed answer: a feed), an error can no longer be answered."""
    request[STREAM_STARTED] = True


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a CouchDB-shaped JSON body; never leak internals.

    An error after the handler started a streamed answer cannot be answered (a second
    response would be written into the first one's body, and a client reading it would
    wait forever): the connection is cut instead, so the client sees a truncated response
    and retries, as CouchDB clients do."""
    try:
        return await handler(request)
    except Exception as exc:
        resp = _answer(request, exc)
        if resp is None:
            raise
    if request.get(STREAM_STARTED) and request.transport is not None:
        request.transport.abort()
    return resp


def _answer(request: web.Request, exc: Exception) -> web.Response | None:
    """The error response for ``exc``; None when it must propagate (a redirect, a client
    that is gone)."""
    if isinstance(exc, e.GatewayError):
        return response_for(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        name = HTTP_ERROR_NAMES.get(exc.status, "error")
        reason = exc.reason if exc.status != 413 else "The request entity is too large."
        resp = error_response(exc.status, name, reason)
        for header in ("Allow", "Retry-After"):
            if header in exc.headers:
                resp.headers[header] = exc.headers[header]
        return resp
    if isinstance(exc, (ConnectionResetError, TimeoutError)):
        if _client_gone(request):
            return None  # nobody to answer
        # the database (or another dependency) reset the connection or did not answer
        return _unavailable_response(request, exc)
    if isinstance(exc, (DBAPIError, OSError, PoolTimeout)):
        if isinstance(exc, DBAPIError) and not _unavailable(exc):
            log.exception("database error on %s %s", request.method, request.path)
            return error_response(500, "internal_server_error", "An internal error occurred.")
        # PoolTimeout: every pooled connection stayed busy for the pool's timeout
        return _unavailable_response(request, exc)
    log.exception(
        "unhandled error on %s %s",
        request.method,
        request.path,
        extra={"request_id": request_id.get()},  # also for handlers without our formatter
    )
    return error_response(500, "internal_server_error", "An internal error occurred.")
