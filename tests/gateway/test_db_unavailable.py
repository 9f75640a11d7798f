"""The database away: every request that needs it is a 503 with ``Retry-After``."""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.app import create_app
from tests.helpers import Couch


async def test_requests_get_503_with_retry_after_while_the_database_is_away(
    aiohttp_client: Any, settings: Any
) -> None:
    away = dataclasses.replace(
        settings, database_url="postgresql+asyncpg://root@127.0.0.1:1/nowhere"
    )
    client = await aiohttp_client(create_app(away, migrate=False))
    alice = Couch(client, "alice")
    for method, path in (("GET", "/field/_changes"), ("PUT", "/field/doc"), ("GET", "/_all_dbs")):
        async with client.request(method, path, data=b"{}", headers=alice.headers()) as resp:
            body = await resp.json()
            assert resp.status == 503, (method, path, body)
            assert resp.headers["Retry-After"].isdigit()
            assert set(body) == {"error", "reason"}
    async with client.get("/readyz") as resp:
        assert resp.status == 503
    async with client.get("/healthz") as resp:
        assert resp.status == 200
