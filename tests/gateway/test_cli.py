"""The ``gateway`` command, run in process with click's ``CliRunner``."""

from __future__ import annotations

import gc
import socket
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.cli.server import GC_YOUNG_THRESHOLD


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for var in ("GATEWAY_DATABASE_URL", "GATEWAY_SECRET_KEY", "GATEWAY_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def test_users_add_works_on_a_fresh_directory_and_migrates_the_embedded_file(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(main, ["users", "add", "ann", "--role", "manager", "--password", "pw"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "gateway-data" / "gateway.sqlite3").exists()
    assert (tmp_path / "gateway-data" / "secret_key").exists()
    listed = runner.invoke(main, ["users", "list"])
    assert "ann" in listed.output and "manager" in listed.output and "active" in listed.output


def test_users_add_prompts_for_a_password(runner: CliRunner) -> None:
    result = runner.invoke(main, ["users", "add", "ben", "--role", "inspector"], input="s3\ns3\n")
    assert result.exit_code == 0, result.output
    assert "created user ben" in result.output


def test_duplicate_user_and_bad_role_are_clear_errors(runner: CliRunner) -> None:
    runner.invoke(main, ["users", "add", "cy", "--role", "admin", "--password", "x"])
    again = runner.invoke(main, ["users", "add", "cy", "--role", "admin", "--password", "x"])
    assert again.exit_code != 0 and "already exists" in again.output
    bad = runner.invoke(main, ["users", "add", "dee", "--role", "king", "--password", "x"])
    assert bad.exit_code != 0


def test_set_role_and_disable(runner: CliRunner) -> None:
    runner.invoke(main, ["users", "add", "eve", "--role", "inspector", "--password", "x"])
    assert runner.invoke(main, ["users", "set-role", "eve", "manager"]).exit_code == 0
    assert runner.invoke(main, ["users", "disable", "eve"]).exit_code == 0
    listed = runner.invoke(main, ["users", "list"]).output
    assert "manager" in listed and "disabled" in listed
    missing = runner.invoke(main, ["users", "disable", "nobody"])
    assert missing.exit_code != 0


def test_the_rest_databases_keep_their_access_modes_when_made_by_the_cli(
    runner: CliRunner,
) -> None:
    """Made before the first ``serve``, ``templates`` must still be readonly (the REST API
    relies on it): another mode is refused, and none given means its own."""
    wrong = runner.invoke(main, ["dbs", "create", "templates", "--access-mode", "owned"])
    assert wrong.exit_code == 1 and "access mode is readonly" in wrong.output
    made = runner.invoke(main, ["dbs", "create", "templates"])
    assert made.exit_code == 0 and "(readonly)" in made.output


def test_dbs_create_and_list(runner: CliRunner) -> None:
    assert runner.invoke(main, ["dbs", "create", "inspections"]).exit_code == 0
    assert runner.invoke(main, ["dbs", "list"]).output.split() == ["inspections"]
    bad = runner.invoke(main, ["dbs", "create", "Bad Name"])
    assert bad.exit_code != 0 and "lowercase" in bad.output


def test_config_masks_secrets(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", "super-secret-value")
    monkeypatch.setenv("CLOUDINARY_URL", "cloudinary://123:abcsecret@demo")
    result = runner.invoke(main, ["config"])
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.output)
    assert "super-secret-value" not in result.output and "abcsecret" not in result.output
    assert shown["secret_key"] == "***"
    assert shown["database_url"].startswith("sqlite+aiosqlite:///")


def test_config_reads_a_dotenv_file(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GATEWAY_PORT=6001\nGATEWAY_CORS_ORIGINS=http://a,http://b\n")
    shown = orjson.loads(runner.invoke(main, ["config"]).output)
    assert shown["port"] == 6001
    assert shown["cors_origins"] == ["http://a", "http://b"]


def test_db_upgrade_on_the_configured_database(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'other.sqlite3'}"
    result = runner.invoke(main, ["--database-url", url, "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "other.sqlite3").exists()
    down = runner.invoke(main, ["--database-url", url, "db", "downgrade", "base"])
    assert down.exit_code == 0, down.output


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_CHANGES_BATCH_SIZE", "0"),  # a feed would spin for ever
        ("GATEWAY_PORT", "99999"),  # would wrap to another port
        ("GATEWAY_REFRESH_TOKEN_TTL_DAYS", "999999999"),  # a login would overflow a date
        ("GATEWAY_ACCESS_TOKEN_TTL_SECONDS", "-5"),  # every token born expired
        ("GATEWAY_FEED_POLL_SECONDS", "nan"),
        ("GATEWAY_METRICS_PUBLIC", "ture"),  # a typo must not silently mean false
        ("GATEWAY_LOG_LEVEL", "verbose"),
        ("GATEWAY_REDIS_URL", "notaurl"),
        ("GATEWAY_DATABASE_URL", "foo://x"),
    ],
)
def test_a_bad_setting_is_refused_at_start_naming_its_variable(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    for command in (["config"], ["users", "list"]):
        result = runner.invoke(main, command)
        assert result.exit_code == 1 and f"Invalid value for {variable}" in result.output
        assert "Traceback" not in result.output


def test_usual_spellings_of_settings_are_understood(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "postgres://app:pw@db.internal/field")
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", "debug")
    monkeypatch.setenv("GATEWAY_METRICS_PUBLIC", "off")
    shown = orjson.loads(runner.invoke(main, ["config"]).output)
    assert shown["database_url"] == "postgresql+asyncpg://app:***@db.internal/field"
    assert shown["log_level"] == "DEBUG" and shown["metrics_public"] is False


def test_config_masks_secrets_in_query_strings(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://cache:6379/0?password=s3cr3t&ssl=true")
    result = runner.invoke(main, ["config"])
    assert "s3cr3t" not in result.output
    assert orjson.loads(result.output)["redis_url"] == "redis://cache:6379/0?password=***&ssl=true"


def test_cli_mistakes_are_errors_not_tracebacks(runner: CliRunner) -> None:
    unknown = runner.invoke(main, ["db", "upgrade", "nosuchrev"])
    assert unknown.exit_code == 1 and "nosuchrev" in unknown.output
    too_old = runner.invoke(main, ["tombstones", "purge", "--older-than", "99999999999d"])
    assert too_old.exit_code == 2 and "100 years" in too_old.output
    bad_port = runner.invoke(main, ["serve", "--port", "99999"])
    assert bad_port.exit_code == 2
    for result in (unknown, too_old, bad_port):
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        ), result.exception


def test_serve_on_a_port_in_use_says_so(runner: CliRunner) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(main, ["serve", "--port", str(port)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output


def test_serve_keeps_the_garbage_collector_off_the_request_path(runner: CliRunner) -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    try:
        with socket.socket() as taken:  # serve prepares everything, then fails to listen
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            runner.invoke(main, ["serve", "--port", str(taken.getsockname()[1])])
        # what was built before serving is never walked again; young collections are rarer
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
