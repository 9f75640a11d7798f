"""CORS for browser PouchDB: preflights, credentials, and headers on every kind of answer.

The ``settings`` fixture allows the origin ``http://app.example``.
"""

from __future__ import annotations

import dataclasses

import pytest

from gateway.app import create_app
from tests.helpers import basic

ALLOWED = "http://app.example"
OTHER = "http://evil.example"


def preflight_headers(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


def listed(header: str | None) -> set[str]:
    return {item.strip().lower() for item in (header or "").split(",") if item.strip()}


async def preflight(client, path: str, origin: str, method: str = "POST"):
    async with client.options(path, headers=preflight_headers(origin, method)) as resp:
        await resp.read()
        return resp.status, resp.headers


@pytest.mark.parametrize("path", ["/", "/field", "/field/_changes", "/field/doc", "/_session"])
async def test_a_preflight_from_an_allowed_origin_is_granted(client, db, path):
    status, headers = await preflight(client, path, ALLOWED)
    assert 200 <= status < 300
    assert headers["Access-Control-Allow-Origin"] == ALLOWED
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert {"get", "head", "post", "put", "delete"} <= listed(
        headers["Access-Control-Allow-Methods"]
    )
    assert {"authorization", "content-type"} <= listed(headers["Access-Control-Allow-Headers"])


async def test_a_preflight_needs_no_credentials(client, db):
    status, headers = await preflight(client, "/field/_bulk_docs", ALLOWED)
    assert status != 401 and headers["Access-Control-Allow-Origin"] == ALLOWED


async def test_a_preflight_from_another_origin_is_not_allowed(client, db):
    _, headers = await preflight(client, "/field", OTHER)
    assert "Access-Control-Allow-Origin" not in headers
    assert "Access-Control-Allow-Credentials" not in headers


async def test_an_allowed_origin_is_echoed_on_an_ordinary_answer(client, db):
    headers = {"Origin": ALLOWED, "Authorization": basic("alice")}
    async with client.get("/field", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert "origin" in listed(resp.headers.get("Vary"))
        assert "etag" in listed(resp.headers.get("Access-Control-Expose-Headers"))


async def test_an_error_answer_carries_cors_headers_too(client, db):
    async with client.get("/field", headers={"Origin": ALLOWED}) as resp:
        assert resp.status == 401
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    headers = {"Origin": ALLOWED, "Authorization": basic("alice")}
    async with client.get("/field/missing", headers=headers) as resp:
        assert resp.status == 404
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED


@pytest.mark.parametrize("feed", ["normal", "longpoll", "continuous", "eventsource"])
async def test_streaming_changes_feeds_carry_cors_headers(client, db, feed):
    headers = {"Origin": ALLOWED, "Authorization": basic("alice")}
    path = f"/field/_changes?feed={feed}&timeout=10&since=now"
    async with client.get(path, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        await resp.read()


async def test_another_origin_gets_no_cors_headers_on_an_answer(client, db):
    headers = {"Origin": OTHER, "Authorization": basic("alice")}
    async with client.get("/field", headers=headers) as resp:
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with client.get("/field/_changes", headers=headers) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_no_origin_means_no_cors_headers(client, db):
    async with client.get("/field", headers={"Authorization": basic("alice")}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_wildcard_setting_echoes_the_callers_origin(aiohttp_client, settings, engine):
    app = create_app(dataclasses.replace(settings, cors_origins=("*",)), migrate=False)
    client = await aiohttp_client(app)
    status, headers = await preflight(client, "/", OTHER, "GET")
    assert 200 <= status < 300
    assert headers["Access-Control-Allow-Origin"] == OTHER
    assert headers["Access-Control-Allow-Credentials"] == "true"
