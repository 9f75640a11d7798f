"""``GET /_db_updates`` (which databases changed) and ``GET /api/v1/activity`` (what changed,
where and by whom): the server-wide feeds the manager dashboard reads.  Managers and admins.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any

import orjson
from aiohttp import web

from gateway.access import require_staff
from gateway.auth import context
from gateway.feedsend import FeedSender
from gateway.jsonio import json_response, query_int
from gateway.keys import ENGINE, NOTIFIER, SETTINGS
from gateway.notifier import ANY
from replication import BadRequest
from schema.activity import activity_since, db_updates, latest_change, positions, recent
from schema.engine import read_transaction

FEEDS = ("normal", "longpoll", "continuous", "eventsource")


def _timeout(request: web.Request) -> float:
    settings = request.app[SETTINGS]
    ms = query_int(request, "timeout", 60_000) or 0
    return min(ms, settings.max_feed_timeout_ms) / 1000


async def _wait_any(
    request: web.Request, event: asyncio.Event, seen: int, deadline: float, heartbeat: float = 0
) -> bool:
    """Wait until any database changes after change number ``seen``, or a heartbeat slot
    passes; False once past ``deadline``.  No query runs while waiting."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or request.app[NOTIFIER].stopping:
        return False
    request.app[NOTIFIER].floor(ANY, seen)
    slot = min(remaining, heartbeat) if heartbeat else remaining
    try:
        await asyncio.wait_for(event.wait(), timeout=slot)
    except TimeoutError:
        pass
    return not request.app[NOTIFIER].stopping


def _update_row(name: str, update_seq: int, change_seq: int) -> dict[str, Any]:
    return {
        "db_name": name,
        "type": "created" if update_seq == 0 else "updated",
        "seq": change_seq,
    }


def _render(rows: list[dict[str, Any]], *, sse: bool) -> bytes:
    """Rows of a continuous (one JSON object per line) or eventsource feed."""
    if sse:
        return b"".join(
            b"data: " + orjson.dumps(r) + b"\nid: " + str(r["seq"]).encode() + b"\n\n" for r in rows
        )
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


async def db_updates_handler(request: web.Request) -> web.StreamResponse:
    """``GET /_db_updates?feed=&since=&timeout=&heartbeat=&limit=``, as CouchDB's (databases
    deleted since are not reported: their rows are gone)."""
    require_staff(context(request).user, "read _db_updates")
    feed = request.query.get("feed", "normal")
    if feed not in FEEDS:
        raise BadRequest(f"feed must be one of {', '.join(FEEDS)}")
    engine = request.app[ENGINE]
    raw_since = request.query.get("since", "0")
    if raw_since == "now":
        async with read_transaction(engine) as conn:
            since = await latest_change(conn)
    else:
        since = query_int(request, "since", 0) or 0
    limit = query_int(request, "limit", 1000, minimum=1) or 1000
    heartbeat = query_int(request, "heartbeat", 0) or 0
    deadline = time.monotonic() + _timeout(request)
    notifier = request.app[NOTIFIER]
    stream: web.StreamResponse | None = None
    sender: FeedSender | None = None  # bounded buffer and send timeout (gateway.feedsend)
    sse = feed == "eventsource"
    last_beat = time.monotonic()
    try:
        while True:
            event = notifier.current(ANY)
            async with read_transaction(engine) as conn:
                found = await db_updates(conn, since, limit)
            rows = [_update_row(u.name, u.update_seq, u.change_seq) for u in found]
            if found:
                since = found[-1].change_seq
            if feed in ("normal", "longpoll") and (rows or feed == "normal"):
                return json_response({"results": rows, "last_seq": since})
            if sender is None and feed in ("continuous", "eventsource"):
                stream = web.StreamResponse(
                    headers={
                        "Content-Type": "text/event-stream" if sse else "application/json",
                        "Cache-Control": "no-cache",
                    }
                )
                await stream.prepare(request)
                send_timeout = request.app[SETTINGS].feed_send_timeout_seconds
                sender = FeedSender(request, stream, send_timeout)
            if sender is not None and rows:
                await sender.send(_render(rows, sse=sse))
                deadline = time.monotonic() + _timeout(request)
            if not await _wait_any(request, event, since, deadline, heartbeat / 1000):
                break
            beat_due = heartbeat and time.monotonic() - last_beat >= heartbeat / 1000
            if sender is not None and beat_due:
                await sender.heartbeat(b"event: heartbeat\ndata: \n\n" if sse else b"\n")
                last_beat = time.monotonic()
        if stream is None or sender is None:
            return json_response({"results": [], "last_seq": since})
        if not sse:
            await sender.send(orjson.dumps({"last_seq": since}) + b"\n")
        await sender.finish()
        return stream
    except ConnectionResetError:  # the client left (or stalled and was disconnected)
        if stream is None:
            raise
        return stream


def _encode(change: int, seen: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([change, seen])).decode().rstrip("=")


def _decode(raw: str) -> tuple[int, dict[str, int]]:
    try:
        change, seen = orjson.loads(base64.urlsafe_b64decode(raw.encode("ascii") + b"=="))
    except (ValueError, UnicodeError, binascii.Error, TypeError) as exc:
        raise BadRequest("Invalid since token") from exc
    if not _position(change) or not isinstance(seen, dict):
        raise BadRequest("Invalid since token")
    if not all(isinstance(k, str) and _position(v) for k, v in seen.items()):
        raise BadRequest("Invalid since token")
    return change, seen


def _position(value: object) -> bool:
    """A change or update number as a database can hold it (a BIGINT, not negative)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


async def activity_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/activity[?since=TOKEN][&limit=][&feed=longpoll][&timeout=]``.

    Without ``since``: the latest changes across databases, newest first, and a ``since``
    token for "everything after this".  With it: what changed after the token, in each
    database's seq order (longpoll waits for a change), and the next token.  Each entry:
    ``{"db", "seq", "id", "rev", "deleted", "user", "at"}`` (``user`` wrote that change).
    """
    require_staff(context(request).user, "read the activity feed")
    limit = query_int(request, "limit", 100, minimum=1) or 100
    if limit > 1000:
        raise BadRequest("limit must be at most 1000")
    engine = request.app[ENGINE]
    raw = request.query.get("since")
    if not raw:
        async with read_transaction(engine) as conn:
            change, seen = await positions(conn)
            latest = await recent(conn, limit)
        return json_response(
            {"results": [a.as_json() for a in latest], "since": _encode(change, seen)}
        )
    change, seen = _decode(raw)
    longpoll = request.query.get("feed") == "longpoll"
    deadline = time.monotonic() + _timeout(request)
    while True:
        event = request.app[NOTIFIER].current(ANY)
        async with read_transaction(engine) as conn:
            found, change, seen = await activity_since(conn, change, seen, limit)
        if found or not longpoll or not await _wait_any(request, event, change, deadline):
            return json_response(
                {"results": [a.as_json() for a in found], "since": _encode(change, seen)}
            )
