"""The ``gateway`` command group; its subcommands live in the sibling modules."""

from __future__ import annotations

import click

from gateway.settings import ensure_data_dir, load_settings


@click.group()
@click.option("--database-url", envvar="GATEWAY_DATABASE_URL", default=None, help="Database URL.")
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """CouchDB-style replication gateway."""
    settings = ensure_data_dir(load_settings(database_url=database_url))
    ctx.ensure_object(dict)
    ctx.obj["settings"] = settings
