"""Typed application state (``web.AppKey``): everything the app holds lives here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.auth import PasswordCache
    from gateway.callers import RememberedCallers
    from gateway.notifier import FeedNotifier
    from gateway.ratelimit import RateLimiter
    from gateway.settings import Settings

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
ENGINE: web.AppKey[AsyncEngine] = web.AppKey("engine", AsyncEngine)
NOTIFIER: web.AppKey[FeedNotifier] = web.AppKey("notifier")
PASSWORD_CACHE: web.AppKey[PasswordCache] = web.AppKey("password_cache")
REMEMBERED_CALLERS: web.AppKey[RememberedCallers] = web.AppKey("remembered_callers")
REDIS: web.AppKey[Redis | None] = web.AppKey("redis")  # shared client, None without Redis
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
