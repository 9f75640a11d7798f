"""A fake Cloudinary for tests: the signed Upload API and the Admin API's resource lookup.

``POST /v1_1/<cloud>/image/upload`` checks a signed upload the way Cloudinary does — every
posted parameter but ``file``, ``cloud_name``, ``resource_type``, ``api_key`` and
``signature`` itself, as ``key=value`` strings (``&`` inside one escaped as ``%26``) sorted
and joined by ``&``, the API secret appended, hashed with SHA-1 (or SHA-256) in hex — and a
timestamp at most an hour old; it stores the "asset" and answers Cloudinary's JSON.
``GET /v1_1/<cloud>/resources/image/upload/<public_id>`` answers it again, behind Basic auth
with the API key and secret.  Errors have Cloudinary's shape ``{"error": {"message"}}``.

Set ``fail_status`` to make every request fail with that status, ``stop()`` it to be
unreachable (``start()`` brings it back on the same port), ``clock_offset`` to move its
clock (a positive offset makes recent signatures stale).  This module never imports the
``cloudinary`` library: the signature check is independent of the code under test.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import struct
import time
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

SIGNATURE_WINDOW = 3600
UNSIGNED = {"file", "cloud_name", "resource_type", "api_key", "signature"}


def png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG image of ``width`` x ``height`` grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def string_to_sign(params: dict[str, str]) -> str:
    pairs = [f"{k}={v}".replace("&", "%26") for k, v in params.items() if k not in UNSIGNED and v]
    return "&".join(sorted(pairs))


def signature_of(params: dict[str, str], api_secret: str, algorithm: str = "sha1") -> str:
    return hashlib.new(algorithm, (string_to_sign(params) + api_secret).encode()).hexdigest()


def sniff(data: bytes) -> tuple[str, int | None, int | None] | None:
    """The format and size of an image, from its first bytes (None: not an image)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg", None, None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", None, None
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1"):
        return "heic", None, None
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif", None, None
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


class FakeCloudinary:
    """One Cloudinary product environment on ``127.0.0.1``."""

    def __init__(
        self,
        cloud_name: str = "demo-cloud",
        api_key: str = "614335564976464",
        api_secret: str = "fake-api-secret-Zx8Q",
        *,
        algorithm: str = "sha1",
    ) -> None:
        self.cloud_name = cloud_name
        self.api_key = api_key
        self.api_secret = api_secret
        self.algorithm = algorithm
        self.assets: dict[str, dict[str, Any]] = {}
        self.fail_status: int | None = None
        self.clock_offset = 0.0
        self.uploads = 0
        self.lookups = 0
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._versions = itertools.count(int(time.time()))

    @property
    def url(self) -> str:
        assert self.port is not None, "start() it first"
        return f"http://127.0.0.1:{self.port}"

    @property
    def cloudinary_url(self) -> str:
        return f"cloudinary://{self.api_key}:{self.api_secret}@{self.cloud_name}"

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._failing])
        base = f"/v1_1/{self.cloud_name}"
        app.router.add_post(f"{base}/image/upload", self._upload)
        app.router.add_get(f"{base}/resources/image/upload/{{public_id:.+}}", self._resource)
        return app

    async def start(self) -> None:
        """Listen on a free port (the same one again after ``stop()``)."""
        runner = web.AppRunner(self._app(), shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port or 0, reuse_address=True)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- behaviour ---------------------------------------------------------------------

    @web.middleware
    async def _failing(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.fail_status is not None:
            return _error(self.fail_status, "General Error")
        return await handler(request)

    def add_asset(self, public_id: str, *, fmt: str = "png", size: int = 100) -> dict[str, Any]:
        """Store an asset as if it had been uploaded (by any other means)."""
        folder = public_id.rsplit("/", 1)[0] if "/" in public_id else ""
        asset = self._asset(public_id, folder, fmt, size, 3, 2, {})
        self.assets[public_id] = asset
        return asset

    def _asset(
        self,
        public_id: str,
        folder: str,
        fmt: str,
        size: int,
        width: int | None,
        height: int | None,
        context: dict[str, str],
    ) -> dict[str, Any]:
        version = next(self._versions)
        path = f"{self.cloud_name}/image/upload/v{version}/{public_id}.{fmt}"
        asset: dict[str, Any] = {
            "asset_id": uuid.uuid4().hex,
            "public_id": public_id,
            "version": version,
            "version_id": uuid.uuid4().hex,
            "width": width or 0,
            "height": height or 0,
            "format": fmt,
            "resource_type": "image",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tags": [],
            "bytes": size,
            "type": "upload",
            "url": f"http://res.cloudinary.com/{path}",
            "secure_url": f"https://res.cloudinary.com/{path}",
            "asset_folder": folder,
        }
        if context:
            asset["context"] = {"custom": context}
        return asset

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        file = form.get("file")
        if file is None or isinstance(file, str):
            return _error(400, "Missing required parameter - file")
        if params.get("api_key") != self.api_key:
            return _error(401, f"Unknown API key {params.get('api_key', '')}")
        if not params.get("signature") or not params.get("timestamp", "").isdigit():
            return _error(400, "Missing required parameter - signature or timestamp")
        expected = signature_of(params, self.api_secret, self.algorithm)
        if not hmac.compare_digest(expected, params["signature"]):
            return _error(401, f"Invalid Signature {params['signature']}. "
                               f"String to sign - '{string_to_sign(params)}'.")  # fmt: skip
        now = time.time() + self.clock_offset
        if now - int(params["timestamp"]) > SIGNATURE_WINDOW:
            return _error(400, f"Stale request - reported time is {params['timestamp']} "
                               f"which is more than 1 hour ago")  # fmt: skip
        data = file.file.read()
        sniffed = sniff(data)
        if sniffed is None:
            return _error(400, "Invalid image file")
        fmt, width, height = sniffed
        allowed = [f.strip() for f in params.get("allowed_formats", "").split(",") if f.strip()]
        if allowed and fmt not in allowed:
            return _error(400, f"Image file format {fmt} not allowed")
        limit = params.get("max_file_size")
        if limit and len(data) > int(limit):
            return _error(400, f"File size too large. Got {len(data)}. Maximum is {limit}.")
        folder = params.get("folder", "").strip("/")
        name = params.get("public_id") or uuid.uuid4().hex[:20]
        public_id = f"{folder}/{name}" if folder else name
        context = dict(
            item.split("=", 1) for item in params.get("context", "").split("|") if "=" in item
        )
        asset = self._asset(public_id, folder, fmt, len(data), width, height, context)
        self.assets[public_id] = asset
        self.uploads += 1
        return web.json_response(asset)

    async def _resource(self, request: web.Request) -> web.Response:
        self.lookups += 1
        if not self._authorized(request.headers.get("Authorization", "")):
            return _error(401, "Invalid api_key or api_secret")
        public_id = request.match_info["public_id"]
        asset = self.assets.get(public_id)
        if asset is None:
            return _error(404, f"Resource not found - {public_id}")
        return web.json_response(asset)

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            key, _, secret = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(key, self.api_key) and hmac.compare_digest(
            secret, self.api_secret
        )
