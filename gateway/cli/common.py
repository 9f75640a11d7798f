"""Helpers every command group shares: the loaded settings, a write transaction, tables."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.migrate import upgrade as alembic_upgrade
from gateway.settings import Settings
from replication import GatewayError
from schema.engine import make_engine, write_transaction

T = TypeVar("T")


def settings_of(ctx: click.Context) -> Settings:
    """The settings the ``main`` group loaded."""
    return ctx.obj["settings"]


def run_db(settings: Settings, action: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run ``action`` in a write transaction (migrating the embedded default first)."""

    async def main() -> T:
        engine = make_engine(settings.database_url)
        try:
            if settings.is_embedded:
                await alembic_upgrade(engine)
            async with write_transaction(engine) as conn:
                return await action(conn)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except GatewayError as exc:
        raise click.ClickException(exc.reason) from exc


def _table(rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
