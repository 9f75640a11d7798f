"""Requests aiohttp cannot parse get a CouchDB-shaped JSON error too.

A malformed request line, a bad header (``Content-Length: abc``), a header line too long
or an invalid chunked body never reaches the middlewares: aiohttp's protocol handler answers
it itself, in plain text.  ``install`` makes that answer ``{"error": "bad_request",
"reason": ...}`` (or ``internal_server_error`` for a 500), so every client meets one error
format whatever it sends.  The status, the logging and the connection closing stay
aiohttp's.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web, web_protocol
from aiohttp.web_request import BaseRequest

from gateway.errors import HTTP_ERROR_NAMES, error_response

_original = web_protocol.RequestHandler.handle_error


def _json_error(
    self: web_protocol.RequestHandler,
    request: BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    _original(self, request, status, exc, message)  # logs it; raises if a response began
    if status >= 500:
        resp = error_response(status, "internal_server_error", "An unexpected error occurred.")
    else:
        error = HTTP_ERROR_NAMES.get(status, "bad_request")
        reason = message or HTTPStatus(status).phrase
        resp = error_response(status, error, reason.strip())
    resp.force_close()
    return resp


def install() -> None:
    """Answer protocol errors with JSON (idempotent; every aiohttp server of the process)."""
    web_protocol.RequestHandler.handle_error = _json_error  # type: ignore[method-assign]
