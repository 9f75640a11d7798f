"""``/api/v1/inspections`` and ``/api/v1/sync``: the field REST API over the same documents.

Every write goes through ``schema.inspections.apply_operations`` (the workflow rules, the
index and ConflictRecords for stale versions are applied there, in one transaction), so a
single ``PATCH`` and one operation of a batch behave exactly alike.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.dbctx import DbAccess, device_of, written_docs
from gateway.errors import status_of
from gateway.idempotency import store_with_write
from gateway.jsonio import json_response, query_int, read_json_object
from gateway.keys import ENGINE, SETTINGS
from gateway.metrics import metrics_of
from gateway.restdb import rest_db
from gateway.settings import Settings
from gateway.validation import check_document
from replication import BadRequest, TooLarge
from replication.workflow import STATUSES
from schema.changes import read_changes
from schema.conflicts import ConflictTally
from schema.engine import read_transaction, write_transaction
from schema.inspections import (
    MAX_OPERATIONS,
    Operation,
    OpResult,
    apply_operations,
    canonical_id,
    get_inspection,
    list_inspections,
)
from schema.reads import get_revisions
from schema.restdocs import represent, version_of

DB = "inspections"
MAX_LIMIT = 200
OUTCOME_STATUS = {"created": 201, "updated": 200, "deleted": 200}


def status_for(result: OpResult) -> int:
    """The HTTP status of one operation's result."""
    if result.exc is not None:
        return status_of(result.exc)
    return OUTCOME_STATUS[result.outcome]


async def _apply(
    request: web.Request,
    access: DbAccess,
    ops: list[Operation],
    answer: Callable[[list[OpResult]], web.Response],
) -> web.Response:
    """Apply ``ops`` and answer with ``answer(results)``, built and stored (for an
    ``Idempotency-Key``) inside the writing transaction: the write and its stored answer
    commit together, so no crash can apply a keyed request twice."""
    user = access.user
    tally = ConflictTally()
    async with write_transaction(request.app[ENGINE]) as conn:
        results = await apply_operations(
            conn, DB, ops, user_id=user.id, user_name=user.name, role=user.role,
            owner=access.owner, device=device_of(request), tally=tally,
        )  # fmt: skip
        resp = answer(results)
        await store_with_write(request, conn, resp)
    metrics = metrics_of(request.app)
    if metrics is not None:
        metrics.record_conflicts(DB, tally.opened, tally.closed)
    await written_docs(request, DB, sum(1 for r in results if r.exc is None))
    return resp


def _single(results: list[OpResult]) -> web.Response:
    """The answer of a single-operation route: the inspection, or the error (409 carries
    the server's snapshot and the ConflictRecord id)."""
    [result] = results
    status = status_for(result)
    if result.exc is None:
        body: dict[str, Any] = result.inspection or {
            "id": result.id, "version": result.version, "deleted": True,
        }  # fmt: skip
        return json_response(body, status=status)
    body = {"error": result.exc.error, "reason": result.exc.reason}
    if result.conflict_id is not None:
        body["conflict_id"] = result.conflict_id
        body["current"] = result.inspection
    return json_response(body, status=status)


def _version(raw: object) -> int:
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 19:
        return int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    raise BadRequest("version (a positive integer) is required")


def _path_id(request: web.Request) -> str:
    return canonical_id(request.match_info["inspection_id"])


def _cursor(raw: str | None) -> str:
    if not raw:
        return ""
    try:
        return base64.urlsafe_b64decode(raw.encode("ascii") + b"==").decode("utf-8")
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise BadRequest("Invalid cursor") from exc


def _text_param(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and (not value or "\x00" in value or len(value) > 500):
        raise BadRequest(f"Invalid {name}")
    return value


async def list_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/inspections?status=&template_id=&inspector=&limit=&cursor=``."""
    access = await rest_db(request, DB)
    status = _text_param(request, "status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    limit = query_int(request, "limit", 50, minimum=1) or 50
    if limit > MAX_LIMIT:
        raise BadRequest(f"limit must be at most {MAX_LIMIT}")
    async with read_transaction(request.app[ENGINE]) as conn:
        found = await list_inspections(
            conn, access.db, owner=access.owner, status=status,
            template_id=_text_param(request, "template_id"),
            inspector=_text_param(request, "inspector"),
            after=_cursor(request.query.get("cursor")), limit=limit + 1,
        )  # fmt: skip
    page = found[:limit]
    more = len(found) > limit
    cursor = (
        base64.urlsafe_b64encode(page[-1]["id"].encode()).decode().rstrip("=") if more else None
    )
    return json_response({"results": page, "next": cursor})


async def create_handler(request: web.Request) -> web.Response:
    """``POST /api/v1/inspections {"id"?, "template_id", "title", ...}`` → 201."""
    access = await rest_db(request, DB)
    data = await read_json_object(request)
    check_document(data, request.app[SETTINGS])
    doc_id = data.pop("id", None)
    return await _apply(request, access, [Operation("create", doc_id, None, data)], _single)


async def get_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/inspections/{id}``."""
    access = await rest_db(request, DB)
    async with read_transaction(request.app[ENGINE]) as conn:
        found = await get_inspection(conn, access.db, _path_id(request), access.owner)
    return json_response(found, headers={"ETag": f'"{found["rev"]}"'})


async def patch_handler(request: web.Request) -> web.Response:
    """``PATCH /api/v1/inspections/{id} {"version", ...fields}``: 409 on a stale version."""
    access = await rest_db(request, DB)
    data = await read_json_object(request)
    if "version" not in data:
        raise BadRequest("version (a positive integer) is required")
    version = _version(data.pop("version"))
    check_document(data, request.app[SETTINGS])
    op = Operation("update", _path_id(request), version, data)
    return await _apply(request, access, [op], _single)


async def delete_handler(request: web.Request) -> web.Response:
    """``DELETE /api/v1/inspections/{id}?version=N``: a soft delete (a tombstone)."""
    access = await rest_db(request, DB)
    raw = request.query.get("version")
    if raw is None and request.can_read_body:
        raw = (await read_json_object(request)).get("version")
    op = Operation("delete", _path_id(request), _version(raw))
    return await _apply(request, access, [op], _single)


def _operation(index: int, raw: object, settings: Settings) -> Operation:
    if not isinstance(raw, dict):
        raise BadRequest(f"operations[{index}] must be a JSON object")
    unknown = set(raw) - {"op", "id", "version", "data"}
    if unknown:
        raise BadRequest(f"operations[{index}] has unknown members: {', '.join(sorted(unknown))}")
    op = raw.get("op")
    if op not in ("create", "update", "delete"):
        raise BadRequest(f"operations[{index}].op must be create, update or delete")
    version = raw.get("version")
    if version is not None:
        version = _version(version)
    data = raw.get("data", {})
    if not isinstance(data, dict):
        raise BadRequest(f"operations[{index}].data must be a JSON object")
    check_document(data, settings)  # nesting (400) and size (413), per operation
    doc_id = raw.get("id")
    if doc_id is not None and not isinstance(doc_id, str):
        raise BadRequest(f"operations[{index}].id must be a string")
    return Operation(op, doc_id, version, data)


async def batch_handler(request: web.Request) -> web.Response:
    """``POST /api/v1/sync/batch {"operations": [...]}`` → 207 with one result each.

    Malformed operations are per-operation 400 results; the others are applied.
    """
    access = await rest_db(request, DB)
    payload = await read_json_object(request, envelope=None)  # each operation's data checked
    raw_ops = payload.get("operations")
    if not isinstance(raw_ops, list):
        raise BadRequest("operations must be a list")
    if len(raw_ops) > MAX_OPERATIONS:
        raise TooLarge(f"A batch holds at most {MAX_OPERATIONS} operations ({len(raw_ops)} sent).")
    parsed: list[Operation | OpResult] = []
    for index, raw in enumerate(raw_ops):
        try:
            parsed.append(_operation(index, raw, request.app[SETTINGS]))
        except (BadRequest, TooLarge) as exc:
            parsed.append(OpResult(index, "error", None, exc=exc))
    ops = [p for p in parsed if isinstance(p, Operation)]

    def answer(applied: list[OpResult]) -> web.Response:
        done = iter(applied)
        results = []
        for index, item in enumerate(parsed):
            result = item if isinstance(item, OpResult) else next(done)
            result.index = index
            results.append(result.as_json(status_for(result)))
        return json_response({"results": results}, status=207)

    return await _apply(request, access, ops, answer) if ops else answer([])


async def changes_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/sync/changes?since=&limit=`` → ``{"results", "last_seq", "has_more"}``:
    the caller's inspections changed after ``since``, in seq order, deletions included."""
    access = await rest_db(request, DB)
    since = query_int(request, "since", 0) or 0
    limit = query_int(request, "limit", 100, minimum=1) or 100
    if limit > 1000:
        raise BadRequest("limit must be at most 1000")
    async with read_transaction(request.app[ENGINE]) as conn:
        rows = await read_changes(
            conn, access.db.id, since=since, upto=access.db.update_seq, limit=limit + 1,
            include_bodies=True, owner_id=access.owner,
        )  # fmt: skip
        missing = [(r.doc_id, r.winning_rev) for r in rows if r.body is None and not r.deleted]
        extra = await get_revisions(conn, access.db.id, missing) if missing else {}
    page = rows[:limit]
    results = []
    for row in page:
        entry: dict[str, Any] = {
            "seq": row.seq, "id": row.doc_id, "version": version_of(row.winning_rev),
            "deleted": row.deleted,
        }  # fmt: skip
        body = row.body
        if body is None and not row.deleted:
            stored = extra.get((row.doc_id, row.winning_rev))
            body = stored.body if stored is not None else None
        if not row.deleted and body is not None:
            entry["inspection"] = represent(row.doc_id, row.winning_rev, orjson.loads(body))
        results.append(entry)
    has_more = len(rows) > limit
    # Read to the end, every seq up to the committed update_seq was examined, matched or not
    # (another user's inspections are not the caller's): last_seq says so, so a checkpoint
    # moves on instead of rescanning them on every poll (SPEC §4, filtered feeds).
    upto = access.db.update_seq
    last_seq = page[-1].seq if has_more else max(upto, since, 0)
    return json_response({"results": results, "last_seq": last_seq, "has_more": has_more})
