"""Refuse a URL whose percent-escapes do not decode as UTF-8 (400), before any route runs.

yarl decodes ``%C3%A9`` to ``é`` but leaves an escape that is not UTF-8 (``%FF``, or an
encoded surrogate such as ``%ED%A0%80``) as its three characters, so ``/db/%FF`` would name
the document ``"%FF"``, the very one ``/db/%25FF`` names, and ``?key="%FF"`` would look it
up.  CouchDB refuses such URLs; so does this middleware, for the path and the query alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import unquote_to_bytes

from aiohttp import web

from replication import BadRequest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def check_url(raw_path: str) -> None:
    """Raise ``BadRequest`` unless every percent-escape of ``raw_path`` is UTF-8."""
    if "%" not in raw_path:
        return
    try:
        unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("The URL holds percent-escapes that are not valid UTF-8.") from exc


@web.middleware
async def url_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    check_url(request.raw_path)
    return await handler(request)
