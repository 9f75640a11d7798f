"""Photos through Cloudinary's signed direct upload; no image byte passes through the gateway.

1. ``upload_params`` signs a set of upload options (folder ``inspections/<id>``, a fresh
   ``public_id``, the allowed formats, the size limit, a timestamp) with the account's API
   secret, the way Cloudinary checks them (``cloudinary.utils.sign_request``); the phone
   posts the image with exactly those fields straight to Cloudinary.
2. ``fetch_asset`` asks Cloudinary's Admin API about the uploaded asset
   (``cloudinary.api.resource``, a blocking call run in a thread), and ``check_asset``
   verifies it belongs to the inspection's folder and respects the format and size limits.
3. ``record_photo`` stores a ``photos`` row (once per ``public_id``).

Configuration and global state: the account comes from the app's ``Settings``
(``CLOUDINARY_URL``, ``GATEWAY_CLOUDINARY_API_BASE``, ...) and every option the library
needs — cloud name, key, secret, ``upload_prefix`` (the API base), signature algorithm,
timeout — is passed explicitly to each call, so ``cloudinary.config()`` (the library's
process-wide singleton) is neither read nor written and two apps in one process never see
each other's account.  What stays global is the library's own: its urllib3 connection pool
(``cloudinary.api_client.call_api._http``, created on import with the proxy settings found in
the environment then) and the parse of ``CLOUDINARY_URL`` from ``os.environ`` on import,
which raises on a malformed URL — hence the library is imported on first use only, and a
failure there answers 503 ``not_configured`` instead of breaking the gateway's start.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlparse

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.settings import Settings
from replication import BadRequest, Conflict, GatewayError, NotFound
from replication.errors import ServiceUnavailable
from schema.tables import photos, users

log = logging.getLogger("gateway.photos")

SIGNATURE_WINDOW = 3600  # Cloudinary refuses a signed request whose timestamp is older
MIN_UPLOAD_TTL = 60
FOLDER_PREFIX = "inspections"
RETRY_AFTER_SECONDS = 5
MAX_PUBLIC_ID = 255


class NotConfigured(ServiceUnavailable):
    error = "not_configured"
    default_reason = "Photo uploads are not configured on this gateway (CLOUDINARY_URL)."


class CloudinaryError(GatewayError):
    """Cloudinary could not answer (``status`` 503, retry later) or answered nonsense (502).

    The handler turns it into the error body, with ``Retry-After`` when ``retry_after``."""

    def __init__(self, status: int, error: str, reason: str, retry_after: int | None = None):
        self.status = status
        self.error = error
        self.retry_after = retry_after
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class CloudinaryAccount:
    cloud_name: str
    api_key: str
    api_secret: str = field(repr=False)
    api_base: str = "https://api.cloudinary.com"
    signature_algorithm: str = "sha1"
    timeout: float = 10.0

    def options(self) -> dict[str, Any]:
        """Every option the library would otherwise take from its global configuration."""
        return {
            "cloud_name": self.cloud_name,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "upload_prefix": self.api_base,
            "signature_algorithm": self.signature_algorithm,
            "signature_version": 2,
            "oauth_token": None,
            "timeout": self.timeout,
        }


def account_of(settings: Settings) -> CloudinaryAccount:
    """The Cloudinary account of ``settings`` (``NotConfigured`` without a usable URL)."""
    raw = settings.cloudinary_url
    if not raw:
        raise NotConfigured()
    url = urlparse(raw)
    if url.scheme != "cloudinary" or not (url.hostname and url.username and url.password):
        raise NotConfigured("CLOUDINARY_URL must be cloudinary://api_key:api_secret@cloud_name.")
    return CloudinaryAccount(
        cloud_name=url.hostname,
        api_key=unquote(url.username),
        api_secret=unquote(url.password),
        api_base=settings.cloudinary_api_base.rstrip("/"),
        signature_algorithm=settings.cloudinary_signature_algorithm,
        timeout=settings.cloudinary_timeout_seconds,
    )


def _library() -> Any:
    """Import the Cloudinary library on first use (its import parses the environment)."""
    try:
        import cloudinary.api
        import cloudinary.exceptions
        import cloudinary.utils
    except ValueError as exc:  # a malformed CLOUDINARY_URL in os.environ
        raise NotConfigured(f"The Cloudinary library refused its configuration: {exc}") from exc
    return cloudinary


def folder_of(inspection_id: str) -> str:
    return f"{FOLDER_PREFIX}/{inspection_id}"


def _iso(moment: datetime) -> str:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- signing -----------------------------------------------------------------------------


def upload_params(
    account: CloudinaryAccount, settings: Settings, inspection_id: str, *, now: float | None = None
) -> dict[str, Any]:
    """The answer of ``POST /api/v1/photos/upload-params``: where and what the phone posts.

    Cloudinary accepts a signature for an hour after its ``timestamp``; a shorter
    ``photo_upload_ttl_seconds`` is enforced by dating the timestamp back, so Cloudinary
    itself refuses the parameters once ``expires_at`` has passed.
    """
    cloudinary = _library()
    ttl = min(max(settings.photo_upload_ttl_seconds, MIN_UPLOAD_TTL), SIGNATURE_WINDOW)
    timestamp = int(time.time() if now is None else now) - (SIGNATURE_WINDOW - ttl)
    to_sign: dict[str, Any] = {
        "timestamp": timestamp,
        "folder": folder_of(inspection_id),
        "public_id": uuid.uuid4().hex,
        "allowed_formats": ",".join(settings.photo_allowed_formats),
        "max_file_size": settings.photo_max_bytes,
        "context": f"inspection_id={inspection_id}",
    }
    options = account.options()
    signed = cloudinary.utils.sign_request(to_sign, options)
    url = cloudinary.utils.cloudinary_api_url("upload", resource_type="image", **options)
    expires = datetime.fromtimestamp(timestamp + SIGNATURE_WINDOW, UTC)
    return {"upload_url": url, "params": signed, "expires_at": _iso(expires)}


# --- verifying ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Asset:
    """An image as Cloudinary's Admin API describes it."""

    public_id: str
    version: int
    format: str
    bytes: int
    width: int | None
    height: int | None
    secure_url: str
    asset_folder: str | None


def _asset(found: Any, public_id: str) -> Asset:
    def integer(name: str, *, required: bool = True) -> int | None:
        value = found.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if value is None and not required:
            return None
        raise ValueError(name)

    try:
        if not isinstance(found, dict) or found.get("public_id") != public_id:
            raise ValueError("public_id")
        fmt, url, folder = found.get("format"), found.get("secure_url"), found.get("asset_folder")
        if not isinstance(fmt, str) or not isinstance(url, str):
            raise ValueError("format")
        return Asset(
            public_id=public_id, version=integer("version") or 0, format=fmt.lower(),
            bytes=integer("bytes") or 0, width=integer("width", required=False),
            height=integer("height", required=False), secure_url=url,
            asset_folder=folder if isinstance(folder, str) else None,
        )  # fmt: skip
    except ValueError as exc:
        log.warning("unexpected Cloudinary answer for %s (%s)", public_id, exc)
        raise CloudinaryError(502, "bad_gateway", "Cloudinary answered unexpectedly.") from exc


async def fetch_asset(account: CloudinaryAccount, public_id: str) -> Asset:
    """Ask the Admin API for the uploaded image ``public_id``.

    Not found → ``NotFound``; unreachable, timing out, rate limiting or failing → a
    retryable 503; refusing the gateway's own credentials → 502 (a configuration error).
    """
    cloudinary = _library()
    errors = cloudinary.exceptions

    def lookup() -> Any:
        return cloudinary.api.resource(
            public_id, resource_type="image", type="upload", **account.options()
        )

    try:
        # the library's urllib3 pool retries a failed attempt (Retry.DEFAULT: three times)
        # and takes no retry option, so bound the whole call: a hung Cloudinary answers 503
        # after 2 * timeout + 1 s; the thread's remaining attempts are read-only lookups
        # that end on their own timeouts, and their answer is dropped
        found = await asyncio.wait_for(asyncio.to_thread(lookup), account.timeout * 2 + 1)
    except errors.NotFound as exc:
        raise NotFound(
            f"Cloudinary has no image {public_id!r}: upload it with the parameters from "
            "/api/v1/photos/upload-params before confirming it."
        ) from exc
    except (errors.AuthorizationRequired, errors.NotAllowed) as exc:
        log.error("Cloudinary refused the gateway's credentials: %s", exc)
        raise CloudinaryError(
            502, "bad_gateway", "Cloudinary refused the gateway's credentials."
        ) from exc
    except errors.BadRequest as exc:
        raise BadRequest("Cloudinary refused to look that public_id up.") from exc
    except Exception as exc:  # the library raises a bare Exception for some 5xx answers
        log.warning("Cloudinary unavailable looking up %s: %r", public_id, exc)
        raise CloudinaryError(
            503, "service_unavailable", "Cloudinary is unavailable; retry the confirmation.",
            retry_after=RETRY_AFTER_SECONDS,
        ) from exc  # fmt: skip
    return _asset(found, public_id)


def check_asset(asset: Asset, settings: Settings, inspection_id: str, version: int | None) -> None:
    """Refuse an asset outside the inspection's folder, of another format or too large."""
    folder = folder_of(inspection_id)
    if not (asset.public_id.startswith(folder + "/") or asset.asset_folder == folder):
        raise BadRequest("The image was not uploaded for this inspection.")
    allowed = settings.photo_allowed_formats
    if allowed and asset.format not in allowed:
        raise BadRequest(f"Format {asset.format!r} is not allowed ({', '.join(allowed)}).")
    if asset.bytes > settings.photo_max_bytes:
        raise BadRequest(
            f"The image has {asset.bytes} bytes; at most {settings.photo_max_bytes} are allowed."
        )
    if version is not None and version != asset.version:
        raise Conflict(f"Cloudinary holds version {asset.version} of that image, not {version}.")


def parse_public_id(raw: object) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > MAX_PUBLIC_ID:
        raise BadRequest(f"public_id must be a string of 1 to {MAX_PUBLIC_ID} characters")
    if any(ch in raw for ch in "\x00?#\\") or raw.startswith("/") or ".." in raw.split("/"):
        raise BadRequest("Invalid public_id")
    return raw


# --- recording ---------------------------------------------------------------------------


def _select() -> Any:
    return select(photos, users.c.name.label("uploader")).select_from(
        photos.outerjoin(users, users.c.id == photos.c.uploader_id)
    )


def represent(row: Any) -> dict[str, Any]:
    """The REST form of a photo."""
    return {
        "id": row.id,
        "inspection_id": row.inspection_id,
        "public_id": row.public_id,
        "version": row.version,
        "format": row.format,
        "bytes": row.bytes,
        "width": row.width,
        "height": row.height,
        "secure_url": row.secure_url,
        "uploader": row.uploader,
        "created_at": _iso(row.created_at),
    }


async def find_photo(conn: AsyncConnection, public_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(_select().where(photos.c.public_id == public_id))).first()
    return represent(row) if row is not None else None


def existing_for(found: dict[str, Any], inspection_id: str) -> dict[str, Any]:
    """A ``public_id`` confirmed before: the same record, or 409 for another inspection."""
    if found["inspection_id"] != inspection_id:
        raise Conflict("That image is already recorded for another inspection.")
    return found


async def record_photo(
    conn: AsyncConnection, inspection_id: str, asset: Asset, uploader_id: int
) -> tuple[dict[str, Any], bool]:
    """Record ``asset`` for the inspection once: ``(photo, created)``."""
    found = await find_photo(conn, asset.public_id)
    if found is not None:
        return existing_for(found, inspection_id), False
    await conn.execute(
        insert(photos).values(
            id=str(uuid.uuid4()), inspection_id=inspection_id, public_id=asset.public_id,
            version=asset.version, format=asset.format, bytes=asset.bytes, width=asset.width,
            height=asset.height, secure_url=asset.secure_url, uploader_id=uploader_id,
            created_at=datetime.now(UTC),
        )
    )  # fmt: skip
    created = await find_photo(conn, asset.public_id)
    assert created is not None
    return created, True


async def list_photos(conn: AsyncConnection, inspection_id: str) -> list[dict[str, Any]]:
    stmt = (
        _select()
        .where(photos.c.inspection_id == inspection_id)
        .order_by(photos.c.created_at, photos.c.id)
    )
    return [represent(row) for row in await conn.execute(stmt)]
