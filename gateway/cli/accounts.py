"""``gateway users``, ``gateway token`` and ``gateway dbs``: who may do what, where."""

from __future__ import annotations

import click

from gateway.cli.common import _table, run_db, settings_of
from gateway.cli.root import main
from schema import databases as dbs
from schema import users as users_repo


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
    user = run_db(settings_of(ctx), lambda c: users_repo.create_user(c, name, password, role))
    click.echo(f"created user {user.name} ({user.role})")


@users.command("list")
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """List users."""
    found = run_db(settings_of(ctx), users_repo.list_users)
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
    run_db(settings_of(ctx), lambda c: users_repo.set_role(c, name, role))
    click.echo(f"{name} is now {role}")


@users.command("disable")
@click.argument("name")
@click.pass_context
def users_disable(ctx: click.Context, name: str) -> None:
    """Disable user NAME (effective on their next request)."""
    run_db(settings_of(ctx), lambda c: users_repo.set_disabled(c, name, True))
    click.echo(f"{name} disabled")


@main.command("token")
@click.argument("name")
@click.pass_context
def token_cmd(ctx: click.Context, name: str) -> None:
    """Print a fresh access token for user NAME (for scripts and dashboards)."""
    from gateway.tokens import make_access_token

    settings = settings_of(ctx)
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
@click.option(
    "--access-mode",
    type=click.Choice(dbs.ACCESS_MODES),
    default=None,
    help="owned (default), shared or readonly; the REST API's databases have theirs.",
)
@click.pass_context
def dbs_create(ctx: click.Context, name: str, access_mode: str | None) -> None:
    """Create database NAME."""
    from gateway.restdb import MODES

    fixed = MODES.get(name)  # inspections, templates: the REST API relies on their modes
    if fixed is not None and access_mode not in (None, fixed):
        raise click.ClickException(f"{name} is the REST API's database: its access mode is {fixed}")
    mode = fixed or access_mode or "owned"
    run_db(settings_of(ctx), lambda c: dbs.create_database(c, name, access_mode=mode))
    click.echo(f"created database {name} ({mode})")


@dbs_group.command("set-policy")
@click.argument("name")
@click.argument("policy", type=click.Choice(dbs.CONFLICT_POLICIES))
@click.pass_context
def dbs_set_policy(ctx: click.Context, name: str, policy: str) -> None:
    """Set how database NAME resolves new conflicts (manual, merge, server_wins, client_wins)."""
    run_db(settings_of(ctx), lambda c: dbs.set_conflict_policy(c, name, policy))
    click.echo(f"{name}: conflict_policy is now {policy}")


@dbs_group.command("list")
@click.pass_context
def dbs_list(ctx: click.Context) -> None:
    """List databases."""
    for name in run_db(settings_of(ctx), dbs.list_databases):
        click.echo(name)
