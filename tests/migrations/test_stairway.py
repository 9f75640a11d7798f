"""The alembic "stairway": every migration upgrades, downgrades and upgrades again."""

from __future__ import annotations

import pytest
from alembic.script import Script, ScriptDirectory
from sqlalchemy import inspect

from gateway.migrate import alembic_config, downgrade, upgrade
from schema.engine import make_engine
from schema.tables import metadata

REVISIONS: list[Script] = list(
    reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions("base", "heads")))
)


@pytest.fixture
async def blank_engine(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    await downgrade(engine, "base")
    yield engine
    await upgrade(engine)  # leave the shared PostgreSQL database at head for other tests
    await engine.dispose()


@pytest.mark.parametrize("revision", REVISIONS, ids=lambda r: r.revision)
async def test_migration_stairway(blank_engine, revision: Script) -> None:  # type: ignore[no-untyped-def]
    await upgrade(blank_engine, revision.revision)
    await downgrade(blank_engine, revision.down_revision or "base")
    await upgrade(blank_engine, revision.revision)


async def test_head_matches_the_declared_tables(blank_engine) -> None:  # type: ignore[no-untyped-def]
    await upgrade(blank_engine, "head")
    async with blank_engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {t.name for t in metadata.sorted_tables} <= tables


async def test_autogenerate_finds_nothing_to_change_at_head(blank_engine) -> None:  # type: ignore[no-untyped-def]
    """The migrations build exactly what ``schema.tables`` declares for the dialect (on
    PostgreSQL without the three foreign keys its triggers replace), so the next
    ``alembic revision --autogenerate`` starts from a clean slate."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from schema.tables import declared_for

    await upgrade(blank_engine, "head")

    def compare(sync_conn):  # type: ignore[no-untyped-def]
        opts = {"include_object": declared_for(sync_conn.dialect.name), "compare_type": False}
        return compare_metadata(MigrationContext.configure(sync_conn, opts=opts), metadata)

    async with blank_engine.connect() as conn:
        assert await conn.run_sync(compare) == []
