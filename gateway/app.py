"""``create_app(settings)``: the aiohttp application, with resources in cleanup contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.auth import PasswordCache, auth_middleware
from gateway.callers import RememberedCallers
from gateway.cors import cors_middleware
from gateway.csrf import csrf_middleware
from gateway.errors import error_middleware, mark_stream_started
from gateway.idempotency import idempotency_middleware, stop_background
from gateway.keys import (
    ENGINE,
    NOTIFIER,
    PASSWORD_CACHE,
    RATE_LIMITER,
    REDIS,
    REMEMBERED_CALLERS,
    SETTINGS,
)
from gateway.logging_mw import request_middleware, setup_observability
from gateway.migrate import upgrade
from gateway.notifier import FeedNotifier
from gateway.protocol_errors import install as install_protocol_errors
from gateway.ratelimit import make_limiter
from gateway.ratelimit_mw import write_rate_limit_middleware
from gateway.restdb import READY, ensure_rest_databases
from gateway.routes import setup_routes
from gateway.settings import Settings
from gateway.stats import setup_stats
from gateway.urlcheck import url_middleware
from schema.engine import make_engine

if TYPE_CHECKING:
    from redis.asyncio import Redis

REDIS_TIMEOUT_SECONDS = 1.0  # request-path commands (rate limits, caches), not pub/sub


def create_app(settings: Settings, *, migrate: bool | None = None) -> web.Application:
    """Build the application; the embedded default migrates its own database on start."""
    install_protocol_errors()  # requests aiohttp cannot parse: JSON errors as well
    app = web.Application(
        # Rate limits count a request before its Idempotency-Key is claimed (replays count).
        middlewares=[
            request_middleware,  # request id, metrics, access log: sees every response
            cors_middleware,
            error_middleware,
            url_middleware,  # percent-escapes that are not UTF-8: 400
            auth_middleware,
            csrf_middleware,  # cookie-authenticated writes from foreign pages: 403
            write_rate_limit_middleware,
            idempotency_middleware,
        ],
        client_max_size=settings.max_request_bytes,
    )
    app[SETTINGS] = settings
    setup_observability(app)
    app.on_response_prepare.append(mark_stream_started)  # see error_middleware
    app[PASSWORD_CACHE] = PasswordCache()
    app[REMEMBERED_CALLERS] = RememberedCallers()
    app[NOTIFIER] = FeedNotifier(settings.redis_url, settings.feed_poll_seconds)
    app[READY] = set()
    app[REDIS] = redis_client(settings.redis_url)
    app[RATE_LIMITER] = make_limiter(app[REDIS])
    setup_stats(app)  # per-minute docs in/out for the dashboard (uses app[REDIS])
    should_migrate = settings.is_embedded if migrate is None else migrate
    app.cleanup_ctx.append(_engine_ctx(should_migrate))
    app.cleanup_ctx.append(_notifier_ctx)
    app.on_shutdown.append(_end_feeds)
    app.cleanup_ctx.append(_redis_ctx)
    setup_routes(app)
    return app


def _engine_ctx(should_migrate: bool):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        if should_migrate:
            await upgrade(engine)
        app[ENGINE] = engine
        await ensure_rest_databases(app)
        yield
        await stop_background(engine)  # claim renewals would reopen connections
        await engine.dispose()

    return ctx


async def _end_feeds(app: web.Application) -> None:
    """Shutting down: waiting feeds answer now rather than hold the shutdown to their
    timeout (their clients reconnect, to another instance)."""
    app[NOTIFIER].stop_listeners()


async def _notifier_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[NOTIFIER].start(app[ENGINE])
    yield
    await app[NOTIFIER].close()


def redis_client(url: str | None) -> Redis | None:
    """The shared Redis client for request-path commands, or None without Redis.

    Short timeouts and no retries: callers degrade when Redis is slow or gone (see
    ``gateway.ratelimit``) instead of holding the request.
    """
    if not url:
        return None
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return aioredis.from_url(
        url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    client = app[REDIS]
    if client is not None:
        await client.aclose()
