"""``gateway tombstones``, ``gateway idempotency`` and ``gateway changes``: upkeep and watching."""

from __future__ import annotations

import asyncio

import click

from gateway.cli.common import _table, run_db, settings_of
from gateway.cli.root import main
from gateway.migrate import upgrade as alembic_upgrade
from replication import GatewayError
from schema.engine import make_engine
from schema.tombstones import PurgeReport, parse_age, purge_tombstones


@main.group("tombstones")
def tombstones_group() -> None:
    """Deleted documents (tombstones)."""


@tombstones_group.command("purge")
@click.option("--db", "db_name", default=None, help="Only this database (default: all).")
@click.option("--older-than", "older_than", required=True, help="Age, e.g. 90d, 12h, 30m.")
@click.option("--dry-run", is_flag=True, help="Report what would be purged; change nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Also purge tombstones registered checkpoints have not passed (those replicas "
    "will be told to reset).",
)
@click.pass_context
def tombstones_purge(
    ctx: click.Context, db_name: str | None, older_than: str, dry_run: bool, force: bool
) -> None:
    """Remove old tombstones that every registered replica has already seen."""
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    settings = settings_of(ctx)

    async def main() -> list[PurgeReport]:
        engine = make_engine(settings.database_url)
        try:
            if settings.is_embedded:
                await alembic_upgrade(engine)
            return await purge_tombstones(engine, db_name, age, dry_run=dry_run, force=force)
        finally:
            await engine.dispose()

    try:
        reports = asyncio.run(main())
    except GatewayError as exc:
        raise click.ClickException(exc.reason) from exc
    header = ("DB", "OLD TOMBSTONES", "PURGED" if not dry_run else "WOULD PURGE", "KEPT",
              "OLDEST CHECKPOINT", "PURGE SEQ")  # fmt: skip
    _table(
        [header]
        + [
            (r.db, r.eligible, r.purged, r.protected,
             "-" if r.horizon is None else r.horizon, r.purge_seq)
            for r in reports
        ]
    )  # fmt: skip
    kept = sum(r.protected for r in reports)
    if kept and not force:
        click.echo(
            f"kept {kept} tombstone(s) that registered checkpoints have not passed yet "
            "(see `gateway checkpoints list`; --force purges them and those replicas must reset)"
        )


@main.group("idempotency")
def idempotency_group() -> None:
    """Stored Idempotency-Key answers."""


@idempotency_group.command("purge")
@click.option("--dry-run", is_flag=True, help="Count the expired keys; delete nothing.")
@click.pass_context
def idempotency_purge(ctx: click.Context, dry_run: bool) -> None:
    """Delete expired Idempotency-Key rows (expired keys already count as absent)."""
    from schema.idempotency import purge_expired

    count = run_db(settings_of(ctx), lambda c: purge_expired(c, dry_run=dry_run))
    if dry_run:
        click.echo(f"would purge {count} expired idempotency key(s)")
    else:
        click.echo(f"purged {count} expired idempotency key(s)")


@main.command("changes")
@click.option("--db", "db_name", required=True, help="The database to read.")
@click.option("--since", default="0", help="Start after this seq, or `now`.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new changes as they come.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after N changes.")
@click.pass_context
def changes_cmd(
    ctx: click.Context, db_name: str, since: str, follow: bool, limit: int | None
) -> None:
    """Print a database's changes feed, one JSON object per line (Ctrl-C stops --follow)."""
    from gateway.tail import tail_changes

    if since != "now" and not (since.isascii() and since.isdigit()):
        raise click.BadParameter("a seq number or `now`", param_hint="--since")
    settings = settings_of(ctx)

    def emit(line: bytes) -> None:
        click.echo(line.decode())

    try:
        asyncio.run(
            tail_changes(settings, db_name, since=since, follow=follow, limit=limit, emit=emit)
        )
    except GatewayError as exc:
        raise click.ClickException(exc.reason) from exc
    except KeyboardInterrupt:
        pass
