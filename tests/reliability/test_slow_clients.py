"""Slow clients cannot exhaust the server: feed readers that never read their socket.

Each test runs a real ``gateway serve`` process and opens raw TCP connections with a small
receive buffer that send a ``_changes`` (or ``_db_updates``) request and then never read.
The server must hold back what the reader does not take (bounded buffers, back-pressure),
keep serving everybody else meanwhile, and drop the stuck connection once it has taken
nothing for ``GATEWAY_FEED_SEND_TIMEOUT_SECONDS``, heartbeats included.  Every wait is
bounded; no duration is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import changes_scan
from gateway.settings import Settings
from tests.helpers import Couch, basic
from tests.processes import Instance, start_instances, stop_all

SEND_TIMEOUT_S = 3  # the gateway's GATEWAY_FEED_SEND_TIMEOUT_SECONDS in these tests
RCVBUF = 4096  # the stuck readers' receive buffer
DB = "slow"
DOC_BYTES = 2000
BATCH = 200  # documents per _bulk_docs
BATCHES = 40  # 8,000 documents, 16 MB of bodies: every include_docs feed carries that much
STUCK_STREAMS = 8  # continuous and eventsource readers (half each) with include_docs
STUCK_LONGPOLLS = 2  # longpolls whose (big) result is never read
# Peak RSS growth allowed while the stuck readers exist.  Without back-pressure each of the
# ten readers would buffer its whole feed (about 17 MB each, 170 MB in all); with it each
# holds at most about 1 MiB of rendered rows plus the transport's 64 KiB (measured: +5 MiB on
# PostgreSQL, +30 MiB on SQLite, mostly allocator churn from the writes and renders).
RSS_GROWTH_LIMIT_KIB = 64 * 1024
DROP_WAIT_S = 60  # bounded wait for the server to drop the stuck connections
LISTENERS = re.compile(rb'^gateway_feed_listeners\{feed="(\w+)"\} ([0-9.]+)$', re.M)


@pytest.fixture
async def gateway(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> AsyncIterator[Instance]:
    """One ``gateway serve`` process with a short feed send timeout, ready; always stopped."""
    started: list[Instance] = []
    try:
        env = {"GATEWAY_FEED_SEND_TIMEOUT_SECONDS": str(SEND_TIMEOUT_S)}
        await start_instances(started, 1, database_url, tmp_path, extra_env=env)
        yield started[0]
    finally:
        await stop_all(started)


def peak_rss_kib(instance: Instance) -> int:
    """The process's peak resident set size so far (``VmHWM``), in KiB."""
    assert instance.proc is not None
    for line in Path(f"/proc/{instance.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM line")


async def open_stuck(port: int, path: str, user: str = "admin") -> socket.socket:
    """Connect with a small receive buffer, send ``GET path`` and never read."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)  # before the handshake
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {basic(user)}\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    return sock


async def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the socket still delivers until the server closed it (EOF or reset)."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    try:
        while chunk := await loop.sock_recv(sock, 65536):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


async def feed_listeners(session: aiohttp.ClientSession, instance: Instance) -> dict[str, int]:
    return await feed_listeners_at(session, instance.url)


async def feed_listeners_at(session: aiohttp.ClientSession, url: str) -> dict[str, int]:
    """The open feeds by type, from ``GET /metrics``."""
    async with session.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.read()
    return {feed.decode(): int(float(n)) for feed, n in LISTENERS.findall(text)}


async def wait_listeners(
    session: aiohttp.ClientSession, instance: Instance, expected: dict[str, int]
) -> dict[str, int]:
    """Poll ``/metrics`` (bounded) until the open feeds are ``expected``; the last reading."""
    seen: dict[str, int] = {}
    for _ in range(DROP_WAIT_S * 5):
        seen = await feed_listeners(session, instance)
        if all(seen.get(feed, 0) == n for feed, n in expected.items()):
            return seen
        await asyncio.sleep(0.2)
    return seen


def stalled_lines(instance: Instance) -> int:
    return instance.log_path.read_text(errors="replace").count("closing a stalled feed")


def errors_logged(instance: Instance) -> int:
    return instance.log_path.read_text(errors="replace").count('"level":"ERROR"')


async def follow(session: aiohttp.ClientSession, url: str, ids: set[str], want: int) -> None:
    """A healthy continuous reader: collect document ids until ``want`` have arrived."""
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
        assert resp.status == 200
        async for line in resp.content:
            if line.strip():
                ids.add(orjson.loads(line)["id"])
            if len(ids) >= want:
                return


async def test_readers_that_never_read_are_held_back_then_dropped_while_others_are_served(
    gateway: Instance,
) -> None:
    """Ten readers that never read (continuous and eventsource feeds with include_docs, and
    longpolls with a 4 MB result) while 16 MB of documents are written: the server's peak
    RSS grows by far less than the feeds would hold (back-pressure, bounded buffers), every
    write succeeds, a healthy live reader receives every document, and each stuck
    connection is cut (never finished) by the send timeout, so no listener is left.  Longpoll
    readers that hang up while waiting end quietly too (nothing logged as an error)."""
    auth = {"Authorization": basic("admin"), "Content-Type": "application/json"}
    body = "x" * DOC_BYTES
    total = 1 + BATCHES * BATCH
    sockets: list[socket.socket] = []
    async with aiohttp.ClientSession(headers=auth) as session:
        try:
            async with session.put(f"{gateway.url}/{DB}?access_mode=shared") as resp:
                assert resp.status == 201
            async with session.put(f"{gateway.url}/{DB}/warm", data=b'{"a":1}') as resp:
                assert resp.status == 201
            received: set[str] = set()
            healthy = asyncio.create_task(
                follow(
                    session,
                    f"{gateway.url}/{DB}/_changes?feed=continuous&heartbeat=1000",
                    received,
                    total,
                )
            )
            hung_up = [
                await open_stuck(gateway.port, f"/{DB}/_changes?feed=longpoll&since=now&{q}")
                for q in ("heartbeat=20", "heartbeat=20&include_docs=true", "timeout=60000")
            ]
            opened = await wait_listeners(session, gateway, {"continuous": 1, "longpoll": 3})
            assert (opened["continuous"], opened["longpoll"]) == (1, 3), opened
            for sock in hung_up:
                sock.close()
            baseline = peak_rss_kib(gateway)

            stream_feeds = [
                f"/{DB}/_changes?feed={feed}&include_docs=true&heartbeat=50&since=0"
                for feed in ("continuous", "eventsource")
            ]
            for n in range(STUCK_STREAMS):
                sockets.append(await open_stuck(gateway.port, stream_feeds[n % 2]))
            for batch in range(BATCHES):
                docs = [{"_id": f"d{batch:03}-{i:03}", "body": body} for i in range(BATCH)]
                async with session.post(
                    f"{gateway.url}/{DB}/_bulk_docs", data=orjson.dumps({"docs": docs})
                ) as resp:
                    assert resp.status == 201, (resp.status, await resp.text())
                    assert all(row.get("ok") for row in await resp.json())
                if batch == BATCHES // 4:  # by now the result is 4 MB
                    for _ in range(STUCK_LONGPOLLS):
                        path = f"/{DB}/_changes?feed=longpoll&include_docs=true&since=0"
                        sockets.append(await open_stuck(gateway.port, path))
            await asyncio.wait_for(healthy, DROP_WAIT_S)
            assert len(received) == total

            # The stuck connections are dropped; only the healthy reader's feed was open
            # (it has finished now), and the log says why each went.
            after = await wait_listeners(
                session, gateway, {"continuous": 0, "eventsource": 0, "longpoll": 0}
            )
            assert after == {"continuous": 0, "eventsource": 0, "longpoll": 0}, after
            peak = peak_rss_kib(gateway)
            for sock in sockets:
                data = await asyncio.wait_for(read_until_closed(sock), DROP_WAIT_S)
                assert data.startswith(b"HTTP/1.1 200"), data[:200]
                assert not data.endswith(b"0\r\n\r\n"), "a stuck feed ended normally"
            assert stalled_lines(gateway) == len(sockets), gateway.log_tail()
            assert errors_logged(gateway) == 0, gateway.log_tail()

            # Still serving: a normal read sees every document.
            async with session.get(f"{gateway.url}/{DB}") as resp:
                assert (await resp.json())["doc_count"] == total
        finally:
            for sock in sockets:
                sock.close()
    growth = peak - baseline
    print(
        f"\nslow clients: {len(sockets)} stuck readers, {total} docs "
        f"({total * DOC_BYTES // 2**20} MB) written; peak RSS {baseline // 1024} -> "
        f"{peak // 1024} MiB (+{growth // 1024} MiB)"
    )
    assert growth <= RSS_GROWTH_LIMIT_KIB, f"peak RSS grew by {growth} KiB"


@pytest.fixture
async def small_sndbuf_gateway(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[str, list[asyncio.Transport]]]:
    """The gateway app served in process on a free port, with a short send timeout and a
    4 KiB kernel send buffer on every feed connection (so heartbeats alone fill the
    kernel's buffers in a moment instead of megabytes); the URL and those connections'
    transports, to watch what waits in them."""
    from gateway.app import create_app

    transports: list[asyncio.Transport] = []

    async def shrink(request: web.Request, _resp: web.StreamResponse) -> None:
        transport = request.transport
        if transport is not None and "feed" in request.query:
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF
            )
            transports.append(transport)  # type: ignore[arg-type]

    app = create_app(replace(settings, feed_send_timeout_seconds=SEND_TIMEOUT_S), migrate=False)
    app.on_response_prepare.append(shrink)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", transports
    finally:
        await runner.cleanup()


async def test_heartbeats_do_not_pile_up_behind_a_reader_that_never_reads(
    small_sndbuf_gateway: tuple[str, list[asyncio.Transport]],
) -> None:
    """Idle feeds with a 1 ms heartbeat whose readers never read: once the kernel's buffers
    are full, at most one heartbeat ever waits in the server (the rest are skipped, not
    queued), and the server drops each connection after the send timeout (``_changes``
    continuous and eventsource, and ``_db_updates``) while answering others meanwhile."""
    url, transports = small_sndbuf_gateway
    port = int(url.rsplit(":", 1)[1])
    paths = [
        f"/{DB}/_changes?feed=eventsource&heartbeat=1&since=now",
        f"/{DB}/_changes?feed=continuous&heartbeat=1&since=now",
        "/_db_updates?feed=eventsource&heartbeat=1&since=now",
    ]
    sockets: list[socket.socket] = []
    most_waiting = 0

    async def watch() -> None:
        nonlocal most_waiting
        while True:
            for transport in transports:
                if not transport.is_closing():
                    most_waiting = max(most_waiting, transport.get_write_buffer_size())
            await asyncio.sleep(0.005)

    async with aiohttp.ClientSession(headers={"Authorization": basic("admin")}) as session:
        async with session.put(f"{url}/{DB}?access_mode=shared") as resp:
            assert resp.status == 201
        transports.clear()
        watcher = asyncio.create_task(watch())
        try:
            for path in paths:
                sockets.append(await open_stuck(port, path))
            for _ in range(DROP_WAIT_S * 5):  # until the server has dropped all three
                if len(transports) == len(paths) and all(t.is_closing() for t in transports):
                    break
                await asyncio.sleep(0.2)
            for sock in sockets:  # only now read: each response was cut, not finished
                data = await asyncio.wait_for(read_until_closed(sock), DROP_WAIT_S)
                assert data.startswith(b"HTTP/1.1 200"), data[:200]
                assert not data.endswith(b"0\r\n\r\n"), "a stuck feed ended normally"
            async with session.get(f"{url}/{DB}") as resp:  # still serving
                assert resp.status == 200
            metrics = await feed_listeners_at(session, url)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            for sock in sockets:
                sock.close()
    assert (metrics["eventsource"], metrics["continuous"]) == (0, 0), metrics
    assert len(transports) == len(paths)
    # One eventsource heartbeat (with its chunk framing) is 33 bytes; a continuous one 6.
    assert 0 < most_waiting <= 64, f"{most_waiting} bytes of heartbeats waited in the server"


async def test_heavy_documents_are_fed_in_small_queries_and_none_is_missed(
    client: Any, admin: Couch, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents of 160 KB: a feed with ``include_docs`` reads their bodies about 1 MiB per
    query after a first query of ten rows (what a feed holds while its reader is slow), not
    a whole batch of 1,000 rows at once, and still returns every document exactly once in
    seq order, with its body: as a normal feed, with a limit, and as a continuous feed."""
    pad = "h" * 160_000
    docs = [{"_id": f"heavy-{n:02}", "n": n, "pad": pad} for n in range(24)]
    await admin.post(f"/{db}/_bulk_docs", {"docs": docs}, expected_status=201)
    body_bytes: list[int] = []  # per query of the feed: the bodies it read
    real_read = changes_scan.read_changes

    async def spy(*args: Any, **kwargs: Any) -> Any:
        rows = await real_read(*args, **kwargs)
        body_bytes.append(sum(len(row.body or b"") for row in rows))
        return rows

    monkeypatch.setattr(changes_scan, "read_changes", spy)
    await admin.get(f"/{db}/_changes")
    assert body_bytes == [0]  # no bodies: one query for all 24 rows
    body_bytes.clear()
    feed = await admin.get(f"/{db}/_changes?include_docs=true")
    assert len(body_bytes) >= 4 and sum(body_bytes) >= 24 * len(pad), body_bytes
    doc_bytes = len(pad) + 100
    assert body_bytes[0] <= changes_scan.FIRST_BODY_QUERY_ROWS * doc_bytes, body_bytes
    assert max(body_bytes[1:]) <= changes_scan.BODY_BYTES_PER_QUERY + doc_bytes, body_bytes
    assert [row["id"] for row in feed["results"]] == [d["_id"] for d in docs]
    assert all(row["doc"]["pad"] == pad for row in feed["results"])
    seqs = [row["seq"] for row in feed["results"]]
    assert seqs == sorted(set(seqs)) and feed["last_seq"] == seqs[-1]

    limited = await admin.get(f"/{db}/_changes?include_docs=true&limit=7&since={seqs[2]}")
    assert [row["id"] for row in limited["results"]] == [d["_id"] for d in docs[3:10]]
    assert limited["last_seq"] == seqs[9]

    path = f"/{db}/_changes?feed=continuous&include_docs=true&timeout=0"
    async with client.get(path, headers=admin.headers()) as resp:  # one JSON object a line
        assert resp.status == 200
        lines = [orjson.loads(line) for line in (await resp.read()).splitlines() if line]
    assert [line["id"] for line in lines[:-1]] == [d["_id"] for d in docs]
    assert all(line["doc"]["n"] == n for n, line in enumerate(lines[:-1]))
    assert lines[-1] == {"last_seq": seqs[-1]}
