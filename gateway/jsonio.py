"""JSON in and out with orjson, with CouchDB's content-type and size rules."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from replication import BadRequest, TooLarge
from replication.errors import UnsupportedMediaType

JSON = "application/json"
MAX_INT = 2**63 - 1


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Return ``data`` serialized with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON, headers=headers)


def raw_json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Return already serialized JSON bytes."""
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def loads(raw: bytes | str) -> Any:
    """Parse JSON, turning every failure into ``BadRequest``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc.msg}") from exc
    except (RecursionError, ValueError) as exc:
        raise BadRequest("Request body is not valid JSON") from exc


async def read_body(request: web.Request) -> bytes:
    """Read the request body, answering 413 when it exceeds the configured limit."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise TooLarge() from exc


async def read_json(request: web.Request, *, require_type: bool = True) -> Any:
    """Read and parse a JSON request body (415 for another content type)."""
    if require_type and request.content_type not in (JSON, "text/plain", ""):
        if not request.content_type.endswith("+json"):
            raise UnsupportedMediaType()
    raw = await read_body(request)
    if not raw:
        raise BadRequest("Request body is empty")
    return loads(raw)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """Read a JSON body that must be an object."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    return data


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """Parse a boolean query parameter (``true``/``false``)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise BadRequest(f"Invalid boolean parameter: {name}")


def query_int(
    request: web.Request, name: str, default: int | None = None, *, minimum: int = 0
) -> int | None:
    """Parse a non-negative integer query parameter."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"Invalid integer parameter: {name}") from exc
    if value < minimum:
        raise BadRequest(f"Parameter {name} must be at least {minimum}")
    if value > MAX_INT:  # what a 64-bit LIMIT/OFFSET can hold
        raise BadRequest(f"Parameter {name} must be at most {MAX_INT}")
    return value


def query_json(request: web.Request, name: str) -> Any:
    """Parse a JSON-encoded query parameter (``key``, ``keys``, ``open_revs``...)."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Parameter {name} is not valid JSON") from exc


def row_error(doc_id: str | None, exc: Any) -> dict[str, Any]:
    """Return ``{"id", "error", "reason"}`` for one refused document of a batch."""
    return {"id": doc_id, "error": exc.error, "reason": exc.reason}
