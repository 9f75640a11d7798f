"""``GET|POST /{db}/_changes``: normal, longpoll, continuous and eventsource feeds.

Rows are rendered in batches, one query per batch.  A normal feed that fits in
``BUFFER_LIMIT`` bytes is sent as one response; anything larger is streamed as it is read,
in pieces of at most ``BUFFER_LIMIT`` (``PIECE_BYTES`` for continuous and eventsource
feeds, whose batches go out as soon as they are read), with back-pressure and a send
timeout (``gateway.feedsend``): a reader that stops reading holds the rest of the feed back,
and is disconnected once it has taken nothing for the timeout.
Longpoll and continuous feeds grab the database's wake-up event *before* each scan, so a
change committed during a scan is never slept through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from gateway.changes_params import ChangesParams, parse_changes_params
from gateway.changes_scan import ScanState, current_seq, scan
from gateway.cors import add_cors_headers
from gateway.dbctx import DbAccess, open_db
from gateway.feedsend import WRITE_BUFFER_HIGH, FeedSender
from gateway.keys import ENGINE, NOTIFIER, SETTINGS
from gateway.metrics import count_docs_read, feed_listener
from gateway.notifier import FeedNotifier
from gateway.stats import count_out
from replication import ResetRequired
from schema.changes import count_pending
from schema.engine import raw_read

BUFFER_LIMIT = 256 * 1024
PIECE_BYTES = WRITE_BUFFER_HIGH


class FeedWriter:
    """Buffers a response body and sends it in chunks of about ``limit`` bytes once it grows
    that large (or when flushed); chunks go through a ``FeedSender`` (bounded buffer, send
    timeout)."""

    def __init__(self, request: web.Request, content_type: str, *, limit: int) -> None:
        self.request = request
        self.content_type = content_type
        self.buffer: list[bytes] = []
        self.size = 0
        self.resp: web.StreamResponse | None = None
        self.sender: FeedSender | None = None
        self.limit = limit

    async def start(self) -> None:
        """Send headers now (feeds that wait for changes)."""
        if self.resp is None:
            self.resp = web.StreamResponse(
                headers={"Content-Type": self.content_type, "Cache-Control": "no-cache"}
            )
            self.resp.enable_chunked_encoding()
            add_cors_headers(self.request, self.resp)
            await self.resp.prepare(self.request)
            timeout = self.request.app[SETTINGS].feed_send_timeout_seconds
            self.sender = FeedSender(self.request, self.resp, timeout)

    async def write(self, data: bytes) -> None:
        self.buffer.append(data)
        self.size += len(data)
        if self.size >= self.limit:
            await self.flush()

    async def flush(self) -> None:
        await self.start()
        if self.buffer and self.sender is not None:
            data = b"".join(self.buffer)
            self.buffer, self.size = [], 0
            await self.sender.send(data)

    async def heartbeat(self, data: bytes) -> None:
        """Send what is buffered, then ``data`` unless earlier bytes still wait to go out."""
        await self.flush()
        if self.sender is not None:
            await self.sender.heartbeat(data)

    async def finish(self) -> web.StreamResponse:
        if self.resp is None:
            return web.Response(body=b"".join(self.buffer), content_type=self.content_type)
        await self.flush()
        assert self.sender is not None
        await self.sender.finish()
        return self.resp


async def changes(request: web.Request) -> web.StreamResponse:
    access = await open_db(request)
    params = await parse_changes_params(request, request.app[SETTINGS])
    # The database row was read with the caller: its update_seq is a committed snapshot.
    since = access.db.update_seq if params.since == "now" else params.since.value
    if 0 < since < access.db.purge_seq and not params.descending:
        raise ResetRequired(
            f"Tombstones up to seq {access.db.purge_seq} were purged, after this replica's "
            f"checkpoint (seq {since}): it may still hold documents deleted since. Reset it: "
            "replicate into a fresh local database (or delete its local copy), from seq 0."
        )
    state = ScanState(since)
    with feed_listener(request, params.feed):  # longpoll, continuous, eventsource
        if params.feed in ("continuous", "eventsource"):
            return await _stream_feed(request, access, params, state)
        out = FeedWriter(request, "application/json", limit=BUFFER_LIMIT)
        try:
            return await _json_feed(request, access, params, state, out)
        except ConnectionResetError:  # the client left, or stalled and was disconnected
            if out.resp is None:
                raise
            return out.resp  # already started: nothing more to answer


def _deadline(params: ChangesParams) -> float:
    return time.monotonic() + params.timeout_ms / 1000


async def _idle(
    notifier: FeedNotifier,
    event: asyncio.Event,
    params: ChangesParams,
    deadline: float,
    beat: Callable[[], Awaitable[None]],
) -> bool:
    """Wait for a change until ``deadline``, sending a heartbeat every ``heartbeat`` ms;
    True when a change woke us, False at the deadline or when the server shuts down.  No
    query runs while waiting (see ``gateway.notifier``)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or notifier.stopping:
            return False
        slot = min(remaining, params.heartbeat_ms / 1000) if params.heartbeat_ms else remaining
        try:
            await asyncio.wait_for(event.wait(), timeout=slot)
            return not notifier.stopping
        except TimeoutError:
            if params.heartbeat_ms and deadline - time.monotonic() > 0:
                await beat()


async def _json_feed(
    request: web.Request,
    access: DbAccess,
    params: ChangesParams,
    state: ScanState,
    out: FeedWriter,
) -> web.StreamResponse:
    notifier = request.app[NOTIFIER]
    batch = request.app[SETTINGS].changes_batch_size
    engine = request.app[ENGINE]
    await out.write(b'{"results":[\n')
    first = True
    deadline = _deadline(params)
    upto: int | None = access.db.update_seq

    async def beat() -> None:
        await out.heartbeat(b"\n")

    while True:
        event = notifier.current(access.db.name)
        async for rows in scan(engine, access, params, state, batch=batch, upto=upto):
            if params.include_docs:
                count_docs_read(request, access.db.name, len(rows))
                count_out(request.app, len(rows))  # the dashboard's chart
            for seq, row in rows:
                await out.write((b"" if first else b",\n") + _interval(seq, row, state, params))
                first = False
        if params.feed != "longpoll" or state.matched or params.descending:
            break
        await out.start()  # a longpoll client gets its headers while it waits
        notifier.floor(access.db.name, state.since)
        if not await _idle(notifier, event, params, deadline, beat):
            break
        upto = None
    pending = 0
    if params.limit is not None and state.matched >= params.limit and not params.descending:
        # the documents still to come, each once (not the seqs: a document edited ten times
        # after since is one change to come)
        end = upto if upto is not None else await current_seq(engine, access.db.name)
        if end > state.since:
            async with raw_read(engine) as conn:
                pending = await count_pending(
                    conn, access.db.id, since=state.since, upto=end, owner_id=access.owner
                )
    tail = orjson.dumps({"last_seq": state.since, "pending": pending})
    await out.write(b"\n],\n" + tail[1:] + b"\n")
    return await out.finish()


def _interval(seq: int, row: bytes, state: ScanState, params: ChangesParams) -> bytes:
    """Apply ``seq_interval``: only every Nth row carries its seq (rows start with it)."""
    state.row_index += 1
    if params.seq_interval and state.row_index % params.seq_interval:
        head = b'{"seq":' + str(seq).encode() + b","
        return b'{"seq":null,' + row[len(head) :]
    return row


def _sse_event(seq: int, row: bytes) -> bytes:
    return b"data: " + row + b"\nid: " + str(seq).encode() + b"\n\n"


async def _stream_feed(
    request: web.Request, access: DbAccess, params: ChangesParams, state: ScanState
) -> web.StreamResponse:
    notifier = request.app[NOTIFIER]
    batch = request.app[SETTINGS].changes_batch_size
    engine = request.app[ENGINE]
    sse = params.feed == "eventsource"
    content_type = "text/event-stream" if sse else "application/json"
    out = FeedWriter(request, content_type, limit=PIECE_BYTES)
    await out.start()
    deadline = _deadline(params)

    async def beat() -> None:
        await out.heartbeat(b"event: heartbeat\ndata: \n\n" if sse else b"\n")

    try:
        while True:
            event = notifier.current(access.db.name)
            wrote = False
            async for rows in scan(engine, access, params, state, batch=batch):
                wrote = True
                if params.include_docs:
                    count_docs_read(request, access.db.name, len(rows))
                    count_out(request.app, len(rows))  # the dashboard's chart
                for seq, row in rows:
                    await out.write(_sse_event(seq, row) if sse else row + b"\n")
                await out.flush()  # a live feed sends what it has read at once
            if params.limit is not None and state.matched >= params.limit:
                break
            if wrote:
                deadline = _deadline(params)
            notifier.floor(access.db.name, state.since)
            if not await _idle(notifier, event, params, deadline, beat):
                break
        if not sse:
            await out.write(orjson.dumps({"last_seq": state.since}) + b"\n")
        return await out.finish()
    except ConnectionResetError:
        return out.resp or web.Response()
