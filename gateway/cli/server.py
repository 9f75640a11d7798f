"""``gateway serve``, ``gateway config`` and ``gateway db upgrade|downgrade``."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import click
import orjson
from alembic.util.exc import CommandError

from gateway.cli.common import settings_of
from gateway.cli.root import main
from gateway.migrate import downgrade as alembic_downgrade
from gateway.migrate import upgrade as alembic_upgrade
from gateway.settings import Settings
from schema.engine import make_engine


@main.command()
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65_535), default=None, help="Port to listen on (default 5984)."
)
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the HTTP server."""
    from aiohttp import web

    from gateway.app import create_app
    from gateway.logs import configure_logging

    settings = settings_of(ctx)
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    tune_gc()
    where = f"{host or settings.host}:{port or settings.port}"
    try:
        web.run_app(
            app,
            loop=_event_loop(),
            host=host or settings.host,
            port=port or settings.port,
            access_log=None,
            print=lambda _msg: click.echo(f"gateway listening on http://{where}"),
        )
    except OSError as exc:  # the port is taken, the address is not this machine's, ...
        raise click.ClickException(f"cannot listen on {where}: {exc.strerror or exc}") from exc


GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython's default: 700)


def tune_gc() -> None:
    """Keep the garbage collector off the request path (a server's own CPU, a few percent).

    Everything imported and built so far (modules, the app, its routes, SQLAlchemy's
    metadata) lives as long as the process: ``gc.freeze`` moves it out of every future
    collection, which then only walks what requests create.  Collections of the young
    generation come every 10,000 allocations instead of 700: a request's short-lived
    objects are mostly freed by reference counting before any collection sees them.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (about a tenth less CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@main.command("config")
@click.pass_context
def config_cmd(ctx: click.Context) -> None:
    """Print the effective settings (secrets masked)."""
    click.echo(orjson.dumps(settings_of(ctx).masked(), option=orjson.OPT_INDENT_2).decode())


@main.group()
def db() -> None:
    """Database schema migrations (alembic)."""


def _migrate(settings: Settings, action: Callable[[Any], Awaitable[None]]) -> None:
    async def main() -> None:
        engine = make_engine(settings.database_url)
        try:
            await action(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(main())
    except CommandError as exc:  # an unknown revision, say: alembic's words, no traceback
        raise click.ClickException(str(exc)) from exc


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the configured database up to REVISION (default: head)."""
    _migrate(settings_of(ctx), lambda engine: alembic_upgrade(engine, revision))
    click.echo(f"database upgraded to {revision}")


@db.command("downgrade")
@click.argument("revision")
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the configured database down to REVISION."""
    _migrate(settings_of(ctx), lambda engine: alembic_downgrade(engine, revision))
    click.echo(f"database downgraded to {revision}")
