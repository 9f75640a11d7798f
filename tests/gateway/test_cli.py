"""The ``gateway`` command, run in process with click's ``CliRunner``."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from gateway.cli import main


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
