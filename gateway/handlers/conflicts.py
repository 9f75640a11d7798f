"""``/api/v1/conflicts``: list, read and resolve ConflictRecords (SPEC §5).

Managers and admins see and resolve every record; an inspector sees and resolves the
records of documents they own, and anyone else's look exactly like missing ones (404).
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from gateway.access import STAFF
from gateway.auth import context
from gateway.dbctx import written_docs
from gateway.idempotency import store_with_write
from gateway.jsonio import json_response, query_int, read_json_object
from gateway.keys import ENGINE, SETTINGS
from gateway.metrics import metrics_of
from gateway.validation import check_document
from replication import BadRequest, NotFound
from replication.conflicts import STRATEGIES
from schema.conflicts import STATUSES, ConflictRecord, ConflictTally, get_conflict, list_conflicts
from schema.engine import read_transaction, write_transaction
from schema.resolve import resolve_record
from schema.users import User

MAX_LIMIT = 500


def _visible(user: User, record: ConflictRecord) -> bool:
    return user.role in STAFF or record.owner_id == user.id


def _record_id(request: web.Request) -> int:
    raw = request.match_info["conflict_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound("No such conflict.")
    return int(raw)


def _cursor(raw: str | None) -> int:
    if not raw:
        return 0
    try:
        value = int(base64.urlsafe_b64decode(raw.encode("ascii") + b"==").decode("ascii"))
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise BadRequest("Invalid cursor") from exc
    if value < 0:
        raise BadRequest("Invalid cursor")
    return value


def _next_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


async def list_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/conflicts?db=&status=&doc_id=&limit=&cursor=`` → ``{"results", "next"}``."""
    user = context(request).user
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    limit = query_int(request, "limit", 50, minimum=1) or 50
    if limit > MAX_LIMIT:
        raise BadRequest(f"limit must be at most {MAX_LIMIT}")
    for name in ("db", "doc_id"):
        if "\x00" in request.query.get(name, ""):
            raise BadRequest(f"Invalid {name}")
    async with read_transaction(request.app[ENGINE]) as conn:
        found = await list_conflicts(
            conn,
            db=request.query.get("db"),
            status=status,
            doc_id=request.query.get("doc_id"),
            owner=None if user.role in STAFF else user.id,
            after_id=_cursor(request.query.get("cursor")),
            limit=limit + 1,
        )
    page = found[:limit]
    more = len(found) > limit
    return json_response(
        {
            "results": [r.as_json() for r in page],
            "next": _next_cursor(page[-1].id) if more else None,
        }
    )


async def get_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/conflicts/{id}``."""
    user = context(request).user
    async with read_transaction(request.app[ENGINE]) as conn:
        record = await get_conflict(conn, _record_id(request))
    if not _visible(user, record):
        raise NotFound("No such conflict.")
    return json_response(record.as_json())


async def resolve_handler(request: web.Request) -> web.Response:
    """``POST /api/v1/conflicts/{id}/resolve {"strategy", "body"?}``: one new revision on the
    kept branch, tombstones on the others; 409 if already resolved or a merge is not clean."""
    user = context(request).user
    payload = await read_json_object(request, envelope=1)  # {"body": document}
    strategy = payload.get("strategy")
    if strategy not in STRATEGIES:
        raise BadRequest(f"strategy must be one of {', '.join(STRATEGIES)}")
    body = payload.get("body")
    if body is not None and (strategy != "merge" or not isinstance(body, dict)):
        raise BadRequest("body is a JSON object, and only for the merge strategy")
    if body is not None:
        check_document(body, request.app[SETTINGS])
    record_id = _record_id(request)
    tally = ConflictTally()
    async with write_transaction(request.app[ENGINE]) as conn:
        record = await get_conflict(conn, record_id)
        if not _visible(user, record):
            raise NotFound("No such conflict.")
        record, rev = await resolve_record(
            conn, record_id, strategy, body=body, user_id=user.id, role=user.role, tally=tally
        )
        resolved = await get_conflict(conn, record_id)
        resp = json_response({"ok": True, "rev": rev, **resolved.as_json()})
        await store_with_write(request, conn, resp)  # a retry replays, never resolves twice
    metrics = metrics_of(request.app)
    if metrics is not None:
        metrics.record_conflicts(record.db, tally.opened, tally.closed)
    await written_docs(request, record.db, 1)
    return resp
