"""``create_app(settings)``: the aiohttp application, with resources in cleanup contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.auth import PasswordCache, auth_middleware
from gateway.cors import cors_middleware
from gateway.errors import error_middleware
from gateway.keys import ENGINE, NOTIFIER, PASSWORD_CACHE, SETTINGS
from gateway.migrate import upgrade
from gateway.notifier import FeedNotifier
from gateway.routes import setup_routes
from gateway.settings import Settings
from schema.engine import make_engine


def create_app(settings: Settings, *, migrate: bool | None = None) -> web.Application:
    """Build the application; the embedded default migrates its own database on start."""
    app = web.Application(
        middlewares=[cors_middleware, error_middleware, auth_middleware],
        client_max_size=settings.max_request_bytes,
    )
    app[SETTINGS] = settings
    app[PASSWORD_CACHE] = PasswordCache()
    app[NOTIFIER] = FeedNotifier(settings.redis_url)
    should_migrate = settings.is_embedded if migrate is None else migrate
    app.cleanup_ctx.append(_engine_ctx(should_migrate))
    app.cleanup_ctx.append(_notifier_ctx)
    setup_routes(app)
    return app


def _engine_ctx(should_migrate: bool):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        if should_migrate:
            await upgrade(engine)
        app[ENGINE] = engine
        yield
        await engine.dispose()

    return ctx


async def _notifier_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[NOTIFIER].start()
    yield
    await app[NOTIFIER].close()
