"""Test helpers: a small CouchDB client over the aiohttp test client, with expected statuses."""

from __future__ import annotations

import base64
from typing import Any

import orjson

PASSWORD = "correct horse battery staple"


def basic(name: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


class Couch:
    """Requests as one user; every call checks the status it expects."""

    def __init__(self, client: Any, user: str | None, password: str = PASSWORD) -> None:
        self.client = client
        self.user = user
        self.password = password

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.user is not None:
            headers["Authorization"] = basic(self.user, self.password)
        headers.update(extra or {})
        return headers

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        expected_status: int | None = 200,
        params: dict[str, str] | None = None,
    ) -> Any:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        async with self.client.request(
            method, path, data=data, headers=self.headers(headers), params=params
        ) as resp:
            content = await resp.read()
            if expected_status is not None:
                assert resp.status == expected_status, (resp.status, content[:2000])
            if resp.content_type == "application/json" and content:
                return orjson.loads(content)
            return content

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.request("GET", path, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        kw.setdefault("expected_status", 201)
        return await self.request("PUT", path, body, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return await self.request("POST", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> Any:
        return await self.request("DELETE", path, **kw)


class FakeClock:
    """A monotonic clock the test moves by hand (for limiters and caches)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def start_limited(
    aiohttp_client: Any, settings: Any, clock: FakeClock, limits: dict[str, Any], **changes: Any
) -> Any:
    """A test client for an app with the given limit settings; without Redis its rate
    limiter runs on ``clock``."""
    import dataclasses

    from gateway.app import create_app
    from gateway.keys import RATE_LIMITER, SETTINGS
    from gateway.ratelimit import MemoryLimiter

    app = create_app(dataclasses.replace(settings, **{**limits, **changes}), migrate=False)
    if not app[SETTINGS].redis_url:
        app[RATE_LIMITER] = MemoryLimiter(clock=clock)
    return await aiohttp_client(app)


def describe_diff(expected: dict[str, Any], actual: dict[str, Any], limit: int = 5) -> str:
    """How a replica (id -> state) differs from the server's, for an assertion message."""
    missing = sorted(expected.keys() - actual.keys())
    extra = sorted(actual.keys() - expected.keys())
    differing = sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k])
    parts = [f"{len(missing)} missing {missing[:limit]}", f"{len(extra)} extra {extra[:limit]}"]
    parts.append(f"{len(differing)} differing")
    parts += [f"  {k}: server {expected[k][:2]} replica {actual[k][:2]}" for k in differing[:limit]]
    return "\n".join(parts)
