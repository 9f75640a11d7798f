"""Cross-site request forgery protection for the ``AuthSession`` cookie.

The cookie is an *ambient* credential: a browser attaches it to every request to the
gateway, including requests a hostile page makes it send (a ``<form>`` posting
``enctype="text/plain"`` that spells a JSON document, which the gateway accepts like
CouchDB; a ``fetch(..., {mode: "no-cors", credentials: "include"})``).  ``SameSite=Lax``
stops most of them, but not those from a sibling origin of the same site (another port,
another subdomain), nor browsers that ignore the attribute.  So every unsafe request
(``POST``, ``PUT``, ``PATCH``, ``DELETE``) authenticated by the cookie, and every cookie
login (``POST /_session``, so a page cannot log the browser into the attacker's account),
must come from a trusted origin:

- the request's ``Origin`` header (or, lacking it, the origin of its ``Referer``) is the
  gateway's own origin (the ``Host`` it was asked for, over http or https; with
  ``GATEWAY_TRUST_PROXY`` also the ``X-Forwarded-Host``/``X-Forwarded-Proto`` of the proxy)
  or one of ``GATEWAY_CORS_ORIGINS`` (``*``: any origin, as for CORS).  An opaque origin
  (``Origin: null``: sandboxed frames, ``data:`` and ``file:`` pages) is never trusted;
- without ``Origin`` and ``Referer``, a browser that says ``Sec-Fetch-Site: cross-site`` or
  ``same-site`` is refused (it names no origin that could be trusted);
- a request with none of these headers is not from a browser page (PouchDB in Node, curl,
  CouchDB's replicator sending the cookie themselves) and passes.

Refusals are ``403 {"error": "forbidden", "reason": ...}``, decided before the body is read
or anything is claimed or written.  Basic and Bearer credentials are not ambient (a page can
only send them through a CORS preflight, which foreign origins fail, and the gateway never
asks a browser for Basic credentials), so they are not checked.  Safe methods are not
checked either: they change nothing, and CORS keeps their answers from foreign pages.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import lru_cache

from aiohttp import web
from yarl import URL

from gateway.auth import CTX_KEY, forwarded
from gateway.keys import SETTINGS
from gateway.settings import Settings
from replication import Forbidden

log = logging.getLogger("gateway.csrf")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_PORTS = {"http": 80, "https": 443}
FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})
MAX_SHOWN = 200  # characters of a refused origin repeated in the reason

Origin = tuple[str, str, int]  # scheme, host (lower case, IDNA), port


def parse_origin(text: str) -> Origin | None:
    """The (scheme, host, port) of an ``Origin`` value or a URL; None if opaque or invalid."""
    try:
        url = URL(text.strip())
        scheme, host, port = url.scheme.lower(), url.raw_host, url.port
    except (ValueError, TypeError, UnicodeError):
        return None
    if scheme not in DEFAULT_PORTS or not host or port is None:
        return None
    return scheme, host.lower().rstrip("."), port


@lru_cache(maxsize=16)
def _configured(cors_origins: tuple[str, ...]) -> tuple[bool, frozenset[Origin]]:
    """(any origin allowed, the configured origins parsed)."""
    parsed = (parse_origin(o) for o in cors_origins if o != "*")
    return "*" in cors_origins, frozenset(o for o in parsed if o is not None)


def own_origins(request: web.Request, settings: Settings) -> set[Origin]:
    """The origins a page served by this gateway has: its ``Host`` over http or https (TLS
    may end at a proxy), plus what a trusted proxy says it was asked for."""
    hosts = [request.host]
    schemes = {request.scheme, "https"}
    if settings.trust_proxy:
        hosts.append(forwarded(request, "X-Forwarded-Host") or "")
        schemes.add((forwarded(request, "X-Forwarded-Proto") or "").lower())
    found = (parse_origin(f"{scheme}://{host}") for host in hosts if host for scheme in schemes)
    return {origin for origin in found if origin is not None}


def trusted(origin: Origin, request: web.Request, settings: Settings) -> bool:
    any_origin, configured = _configured(settings.cors_origins)
    return any_origin or origin in configured or origin in own_origins(request, settings)


def cross_site_source(request: web.Request) -> str | None:
    """Why an unsafe request must be refused as cross-site, or None if it may proceed."""
    settings = request.app[SETTINGS]
    source = request.headers.get("Origin")
    if source is None:
        source = request.headers.get("Referer") or None
    if source is None:
        site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
        return f"a {site} request that names no origin" if site in FOREIGN_FETCH_SITES else None
    origin = parse_origin(source)
    if origin is not None and trusted(origin, request, settings):
        return None
    return f"origin {source[:MAX_SHOWN]!r}"


def needs_check(request: web.Request) -> bool:
    """Unsafe requests carrying the ambient cookie, and cookie logins."""
    if request.method in SAFE_METHODS:
        return False
    ctx = request.get(CTX_KEY)
    if ctx is not None:
        return ctx.method == "cookie"
    return request.method == "POST" and request.path == "/_session"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cookie-authenticated writes (and cookie logins) sent by foreign pages."""
    if needs_check(request):
        refused = cross_site_source(request)
        if refused is not None:
            # the access log has the path; headers (the Origin among them) are never logged
            log.warning("refused a cross-site cookie write: %s %s", request.method, request.path)
            raise Forbidden(
                f"Cross-site request refused ({refused}): a request authenticated by the "
                "AuthSession cookie may only change data from the gateway's own origin or "
                "one of GATEWAY_CORS_ORIGINS; other clients send Basic or Bearer credentials."
            )
    return await handler(request)
