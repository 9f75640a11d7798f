"""The ``gateway`` command: serve, migrate, manage users and databases, print settings."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.migrate import downgrade as alembic_downgrade
from gateway.migrate import upgrade as alembic_upgrade
from gateway.settings import Settings, ensure_data_dir, load_settings
from replication import GatewayError
from replication.conflicts import STRATEGIES
from schema import checkpoints as cps
from schema import conflicts as conflict_repo
from schema import databases as dbs
from schema import users as users_repo
from schema.engine import make_engine, write_transaction
from schema.resolve import resolve_record
from schema.tombstones import PurgeReport, parse_age, purge_tombstones

T = TypeVar("T")


def _settings(ctx: click.Context) -> Settings:
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


@click.group()
@click.option("--database-url", envvar="GATEWAY_DATABASE_URL", default=None, help="Database URL.")
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """CouchDB-style replication gateway."""
    settings = ensure_data_dir(load_settings(database_url=database_url))
    ctx.ensure_object(dict)
    ctx.obj["settings"] = settings


@main.command()
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 5984).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the HTTP server."""
    from aiohttp import web

    from gateway.app import create_app
    from gateway.logs import configure_logging

    settings = _settings(ctx)
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    web.run_app(
        app,
        loop=_event_loop(),
        host=host or settings.host,
        port=port or settings.port,
        access_log=None,
        print=lambda _msg: click.echo(
            f"gateway listening on http://{host or settings.host}:{port or settings.port}"
        ),
    )


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
    click.echo(orjson.dumps(_settings(ctx).masked(), option=orjson.OPT_INDENT_2).decode())


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

    asyncio.run(main())


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the configured database up to REVISION (default: head)."""
    _migrate(_settings(ctx), lambda engine: alembic_upgrade(engine, revision))
    click.echo(f"database upgraded to {revision}")


@db.command("downgrade")
@click.argument("revision")
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the configured database down to REVISION."""
    _migrate(_settings(ctx), lambda engine: alembic_downgrade(engine, revision))
    click.echo(f"database downgraded to {revision}")


@main.group()
def users() -> None:
    """Manage users."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(users_repo.ROLES), required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.pass_context
def users_add(ctx: click.Context, name: str, role: str, password: str) -> None:
    """Create user NAME with ROLE."""
    user = run_db(_settings(ctx), lambda c: users_repo.create_user(c, name, password, role))
    click.echo(f"created user {user.name} ({user.role})")


@users.command("list")
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """List users."""
    found = run_db(_settings(ctx), users_repo.list_users)
    rows = [("NAME", "ROLE", "STATUS")] + [
        (u.name, u.role, "disabled" if u.disabled else "active") for u in found
    ]
    _table(rows)


@users.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(users_repo.ROLES))
@click.pass_context
def users_set_role(ctx: click.Context, name: str, role: str) -> None:
    """Change the role of user NAME."""
    run_db(_settings(ctx), lambda c: users_repo.set_role(c, name, role))
    click.echo(f"{name} is now {role}")


@users.command("disable")
@click.argument("name")
@click.pass_context
def users_disable(ctx: click.Context, name: str) -> None:
    """Disable user NAME (effective on their next request)."""
    run_db(_settings(ctx), lambda c: users_repo.set_disabled(c, name, True))
    click.echo(f"{name} disabled")


@main.command("token")
@click.argument("name")
@click.pass_context
def token_cmd(ctx: click.Context, name: str) -> None:
    """Print a fresh access token for user NAME (for scripts and dashboards)."""
    from gateway.tokens import make_access_token

    settings = _settings(ctx)
    user = run_db(settings, lambda c: users_repo.get_user_by_name(c, name))
    if user.disabled:
        raise click.ClickException(f"user {name} is disabled")
    token, _ = make_access_token(settings.secret_key, user, settings.access_token_ttl_seconds)
    click.echo(token)


@main.group("dbs")
def dbs_group() -> None:
    """Manage databases."""


@dbs_group.command("create")
@click.argument("name")
@click.option("--access-mode", type=click.Choice(dbs.ACCESS_MODES), default="owned")
@click.pass_context
def dbs_create(ctx: click.Context, name: str, access_mode: str) -> None:
    """Create database NAME."""
    run_db(_settings(ctx), lambda c: dbs.create_database(c, name, access_mode=access_mode))
    click.echo(f"created database {name} ({access_mode})")


@dbs_group.command("set-policy")
@click.argument("name")
@click.argument("policy", type=click.Choice(dbs.CONFLICT_POLICIES))
@click.pass_context
def dbs_set_policy(ctx: click.Context, name: str, policy: str) -> None:
    """Set how database NAME resolves new conflicts (manual, merge, server_wins, client_wins)."""
    run_db(_settings(ctx), lambda c: dbs.set_conflict_policy(c, name, policy))
    click.echo(f"{name}: conflict_policy is now {policy}")


@dbs_group.command("list")
@click.pass_context
def dbs_list(ctx: click.Context) -> None:
    """List databases."""
    for name in run_db(_settings(ctx), dbs.list_databases):
        click.echo(name)


@main.group("checkpoints")
def checkpoints_group() -> None:
    """Replication checkpoints: report and reset."""


def _checkpoint_rows(found: list[cps.Checkpoint]) -> list[tuple[Any, ...]]:
    header = ("USER", "DB", "ID", "SEQ", "DB SEQ", "LAG", "UPDATED")
    return [header] + [
        (
            c.user,
            c.db,
            c.id,
            "-" if c.seq is None else c.seq,
            c.db_seq,
            "-" if c.lag is None else c.lag,
            c.as_json()["updated_at"] or "-",
        )
        for c in found
    ]


@checkpoints_group.command("list")
@click.option("--user", default=None, help="Only this user's checkpoints.")
@click.option("--db", "db_name", default=None, help="Only this database's checkpoints.")
@click.pass_context
def checkpoints_list(ctx: click.Context, user: str | None, db_name: str | None) -> None:
    """List checkpoints: user, database, id, recorded seq, database seq, lag, last update."""
    found = run_db(_settings(ctx), lambda c: cps.list_checkpoints(c, user, db_name))
    if not found:
        click.echo("no checkpoints")
        return
    _table(_checkpoint_rows(found))


@checkpoints_group.command("reset")
@click.option("--user", required=True, help="Whose checkpoints to reset.")
@click.option("--db", "db_name", default=None, help="Only in this database.")
@click.option("--id", "doc_id", default=None, help="Only this checkpoint id.")
@click.option("--to-seq", type=click.IntRange(min=0), default=None, help="Rewind to N.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def checkpoints_reset(
    ctx: click.Context,
    user: str,
    db_name: str | None,
    doc_id: str | None,
    to_seq: int | None,
    yes: bool,
) -> None:
    """Delete (or rewind to N) a user's checkpoints: their next replication starts over."""
    settings = _settings(ctx)

    def reset(dry_run: bool) -> list[cps.Checkpoint]:
        return run_db(
            settings,
            lambda c: cps.reset_checkpoints(c, user, db_name, doc_id, to_seq, dry_run=dry_run),
        )

    verb = "delete" if to_seq is None else f"rewind to seq {to_seq}"
    if not yes:
        planned = reset(dry_run=True)
        if not planned:
            click.echo("nothing to reset")
            return
        _table(_checkpoint_rows(planned))
        click.confirm(f"{verb} these {len(planned)} checkpoint(s)?", abort=True)
    changed = reset(dry_run=False)
    if not changed:
        click.echo("nothing to reset")
        return
    _table(_checkpoint_rows(changed))
    done = "deleted" if to_seq is None else f"rewound to seq {to_seq}"
    click.echo(f"{done}: {len(changed)} checkpoint(s) of {user}")


@main.group("conflicts")
def conflicts_group() -> None:
    """ConflictRecords: list, show, resolve."""


@conflicts_group.command("list")
@click.option("--db", "db_name", default=None, help="Only this database.")
@click.option("--status", type=click.Choice(conflict_repo.STATUSES), default=None)
@click.option("--doc", "doc_id", default=None, help="Only this document id.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_context
def conflicts_list(
    ctx: click.Context, db_name: str | None, status: str | None, doc_id: str | None, limit: int
) -> None:
    """List ConflictRecords (oldest first)."""
    found = run_db(
        _settings(ctx),
        lambda c: conflict_repo.list_conflicts(
            c, db=db_name, status=status, doc_id=doc_id, limit=limit
        ),
    )
    if not found:
        click.echo("no conflicts")
        return
    header = ("ID", "DB", "DOC", "STATUS", "STRATEGY", "MINE", "THEIRS", "PUSHED BY", "CREATED")
    _table(
        [header]
        + [
            (
                r.id, r.db, r.doc_id, r.status, r.strategy or "-", r.mine_rev or "(refused)",
                r.theirs_rev, r.pushed_by or "-", r.as_json()["created_at"],
            )
            for r in found
        ]
    )  # fmt: skip


@conflicts_group.command("show")
@click.argument("record_id", type=int)
@click.pass_context
def conflicts_show(ctx: click.Context, record_id: int) -> None:
    """Print one ConflictRecord as JSON (both sides, the ancestor, who and when)."""
    record = run_db(_settings(ctx), lambda c: conflict_repo.get_conflict(c, record_id))
    click.echo(orjson.dumps(record.as_json(), option=orjson.OPT_INDENT_2).decode())


@conflicts_group.command("resolve")
@click.argument("record_id", type=int)
@click.option("--strategy", type=click.Choice(STRATEGIES), required=True)
@click.option("--body", "body_json", default=None, help="For merge: the merged body (JSON).")
@click.pass_context
def conflicts_resolve(
    ctx: click.Context, record_id: int, strategy: str, body_json: str | None
) -> None:
    """Resolve ConflictRecord ID (merge without --body: three-way merge by field)."""
    body = None
    if body_json is not None:
        if strategy != "merge":
            raise click.UsageError("--body is only for --strategy merge")
        try:
            body = orjson.loads(body_json)
        except orjson.JSONDecodeError as exc:
            raise click.UsageError(f"--body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise click.UsageError("--body must be a JSON object")
    settings = _settings(ctx)

    async def resolve(conn: AsyncConnection) -> tuple[str, str]:
        record, rev = await resolve_record(conn, record_id, strategy, body=body, user_id=None)
        return record.db, rev

    db_name, rev = run_db(settings, resolve)
    click.echo(f"conflict {record_id} resolved ({strategy}): the document is now at {rev}")
    if settings.redis_url:
        from gateway.notifier import publish_once

        asyncio.run(publish_once(settings.redis_url, db_name))


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
    settings = _settings(ctx)

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
    from datetime import UTC, datetime

    from schema.idempotency import purge_expired

    now = datetime.now(UTC)
    count = run_db(_settings(ctx), lambda c: purge_expired(c, now=now, dry_run=dry_run))
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
    settings = _settings(ctx)

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


def _table(rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
