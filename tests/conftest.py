"""Shared fixtures: a migrated database per test on the chosen backend, app clients, users.

Choose the backend with ``GATEWAY_TEST_BACKEND=sqlite`` (default, the embedded store) or
``GATEWAY_TEST_BACKEND=postgres`` (``GATEWAY_TEST_PG_URL``, default the local ``test``
database).  Each test gets a database migrated to head: SQLite copies a migrated template
file; PostgreSQL is migrated once per session and truncated before each test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.migrate import downgrade, upgrade
from gateway.settings import Settings
from schema.engine import make_engine
from schema.tables import metadata, users
from schema.users import hash_password
from tests.helpers import PASSWORD, Couch

BACKEND = os.environ.get("GATEWAY_TEST_BACKEND", "sqlite")
PG_URL = os.environ.get("GATEWAY_TEST_PG_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test")
USERS = {"admin": "admin", "manager": "manager", "alice": "inspector", "bob": "inspector"}


def pytest_report_header(config: pytest.Config) -> str:
    return f"gateway backend: {BACKEND}" + (f" ({PG_URL})" if BACKEND == "postgres" else "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BACKEND != "postgres":
        skip = pytest.mark.skip(reason="needs GATEWAY_TEST_BACKEND=postgres")
        for item in items:
            if "postgres_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "gateway.sqlite3"

    async def migrate() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return path


@pytest.fixture(scope="session")
def pg_migrated() -> str:
    async def migrate() -> None:
        engine = make_engine(PG_URL)
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return PG_URL


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database migrated to head, empty but for the test users."""
    if BACKEND == "postgres":
        return request.getfixturevalue("pg_migrated")
    template = request.getfixturevalue("sqlite_template")
    target = tmp_path / "gateway.sqlite3"
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
async def engine(database_url: str, password_hash: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=5)
    if BACKEND == "postgres":
        names = ", ".join(t.name for t in metadata.sorted_tables if t.name != "alembic_version")
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    async with engine.begin() as conn:
        await conn.execute(
            users.insert(),
            [{"name": n, "role": r, "password_hash": password_hash} for n, r in USERS.items()],
        )
    yield engine
    await engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        secret_key="test-secret-key-that-is-long-enough-for-hs256",
        cors_origins=("http://app.example",),
        feed_poll_seconds=0.5,
        db_pool_size=5,
    )


@pytest.fixture
def patient_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that assert exact counts shared through a reachable Redis: a request-path
    command slower than the app's 1 s bound makes it count in process for a while (right,
    and tested with unreachable and hung Redis servers), which a stall of a loaded machine
    must not bring about here.  Apps created after this fixture wait up to 10 s."""
    import gateway.app

    monkeypatch.setattr(gateway.app, "REDIS_TIMEOUT_SECONDS", 10.0)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, engine: AsyncEngine) -> Any:
    from gateway.app import create_app

    return await aiohttp_client(create_app(settings, migrate=False))


@pytest.fixture
def admin(client: Any) -> Couch:
    return Couch(client, "admin")


@pytest.fixture
def manager(client: Any) -> Couch:
    return Couch(client, "manager")


@pytest.fixture
def alice(client: Any) -> Couch:
    return Couch(client, "alice")


@pytest.fixture
def bob(client: Any) -> Couch:
    return Couch(client, "bob")


@pytest.fixture
def anon(client: Any) -> Couch:
    return Couch(client, None)


@pytest.fixture
async def db(admin: Couch) -> str:
    """A shared-mode database named ``field``."""
    await admin.put("/field?access_mode=shared", expected_status=201)
    return "field"


@pytest.fixture(autouse=True)
def _no_env_leak(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("GATEWAY_DATABASE_URL", "GATEWAY_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    yield


__all__ = ["downgrade"]
