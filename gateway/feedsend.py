"""Sending a feed without letting a slow reader make the server buffer: bounded buffers,
back-pressure and a send timeout.

Each feed connection's transport buffer is capped (``WRITE_BUFFER_HIGH``): once that much
waits for the client, the feed stops producing (``drain``) until the client has taken it
down to ``WRITE_BUFFER_LOW``, so a feed holds at most one rendered batch plus the cap, and
no query runs for it meanwhile.  A client that takes nothing for
``GATEWAY_FEED_SEND_TIMEOUT_SECONDS`` (a reader that never reads, a network gone without a
reset) has its connection aborted: the buffered bytes are dropped, the handler ends and its
listener slot is freed.

Heartbeats only keep an idle connection open, so one is sent only when nothing earlier
still waits in the buffer; a buffer that stays non-empty from one heartbeat to the next for
the send timeout counts as stalled too.  Neither data nor heartbeats pile up.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

log = logging.getLogger("gateway.feeds")

WRITE_BUFFER_HIGH = 64 * 1024  # bytes waiting in user space before a feed waits
WRITE_BUFFER_LOW = 16 * 1024  # ... and until it may go on


class FeedStalled(ConnectionResetError):
    """The client took nothing for the send timeout; its connection was aborted."""


class FeedSender:
    """Writes one prepared streaming response with back-pressure and a send timeout."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, timeout: float) -> None:
        self._request = request
        self._resp = resp
        self._timeout = timeout
        self._waiting_since: float | None = None  # a heartbeat first found bytes waiting
        transport = request.transport
        if transport is not None:
            transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH, low=WRITE_BUFFER_LOW)

    async def send(self, data: bytes) -> None:
        """Write ``data`` and wait until the buffer is below its cap; ``FeedStalled`` (the
        connection aborted) when the client takes nothing for the send timeout."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._resp.write(data)
                await self._request.writer.drain()
        except TimeoutError:
            self._abort("took nothing")
        self._waiting_since = None

    async def finish(self) -> None:
        """End the response (its last chunk may wait for the client too, as long)."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._resp.write_eof()
        except TimeoutError:
            self._abort("took nothing")

    async def heartbeat(self, data: bytes) -> None:
        """Send ``data`` only if nothing is still waiting to go out (else skip it, and
        abort once bytes have been waiting for the send timeout)."""
        if self.buffered() == 0:
            self._waiting_since = None
            await self.send(data)
            return
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since >= self._timeout:
            self._abort("left earlier bytes unread")

    def buffered(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        transport = self._request.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def _abort(self, what: str) -> None:
        transport = self._request.transport
        log.warning(
            "closing a stalled feed: the client %s for %.0f s (%s %s, %d bytes dropped)",
            what,
            self._timeout,
            self._request.method,
            self._request.path,
            self.buffered(),
        )
        if transport is not None:
            transport.abort()  # not close(): that would wait for the client to read
        raise FeedStalled(f"the client {what} for {self._timeout} s")
