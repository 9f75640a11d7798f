"""Rate limits on the field API's sync and write routes, per user and per device (SPEC §7).

Counted: every request under ``/api/v1/sync/`` (the batch and the changes feed) and every
``POST``/``PUT``/``PATCH``/``DELETE`` under ``/api/v1/``, except the auth routes (login has
its own failed-login limits in ``gateway.auth``; refresh and logout are cheap and must stay
reachable for a client that is being throttled).  Each request counts once against its
user (``GATEWAY_WRITE_RATE_PER_USER`` per ``GATEWAY_WRITE_RATE_WINDOW_SECONDS``) and, when
it sends a valid ``X-Device-Id``, once against that device of that user
(``GATEWAY_WRITE_RATE_PER_DEVICE``): a runaway device is stopped at its own limit before it
uses up its user's budget, and a device id names a device *of the caller*, so nobody can
spend another user's budget by sending their device id.  Both are counted atomically or
not at all (``RateLimiter.acquire``); a refused request is answered 429
``too_many_requests`` with ``Retry-After`` and counts nothing.  0 disables a limit.

The counts are ``gateway.ratelimit``'s fixed windows: in Redis when configured (one Lua call
per request, shared by every instance), in process otherwise.  This middleware runs after
authentication and *before* the ``Idempotency-Key`` claim, so a replayed answer costs one
request like any other (a client that retries in a loop is throttled either way, and a
refused request never claims its key: its retry runs normally).

The CouchDB replication routes (``/{db}/_bulk_docs``, ``_revs_diff``, ``_changes``...) are
not limited here: PouchDB replicates in bursts of many requests and treats a 429 as a
failed replication, so they are bounded by the request and batch size limits instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.auth import CTX_KEY
from gateway.dbctx import device_of
from gateway.keys import RATE_LIMITER, SETTINGS
from gateway.ratelimit import Rule, key_part
from replication import TooManyRequests

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_PREFIX = "/api/v1/"
SYNC_PREFIX = "/api/v1/sync/"
EXCLUDED_PREFIX = "/api/v1/auth/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_limited(request: web.Request) -> bool:
    """Whether ``request`` counts against the write limits."""
    path = request.path
    if not path.startswith(API_PREFIX) or path.startswith(EXCLUDED_PREFIX):
        return False
    return request.method in MUTATING or path.startswith(SYNC_PREFIX)


def write_rules(request: web.Request, user_id: int) -> list[Rule]:
    """The limits one request of ``user_id`` counts against (none when disabled)."""
    settings = request.app[SETTINGS]
    window = settings.write_rate_window_seconds
    if window < 1:
        return []
    rules = []
    if settings.write_rate_per_user > 0:
        rules.append(Rule(f"api:user:{user_id}", settings.write_rate_per_user, window))
    device = device_of(request)
    if device is not None and settings.write_rate_per_device > 0:
        key = f"api:device:{user_id}:{key_part(device)}"
        rules.append(Rule(key, settings.write_rate_per_device, window))
    return rules


@web.middleware
async def write_rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse with 429 a sync or write request over its user's or device's limit."""
    ctx = request.get(CTX_KEY)
    if ctx is None or not is_limited(request):
        return await handler(request)
    decision = await request.app[RATE_LIMITER].acquire(write_rules(request, ctx.user.id))
    if not decision.allowed:
        raise TooManyRequests(
            f"Too many requests; retry in {decision.retry_after} seconds.",
            retry_after=decision.retry_after,
        )
    return await handler(request)
