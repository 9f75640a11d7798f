"""JSON in and out with orjson, with CouchDB's content-type and size rules."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway.keys import SETTINGS
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


PARSED_KEY = "gateway_parsed_body"  # (raw, value): a body parsed before the handler ran


def read_ahead(request: web.Request, raw: bytes) -> Any:
    """Parse ``raw`` before the handler runs and keep the value for its ``read_json``, which
    then does not parse the same bytes again (``gateway.auth`` reads a ``_revs_diff`` ahead)."""
    value = loads(raw)
    request[PARSED_KEY] = (raw, value)
    return value


def parsed_body(request: web.Request, raw: bytes) -> Any:
    """``raw`` parsed: the value ``read_ahead`` kept for these very bytes (aiohttp hands out
    the same bytes object on every read), handed over once, else a fresh parse."""
    found = request.pop(PARSED_KEY, None)
    if found is not None and found[0] is raw:
        return found[1]
    return loads(raw)


def loads(raw: bytes | str) -> Any:
    """Parse JSON, turning every failure into ``BadRequest``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc.msg}") from exc
    except (RecursionError, ValueError) as exc:
        raise BadRequest("Request body is not valid JSON") from exc


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels deep in ``value`` (a value
    parsed from JSON).

    ``{}`` and ``[]`` are one level, ``{"a": [1]}`` two, a scalar none.  Measured in C, not
    by walking the containers in Python (several times slower): orjson's indented output puts
    each member of a container of level k on a line of its own, indented 2k spaces (a string
    never holds a raw line break).  So only a value at least ``limit`` deep has lines indented
    ``2 * limit`` spaces, and it is deeper exactly when one of them is indented further (a
    member of a level ``limit + 1`` container) or holds an empty container (``[]``, ``{}``,
    last on the line: a string value ends with a quote).
    """
    try:
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError:  # orjson writes at most 254 levels: deeper than any limit
        return True
    margin = b"\n" + b" " * (2 * limit)
    start = text.find(margin)
    while start != -1:
        start += len(margin)
        end = text.find(b"\n", start)
        line = text[start:] if end == -1 else text[start:end]
        if line.startswith(b" ") or line.rstrip(b",").endswith((b"[]", b"{}")):
            return True
        start = -1 if end == -1 else text.find(margin, end)
    return False


def check_depth(raw: bytes, value: Any, limit: int, what: str = "Request body") -> None:
    """Refuse ``value`` (parsed from the JSON text ``raw``) if it nests deeper than ``limit``.

    Cheap on the common case: JSON text with at most ``limit`` opening brackets cannot nest
    deeper, so the value is only measured when the bytes hold more (two ``count`` calls).
    """
    if raw.count(b"[") + raw.count(b"{") > limit and nests_deeper(value, limit):
        raise too_deep(what, limit)


def too_deep(what: str, limit: int) -> BadRequest:
    """The error for JSON nested deeper than ``limit`` (400 ``bad_request``)."""
    return BadRequest(
        f"{what} nests arrays and objects more than {limit} levels deep (GATEWAY_MAX_JSON_DEPTH)."
    )


def depth_limit(request: web.Request) -> int:
    """The configured nesting limit (``GATEWAY_MAX_JSON_DEPTH``)."""
    return request.app[SETTINGS].max_json_depth


async def read_body(request: web.Request) -> bytes:
    """Read the request body, answering 413 when it exceeds the configured limit."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise TooLarge() from exc
    except RequestPayloadError as exc:  # a body that is not what its headers say (bad gzip)
        why = getattr(exc.__cause__, "message", None) or str(exc)
        raise BadRequest(f"The request body cannot be read: {why}") from exc


async def read_json(
    request: web.Request, *, require_type: bool = True, envelope: int | None = 0
) -> Any:
    """Read and parse a JSON request body (415 for another content type).

    The body may nest ``GATEWAY_MAX_JSON_DEPTH`` levels plus ``envelope``, the levels a
    route wraps around the documents it carries (``{"operations": [{"data": doc}]}``: 3), so
    a document is held to the same limit on every route; ``None``: the caller checks each
    document itself (``_bulk_docs`` refuses a too deep one in its row, not the batch).
    """
    if require_type and request.content_type not in (JSON, "text/plain", ""):
        if not request.content_type.endswith("+json"):
            raise UnsupportedMediaType()
    raw = await read_body(request)
    if not raw:
        raise BadRequest("Request body is empty")
    data = parsed_body(request, raw)
    if envelope is not None:
        check_depth(raw, data, depth_limit(request) + envelope)
    return data


async def read_json_object(request: web.Request, *, envelope: int | None = 0) -> dict[str, Any]:
    """Read a JSON body that must be an object (``envelope``: see ``read_json``)."""
    data = await read_json(request, envelope=envelope)
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
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Parameter {name} is not valid JSON") from exc
    check_depth(raw.encode("utf-8", "surrogatepass"), value, depth_limit(request), name)
    return value


def row_error(doc_id: str | None, exc: Any) -> dict[str, Any]:
    """Return ``{"id", "error", "reason"}`` for one refused document of a batch."""
    return {"id": doc_id, "error": exc.error, "reason": exc.reason}
