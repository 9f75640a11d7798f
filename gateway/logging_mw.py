"""The outermost middleware: request id, per-request metrics and one access-log line.

The request id is the client's ``X-Request-Id`` when it is a sane token (1 to 128 printable
ASCII characters, no spaces), else 16 fresh random bytes in hex (as unique as a uuid4, at a
sixth of its cost on every request, and telling nothing about the instance or its traffic).
It is echoed in the response's ``X-Request-Id`` (streamed feeds too: it is added as any
response is prepared) and set in
``gateway.logs.request_id`` for every line logged while the request is served.

The access line carries method, route pattern, path, status, duration, user and database,
never headers, cookies, query strings or bodies (where credentials and tokens travel).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.auth import CTX_KEY
from gateway.logs import request_id
from gateway.metrics import METRICS, Metrics, metrics_of, route_label

log = logging.getLogger("gateway.access")

HEADER = "X-Request-Id"
REQUEST_ID_KEY = "gateway_request_id"
_SANE_ID = re.compile(r"[!-~]{1,128}")
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})  # probes: logged at DEBUG
CLIENT_GONE = 499  # nginx's status for a client that closed the connection first

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def incoming_id(value: str | None) -> str | None:
    """The client's request id if it is a sane token, else None."""
    return value if value is not None and _SANE_ID.fullmatch(value) else None


def new_request_id() -> str:
    """A fresh request id: 32 random hex digits."""
    return os.urandom(16).hex()


def current_request_id(request: web.Request) -> str | None:
    return request.get(REQUEST_ID_KEY)


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Assign the request id, time the request, count it and log it."""
    rid = incoming_id(request.headers.get(HEADER)) or new_request_id()
    request[REQUEST_ID_KEY] = rid
    token = request_id.set(rid)
    start = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:  # redirects and anything the error middleware let by
        status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        status = CLIENT_GONE
        raise
    finally:
        _finish(request, status, time.perf_counter() - start)
        request_id.reset(token)


def _finish(request: web.Request, status: int, seconds: float) -> None:
    route = route_label(request)
    metrics = metrics_of(request.app)
    if metrics is not None:
        metrics.observe_request(request.method, route, status, seconds)
        if request.method == "GET" and status == 200 and _is_doc_read(route):
            metrics.docs_read.labels(request.match_info.get("db", "")).inc()
    ctx = request.get(CTX_KEY)
    level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        "%s %s %s",
        request.method,
        route,
        status,
        extra={
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "user": ctx.user.name if ctx is not None else None,
            "db": request.match_info.get("db"),
        },
    )


def _is_doc_read(route: str) -> bool:
    """``GET /{db}/{docid}`` and ``GET /{db}/_design/{ddoc}`` (one document served)."""
    return route in ("/{db}/{docid}", "/{db}/_design/{ddoc}")


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(REQUEST_ID_KEY)
    if rid is not None and HEADER not in response.headers:
        response.headers[HEADER] = rid


def setup_observability(app: web.Application) -> None:
    """Give ``app`` its metrics registry and echo request ids on every response."""
    app[METRICS] = Metrics()
    app.on_response_prepare.append(_echo_request_id)
