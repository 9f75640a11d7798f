"""How the gateway answers when a dependency fails under a request (in process, both
backends): a database that refuses, resets, times out, runs out of connections, shuts down
or starts up is a retryable 503 with ``Retry-After`` and a CouchDB body (a statement's own
error stays a 500 that tells nothing); a streamed answer that fails is cut, never followed
by a second response; health probes never need the database; and Cloudinary hanging makes
a photo confirmation a retryable 503 that records nothing.

The same faults against real processes, real PostgreSQL and Redis, under load:
``test_postgres_faults.py`` and ``test_redis_faults.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from urllib3.util.retry import Retry

from tests.fake_cloudinary import FakeCloudinary
from tests.helpers import Couch
from tests.reliability.fault_load import REQUEST_TIMEOUT, WAIT, Answer, auth, unavailable_problem
from tests.reliability.services import BlackHole


async def test_health_probes_never_look_at_credentials(
    aiohttp_client: Any, settings: Any, engine: Any
) -> None:
    """With the database unreachable, ``GET /healthz`` is 200 whatever credentials the probe
    sends (checking them needs the database) and ``/readyz`` is a 503 with Retry-After."""
    from gateway.app import create_app

    away = dataclasses.replace(settings, database_url="postgresql+asyncpg://root@127.0.0.1:1/x")
    client = await aiohttp_client(create_app(away, migrate=False))
    for headers in ({}, auth("alice"), {"Authorization": "Basic Z2FyYmFnZQ=="}):
        async with client.get("/healthz", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        async with client.get("/readyz", headers=headers) as resp:
            answer = Answer(resp.status, resp.headers, await resp.json())
            assert answer.status == 503 and unavailable_problem(answer) is None, answer


def failing_app(failure: BaseException) -> web.Application:
    """The gateway's error middleware around handlers that fail with ``failure``: one at
    once, one after it started streaming its answer (as a feed does)."""
    from gateway.errors import error_middleware, mark_stream_started

    async def at_once(request: web.Request) -> web.StreamResponse:
        raise failure

    async def streaming(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"seq":1,"id":"a","changes":[]}\n')
        raise failure

    app = web.Application(middlewares=[error_middleware])
    app.on_response_prepare.append(mark_stream_started)
    app.router.add_get("/at-once", at_once)
    app.router.add_get("/streaming", streaming)
    return app


def database_error(sqlstate: str) -> DBAPIError:
    """What SQLAlchemy raises for an asyncpg error with ``sqlstate`` (asyncpg's error as the
    cause of the driver-level one)."""
    driver_error = Exception("driver error")
    driver_error.__cause__ = asyncpg.PostgresError.get_message_class_for_sqlstate(sqlstate)("x")
    return DBAPIError("SELECT 1", None, driver_error)


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(ConnectionRefusedError(111, "Connection refused"), id="refused"),
        # the database's connection reset, not the client's
        pytest.param(ConnectionResetError(104, "Connection reset by peer"), id="reset"),
        pytest.param(TimeoutError(), id="timeout"),
        pytest.param(PoolTimeout("QueuePool limit reached"), id="pool-exhausted"),
        pytest.param(database_error("57P01"), id="admin-shutdown"),
        pytest.param(database_error("57P03"), id="starting-up"),
        pytest.param(database_error("08006"), id="connection-failure"),
        pytest.param(database_error("53300"), id="too-many-connections"),
    ],
)
async def test_a_dependency_failing_under_a_handler_is_a_retryable_503(
    aiohttp_client: Any, failure: BaseException
) -> None:
    """A database that refuses, resets, times out, has no connection left or is shutting
    down or starting up: 503 with Retry-After and a CouchDB body, never a 500 or aiohttp's
    plain-text error."""
    client = await aiohttp_client(failing_app(failure))
    async with client.get("/at-once") as resp:
        answer = Answer(resp.status, resp.headers, await resp.json())
    assert answer.status == 503 and unavailable_problem(answer) is None, answer


async def test_a_database_bug_is_still_a_500_that_tells_nothing(aiohttp_client: Any) -> None:
    """An error of the statement itself (here a unique violation) is not "unavailable":
    500, a CouchDB body, no detail."""
    client = await aiohttp_client(failing_app(database_error("23505")))
    async with client.get("/at-once") as resp:
        assert resp.status == 500
        assert await resp.json() == {
            "error": "internal_server_error",
            "reason": "An internal error occurred.",
        }


async def test_a_failure_after_a_stream_started_cuts_the_connection(
    aiohttp_client: Any, settings: Any, engine: Any
) -> None:
    """A handler failing after it started streaming (a feed whose database went away) gets
    its connection cut: the client sees a truncated response at once, instead of a second
    response written into the first one's body and a wait that never ends (what a
    continuous-feed reader got before); the gateway's app installs the hook."""
    from gateway.app import create_app
    from gateway.errors import mark_stream_started

    assert mark_stream_started in create_app(settings, migrate=False).on_response_prepare
    client = await aiohttp_client(failing_app(ConnectionRefusedError(111, "refused")))
    timeout = aiohttp.ClientTimeout(total=WAIT)
    lines = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.get("/streaming", timeout=timeout) as resp:
            assert resp.status == 200
            async for line in resp.content:
                lines.append(line)
    assert lines == [b'{"seq":1,"id":"a","changes":[]}\n']
    async with client.get("/at-once", timeout=timeout) as resp:  # the server goes on
        assert resp.status == 503


async def test_a_hung_cloudinary_makes_confirm_a_503_that_the_same_key_retries(
    aiohttp_client: Any, settings: Any, engine: Any
) -> None:
    """Cloudinary accepting connections but never answering: ``POST /api/v1/photos/confirm``
    answers 503 with Retry-After (bounded by the configured timeout, no hang), records
    nothing and keeps nothing under its ``Idempotency-Key``; once Cloudinary answers again,
    the client's retry with the same key confirms the photo (201), and a further retry
    replays that answer without recording a second photo."""
    from gateway.app import create_app

    hole = BlackHole()
    port = await hole.start()
    fake = FakeCloudinary()
    hung = dataclasses.replace(
        settings, cloudinary_url=fake.cloudinary_url,
        cloudinary_api_base=f"http://127.0.0.1:{port}", cloudinary_timeout_seconds=1.0,
    )  # fmt: skip
    alice = Couch(await aiohttp_client(create_app(hung, migrate=False)), "alice")
    made = await alice.post("/api/v1/inspections", {"title": "x"}, expected_status=201)
    body = {"inspection_id": made["id"], "public_id": f"inspections/{made['id']}/photo"}
    photos = f"/api/v1/inspections/{made['id']}/photos"

    async def confirm() -> Answer:
        headers = alice.headers({"Idempotency-Key": "confirm-once"})
        async with alice.client.post(
            "/api/v1/photos/confirm", data=orjson.dumps(body), headers=headers,
            timeout=REQUEST_TIMEOUT,
        ) as resp:  # fmt: skip
            return Answer(resp.status, resp.headers, await resp.json())

    try:
        answer = await confirm()
        assert answer.status == 503 and unavailable_problem(answer) is None, answer
        assert hole.connections >= 1  # it did ask Cloudinary
        assert (await alice.get(photos))["results"] == []
        # the library's pool retries a read timeout, in a thread the gateway stopped waiting
        # for: let those attempts time out here, so none of them reaches Cloudinary once back
        attempts = Retry.DEFAULT.total + 1
        await asyncio.wait_for(hole.until_hung_up(attempts), attempts * 1.0 + WAIT)
    finally:
        await hole.stop()
    fake.port = port  # Cloudinary is back, where it was
    await fake.start()
    try:
        fake.add_asset(body["public_id"])
        answer = await confirm()
        assert answer.status == 201 and "Idempotent-Replayed" not in answer.headers, answer
        again = await confirm()
        assert (again.status, again.headers["Idempotent-Replayed"]) == (201, "true")
        assert again.body == answer.body
        assert (await alice.get(photos))["results"] == [answer.body]
        assert fake.lookups == 1
    finally:
        await fake.stop()
