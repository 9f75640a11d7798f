"""``GET|POST /{db}/_changes``: normal, longpoll, continuous and eventsource feeds.

Every feed streams: rows are written as they are read, in batches, never collected whole.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from gateway.changes_params import ChangesParams, parse_changes_params
from gateway.changes_scan import ScanState, current_seq, scan
from gateway.cors import add_cors_headers
from gateway.dbctx import DbAccess, open_db
from gateway.keys import ENGINE, NOTIFIER, SETTINGS


async def changes(request: web.Request) -> web.StreamResponse:
    access = await open_db(request)
    settings = request.app[SETTINGS]
    params = await parse_changes_params(request, settings)
    engine = request.app[ENGINE]
    since = access.db.update_seq if params.since == "now" else params.since.value
    if params.since == "now":
        since = await current_seq(engine, access.db.name)
    state = ScanState(since)
    if params.feed in ("continuous", "eventsource"):
        return await _stream_feed(request, access, params, state)
    return await _json_feed(request, access, params, state)


async def _start(request: web.Request, content_type: str) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    resp.enable_chunked_encoding()
    add_cors_headers(request, resp)
    await resp.prepare(request)
    return resp


def _deadline(params: ChangesParams) -> float:
    return time.monotonic() + params.timeout_ms / 1000


async def _wait(
    request: web.Request,
    access: DbAccess,
    event: asyncio.Event,
    params: ChangesParams,
    deadline: float,
) -> bool:
    """Wait for a change, a heartbeat slot or the poll interval; False when the feed times out."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    slot = min(remaining, request.app[SETTINGS].feed_poll_seconds)
    if params.heartbeat_ms:
        slot = min(slot, params.heartbeat_ms / 1000)
    try:
        await asyncio.wait_for(event.wait(), timeout=slot)
    except TimeoutError:
        pass
    return True


async def _json_feed(
    request: web.Request, access: DbAccess, params: ChangesParams, state: ScanState
) -> web.StreamResponse:
    notifier = request.app[NOTIFIER]
    batch = request.app[SETTINGS].changes_batch_size
    engine = request.app[ENGINE]
    resp = await _start(request, "application/json")
    await resp.write(b'{"results":[\n')
    first = True
    deadline = _deadline(params)
    last_beat = time.monotonic()
    while True:
        event = notifier.current(access.db.name)
        async for rows in scan(engine, access, params, state, batch=batch):
            chunk = b",\n".join(_interval(row, state, params) for row in rows)
            await resp.write(chunk if first else b",\n" + chunk)
            first = False
        if params.feed != "longpoll" or state.matched or params.descending:
            break
        if not await _wait(request, access, event, params, deadline):
            break
        if params.heartbeat_ms and time.monotonic() - last_beat >= params.heartbeat_ms / 1000:
            await resp.write(b"\n")
            last_beat = time.monotonic()
    pending = 0
    if params.limit is not None and state.matched >= params.limit and not params.descending:
        pending = max(0, await current_seq(engine, access.db.name) - state.since)
    await resp.write(
        b"\n],\n" + orjson.dumps({"last_seq": state.since, "pending": pending})[1:] + b"\n"
    )
    await resp.write_eof()
    return resp


def _sse_event(row: bytes) -> bytes:
    seq = orjson.loads(row)["seq"]
    return b"data: " + row + b"\nid: " + str(seq).encode() + b"\n\n"


def _interval(row: bytes, state: ScanState, params: ChangesParams) -> bytes:
    state.row_index += 1
    if params.seq_interval and state.row_index % params.seq_interval:
        obj = orjson.loads(row)
        obj["seq"] = None
        return orjson.dumps(obj)
    return row


async def _stream_feed(
    request: web.Request, access: DbAccess, params: ChangesParams, state: ScanState
) -> web.StreamResponse:
    notifier = request.app[NOTIFIER]
    batch = request.app[SETTINGS].changes_batch_size
    engine = request.app[ENGINE]
    sse = params.feed == "eventsource"
    resp = await _start(request, "text/event-stream" if sse else "application/json")
    deadline = _deadline(params)
    last_beat = time.monotonic()
    try:
        while True:
            event = notifier.current(access.db.name)
            wrote = False
            async for rows in scan(engine, access, params, state, batch=batch):
                wrote = True
                if sse:
                    await resp.write(b"".join(_sse_event(row) for row in rows))
                else:
                    await resp.write(b"\n".join(rows) + b"\n")
            if params.limit is not None and state.matched >= params.limit:
                break
            if wrote:
                deadline = _deadline(params)
            if not await _wait(request, access, event, params, deadline):
                break
            if params.heartbeat_ms and time.monotonic() - last_beat >= params.heartbeat_ms / 1000:
                await resp.write(b"event: heartbeat\ndata: \n\n" if sse else b"\n")
                last_beat = time.monotonic()
        if not sse:
            await resp.write(orjson.dumps({"last_seq": state.since}) + b"\n")
        await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return resp
