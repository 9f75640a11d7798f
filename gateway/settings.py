"""Settings: one frozen dataclass, read from ``GATEWAY_*`` variables and a ``.env`` file.

With no configuration the gateway runs embedded: a SQLite file and a generated secret key
under ``./gateway-data/``, caches and feed wake-ups in process.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

_CLOUDINARY_URL = re.compile(r"cloudinary://[^:@/]+:[^@/]+@[^/?#]+(/[^?#]*)?(\?[^#]*)?")
SECRET_NAMES = ("secret_key", "cloudinary_url", "database_url", "redis_url")
# Responses wrap a document in a few levels (a batch result, a conflict record) and orjson
# writes at most 254: documents may nest up to this deep, whatever the setting asks.
MAX_JSON_DEPTH = 200


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, with the environment variable that backs it in ``ENV_NAMES``."""

    data_dir: Path = Path("gateway-data")
    database_url: str = ""
    redis_url: str | None = None
    secret_key: str = ""
    cloudinary_url: str | None = None
    cloudinary_api_base: str = "https://api.cloudinary.com"
    cloudinary_signature_algorithm: str = "sha1"
    cloudinary_timeout_seconds: float = 10.0
    photo_allowed_formats: tuple[str, ...] = ("jpg", "png", "heic", "webp")
    photo_max_bytes: int = 10 * 1024 * 1024
    photo_upload_ttl_seconds: int = 3600
    cors_origins: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 5984
    db_pool_size: int = 20
    max_request_bytes: int = 64 * 1024 * 1024
    max_document_bytes: int = 8 * 1024 * 1024
    max_json_depth: int = 100
    max_attachment_bytes: int = 10 * 1024 * 1024
    max_bulk_docs: int = 10_000
    changes_batch_size: int = 1000
    feed_poll_seconds: float = 5.0
    default_heartbeat_ms: int = 60_000
    max_feed_timeout_ms: int = 3_600_000
    feed_send_timeout_seconds: float = 60.0
    log_level: str = "INFO"
    log_format: str = "json"  # json | text
    metrics_public: bool = True
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_days: int = 30
    login_max_failures_per_user: int = 10
    login_max_failures_per_address: int = 50
    login_failure_window_seconds: int = 900
    write_rate_per_user: int = 600
    write_rate_per_device: int = 300
    write_rate_window_seconds: int = 60
    trust_proxy: bool = False
    session_cookie_samesite: str = "lax"  # lax | strict | none (then always Secure)

    @property
    def is_embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    def masked(self) -> dict[str, Any]:
        """Return the settings as plain data with secrets masked (``gateway config``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_NAMES and value:
                value = _mask(str(value))
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


ENV_NAMES = {
    "data_dir": "GATEWAY_DATA_DIR",
    "database_url": "GATEWAY_DATABASE_URL",
    "redis_url": "GATEWAY_REDIS_URL",
    "secret_key": "GATEWAY_SECRET_KEY",
    "cloudinary_url": "CLOUDINARY_URL",
    "cloudinary_api_base": "GATEWAY_CLOUDINARY_API_BASE",
    "cloudinary_signature_algorithm": "GATEWAY_CLOUDINARY_SIGNATURE_ALGORITHM",
    "cloudinary_timeout_seconds": "GATEWAY_CLOUDINARY_TIMEOUT_SECONDS",
    "photo_allowed_formats": "GATEWAY_PHOTO_ALLOWED_FORMATS",
    "photo_max_bytes": "GATEWAY_PHOTO_MAX_BYTES",
    "photo_upload_ttl_seconds": "GATEWAY_PHOTO_UPLOAD_TTL_SECONDS",
    "cors_origins": "GATEWAY_CORS_ORIGINS",
    "host": "GATEWAY_HOST",
    "port": "GATEWAY_PORT",
    "db_pool_size": "GATEWAY_DB_POOL_SIZE",
    "max_request_bytes": "GATEWAY_MAX_REQUEST_BYTES",
    "max_document_bytes": "GATEWAY_MAX_DOCUMENT_BYTES",
    "max_json_depth": "GATEWAY_MAX_JSON_DEPTH",
    "max_attachment_bytes": "GATEWAY_MAX_ATTACHMENT_BYTES",
    "max_bulk_docs": "GATEWAY_MAX_BULK_DOCS",
    "changes_batch_size": "GATEWAY_CHANGES_BATCH_SIZE",
    "feed_poll_seconds": "GATEWAY_FEED_POLL_SECONDS",
    "default_heartbeat_ms": "GATEWAY_DEFAULT_HEARTBEAT_MS",
    "max_feed_timeout_ms": "GATEWAY_MAX_FEED_TIMEOUT_MS",
    "feed_send_timeout_seconds": "GATEWAY_FEED_SEND_TIMEOUT_SECONDS",
    "log_level": "GATEWAY_LOG_LEVEL",
    "log_format": "GATEWAY_LOG_FORMAT",
    "metrics_public": "GATEWAY_METRICS_PUBLIC",
    "access_token_ttl_seconds": "GATEWAY_ACCESS_TOKEN_TTL_SECONDS",
    "refresh_token_ttl_days": "GATEWAY_REFRESH_TOKEN_TTL_DAYS",
    "login_max_failures_per_user": "GATEWAY_LOGIN_MAX_FAILURES_PER_USER",
    "login_max_failures_per_address": "GATEWAY_LOGIN_MAX_FAILURES_PER_ADDRESS",
    "login_failure_window_seconds": "GATEWAY_LOGIN_FAILURE_WINDOW_SECONDS",
    "write_rate_per_user": "GATEWAY_WRITE_RATE_PER_USER",
    "write_rate_per_device": "GATEWAY_WRITE_RATE_PER_DEVICE",
    "write_rate_window_seconds": "GATEWAY_WRITE_RATE_WINDOW_SECONDS",
    "trust_proxy": "GATEWAY_TRUST_PROXY",
    "session_cookie_samesite": "GATEWAY_SESSION_COOKIE_SAMESITE",
}


# Inclusive bounds of the numeric settings: a value outside is refused at start, naming its
# variable (a batch size of 0 would spin, a port past 65535 wraps, a TTL of a million years
# overflows a date).  Limits and rates of 0 switch those limits off.
RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65_535),
    "db_pool_size": (1, 1_000),
    "max_request_bytes": (1, 2**40),
    "max_document_bytes": (1, 2**40),
    "max_attachment_bytes": (1, 2**40),
    "photo_max_bytes": (1, 2**40),
    "max_bulk_docs": (1, 10_000_000),
    "changes_batch_size": (1, 1_000_000),
    "feed_poll_seconds": (0.01, 86_400),
    "default_heartbeat_ms": (1, 86_400_000),
    "max_feed_timeout_ms": (0, 7 * 86_400_000),
    "cloudinary_timeout_seconds": (0.1, 3_600),
    "access_token_ttl_seconds": (1, 366 * 86_400),
    "refresh_token_ttl_days": (1, 3_660),
    "login_max_failures_per_user": (0, 10**9),
    "login_max_failures_per_address": (0, 10**9),
    "login_failure_window_seconds": (0, 366 * 86_400),
    "write_rate_per_user": (0, 10**9),
    "write_rate_per_device": (0, 10**9),
    "write_rate_window_seconds": (1, 366 * 86_400),
}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# The drivers the gateway runs on; the spellings operators also use are mapped onto them.
DATABASE_SCHEMES = {
    "postgresql+asyncpg://": "postgresql+asyncpg://",
    "postgresql://": "postgresql+asyncpg://",
    "postgres://": "postgresql+asyncpg://",
    "sqlite+aiosqlite://": "sqlite+aiosqlite://",
    "sqlite://": "sqlite+aiosqlite://",
}
_SECRET_PARAM = re.compile(r"pass|secret|token|key|auth", re.IGNORECASE)


def _mask(value: str) -> str:
    """``value`` with its password and secret-looking query parameters replaced by ***."""
    if "://" not in value:
        return "***"
    scheme, rest = value.split("://", 1)
    rest, sep, query = rest.partition("?")
    if "@" in rest:
        creds, host = rest.rsplit("@", 1)
        rest = f"{creds.split(':', 1)[0]}:***@{host}"
    if sep:
        params = []
        for pair in query.split("&"):
            name, eq, _ = pair.partition("=")
            params.append(f"{name}=***" if eq and _SECRET_PARAM.search(name) else pair)
        rest = f"{rest}?{'&'.join(params)}"
    return f"{scheme}://{rest}"


def _database_url(raw: str) -> str:
    if not raw:
        return raw
    for given, driver in DATABASE_SCHEMES.items():
        if raw.startswith(given):
            return driver + raw[len(given) :]
    raise ValueError("expected postgresql+asyncpg://... or sqlite+aiosqlite:///...")


def _in_range(name: str, value: float) -> None:
    low, high = RANGES[name]
    if not low <= value <= high:
        raise ValueError(f"expected {low:g} to {high:g}")


def _convert(name: str, raw: str) -> Any:
    default = getattr(Settings(), name)
    if name == "cors_origins":
        return tuple(o.strip() for o in raw.split(",") if o.strip())
    if name == "photo_allowed_formats":
        return tuple(f.strip().lower() for f in raw.split(",") if f.strip())
    if name == "cloudinary_url" and raw and not _CLOUDINARY_URL.fullmatch(raw):
        raise ValueError("expected cloudinary://api_key:api_secret@cloud_name")
    if name == "cloudinary_signature_algorithm" and raw not in ("sha1", "sha256"):
        raise ValueError("expected sha1 or sha256")
    if name == "photo_upload_ttl_seconds" and not 60 <= int(raw) <= 3600:
        raise ValueError("Cloudinary accepts a signature for at most 3600 s; use 60..3600")
    if name == "max_json_depth" and not 1 <= int(raw) <= MAX_JSON_DEPTH:
        raise ValueError(f"expected 1 to {MAX_JSON_DEPTH}")
    if name == "feed_send_timeout_seconds" and not float(raw) > 0:
        raise ValueError("expected a positive number of seconds")
    if name == "session_cookie_samesite":
        if raw.strip().lower() not in ("lax", "strict", "none"):
            raise ValueError("expected lax, strict or none")
        return raw.strip().lower()
    if name == "log_format":
        if raw.strip().lower() not in ("json", "text"):
            raise ValueError("expected json or text")
        return raw.strip().lower()
    if name == "log_level":
        if raw.strip().upper() not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
        return raw.strip().upper()
    if name == "redis_url" and raw and not raw.startswith(REDIS_SCHEMES):
        raise ValueError("expected redis://, rediss:// or unix://")
    if name == "database_url":
        return _database_url(raw.strip())
    if name == "data_dir":
        return Path(raw)
    if isinstance(default, bool):
        word = raw.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError("expected true or false")
        return word in TRUE_WORDS
    if isinstance(default, int | float):
        value = int(raw) if isinstance(default, int) else float(raw)
        if name in RANGES:
            _in_range(name, value)
        return value
    return raw or None if name in ("redis_url", "cloudinary_url") else raw


def load_settings(
    env: Mapping[str, str] | None = None, dotenv_path: str | Path = ".env", **overrides: Any
) -> Settings:
    """Read settings from ``.env``, then the environment, then ``overrides`` (flags)."""
    merged: dict[str, str] = {}
    if dotenv_path and Path(dotenv_path).is_file():
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ if env is None else env)
    values: dict[str, Any] = {}
    for name, var in ENV_NAMES.items():
        if var in merged:
            try:
                values[name] = _convert(name, merged[var])
            except ValueError as exc:
                shown = "(hidden)" if name in SECRET_NAMES else repr(merged[var])
                raise SystemExit(f"Invalid value for {var}: {shown} ({exc})") from exc
    for name, value in overrides.items():
        if value is None:
            continue
        if name == "database_url":  # --database-url: the same spellings as the variable
            try:
                value = _database_url(value.strip())
            except ValueError as exc:
                raise SystemExit(f"Invalid value for --database-url (hidden) ({exc})") from exc
        values[name] = value
    settings = Settings(**values)
    if not settings.database_url:
        db_file = settings.data_dir / "gateway.sqlite3"
        settings = replace(settings, database_url=f"sqlite+aiosqlite:///{db_file}")
    return settings


def ensure_data_dir(settings: Settings) -> Settings:
    """Create the data directory and a persistent secret key where none is configured."""
    if settings.is_embedded or not settings.secret_key:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.secret_key:
        return settings
    key_file = settings.data_dir / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48))
        key_file.chmod(0o600)
    return replace(settings, secret_key=key_file.read_text().strip())
