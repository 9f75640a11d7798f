"""``/api/v1/checkpoints``: the checkpoint registry (staff read it, admins reset it)."""

from __future__ import annotations

from aiohttp import web

from gateway.access import require_admin, require_staff
from gateway.auth import context
from gateway.jsonio import json_response, query_bool, query_int
from gateway.keys import ENGINE
from replication import BadRequest
from schema.checkpoints import list_checkpoints, reset_checkpoints
from schema.engine import read_transaction, write_transaction


def _text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and (not value or "\x00" in value):
        raise BadRequest(f"Parameter {name} must be a non-empty string")
    return value


async def list_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/checkpoints?user=&db=``: user, db, id, seq, db_seq, lag, updated_at."""
    require_staff(context(request).user, "read the checkpoint registry")
    async with read_transaction(request.app[ENGINE]) as conn:
        found = await list_checkpoints(conn, _text(request, "user"), _text(request, "db"))
    return json_response({"results": [c.as_json() for c in found]})


async def reset_handler(request: web.Request) -> web.Response:
    """``DELETE /api/v1/checkpoints?user=U[&db=][&id=][&to_seq=N][&dry_run=true]``: delete
    (or rewind to N) a user's checkpoints so their next replication starts over (or from N)."""
    require_admin(context(request).user)
    user = _text(request, "user")
    if user is None:
        raise BadRequest("Parameter user is required")
    dry_run = query_bool(request, "dry_run")
    async with write_transaction(request.app[ENGINE]) as conn:
        changed = await reset_checkpoints(
            conn,
            user,
            db=_text(request, "db"),
            doc_id=_text(request, "id"),
            to_seq=query_int(request, "to_seq"),
            dry_run=dry_run,
        )
    return json_response(
        {
            "ok": True,
            "action": "rewound" if "to_seq" in request.query else "deleted",
            "dry_run": dry_run,
            "changed": [c.as_json() for c in changed],
        }
    )
