"""``gateway checkpoints`` and ``gateway conflicts``: replication state an operator acts on."""

from __future__ import annotations

import asyncio
from typing import Any

import click
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.cli.common import _table, run_db, settings_of
from gateway.cli.root import main
from replication.conflicts import STRATEGIES
from schema import checkpoints as cps
from schema import conflicts as conflict_repo
from schema.resolve import resolve_record


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
    found = run_db(settings_of(ctx), lambda c: cps.list_checkpoints(c, user, db_name))
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
    settings = settings_of(ctx)

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
        settings_of(ctx),
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
    record = run_db(settings_of(ctx), lambda c: conflict_repo.get_conflict(c, record_id))
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
    settings = settings_of(ctx)

    async def resolve(conn: AsyncConnection) -> tuple[str, str]:
        record, rev = await resolve_record(conn, record_id, strategy, body=body, user_id=None)
        return record.db, rev

    db_name, rev = run_db(settings, resolve)
    click.echo(f"conflict {record_id} resolved ({strategy}): the document is now at {rev}")
    if settings.redis_url:
        from gateway.notifier import publish_once

        asyncio.run(publish_once(settings.redis_url, db_name))
