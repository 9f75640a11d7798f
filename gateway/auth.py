"""Who is asking: HTTP Basic, Bearer access tokens, CouchDB's ``AuthSession`` cookie.

Every route but a few public ones needs a valid, enabled user.  The user row is read on
every request (so disabling a user takes effect at once); only the expensive password check
is cached, keyed by a digest of (user id, stored hash, password) so a password change
invalidates it.  The two writes of a replication batch on PostgreSQL read it in their own
write statement instead (``gateway.callers``, ``schema.callers``): when that statement
did not confirm the caller, ``auth_middleware`` authenticates the request in full, then
serves it again (the write found the rows changed) or lets its error through.

Failed logins are rate-limited (``check_password``, used by Basic, ``POST /_session`` and
``POST /api/v1/auth/login``): per name given (lower-cased, known or not) and per client
address.  Each password verification reserves one attempt under both keys before it runs
and a good password gives it back, so a key over its limit is refused with 429 before any
password is checked.  A cache hit (a password this instance verified recently) skips the
limiter: it proves the caller already knows the password, and keeps PouchDB's Basic auth on
every request free of Redis round trips.  An unknown or disabled name is checked against a
stand-in hash, so it costs the same scrypt work as a wrong password (no timing oracle).

The ``AuthSession`` cookie is ``HttpOnly`` with a configurable ``SameSite`` (``Lax`` by
default) and ``Secure`` over https; ``gateway.csrf`` checks where the writes it
authenticates come from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
from aiohttp import web

from gateway.callers import is_remembered_route, may_remember, was_confirmed
from gateway.jsonio import read_ahead
from gateway.keys import ENGINE, PASSWORD_CACHE, RATE_LIMITER, REMEMBERED_CALLERS, SETTINGS
from gateway.ratelimit import Rule, client_address, key_part
from gateway.tokens import AccessClaims, read_access_token
from replication import BadRequest, TooManyRequests, Unauthorized
from schema.callers import CallerCheck, RecheckCaller
from schema.databases import DB_NAME_RE
from schema.engine import is_sqlite, raw_read
from schema.users import User, find_caller, hash_password, verify_password

SESSION_COOKIE = "AuthSession"
SESSION_ALGORITHM = "HS256"
SESSION_TTL_SECONDS = 600
SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
CTX_KEY = "gateway_ctx"
DB_KEY = "gateway_db"  # (name, Database | None) looked up with the user
LOCAL_KEY = "gateway_local"  # (id, (rev, body) | None) looked up with the user
DOCS_KEY = "gateway_docs"  # (ids, rows) a _revs_diff's documents, looked up with the user
REVS_DIFF_ROUTE = "/{db}/_revs_diff"
PREFETCH_BODY_LIMIT = 64 * 1024  # bytes: a replicator's _revs_diff is about 6 KiB per 100 ids
PREFETCH_MAX_IDS = 1000  # PouchDB asks about batch_size (default 100) documents at a time
PUBLIC_ROUTES = {
    ("GET", "/"),
    ("HEAD", "/"),
    ("GET", "/_session"),
    ("POST", "/_session"),
    ("DELETE", "/_session"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("GET", "/api/v1/openapi.json"),
    ("HEAD", "/api/v1/openapi.json"),
    # the handler asks for an admin when GATEWAY_METRICS_PUBLIC is false
    ("GET", "/metrics"),
    ("HEAD", "/metrics"),
    # the dashboard's static page and files hold no data (its APIs need a staff token);
    # other methods under /dashboard/ reach database handlers, which still require a user
    ("GET", "/dashboard"),
    ("HEAD", "/dashboard"),
}
# the dashboard's files; matched with the slash, so a database named "dashboardx" is not public
PUBLIC_PREFIXES = ("/dashboard/",)
# Health probes never look at the caller: credentials a probe happens to send must not make
# /healthz depend on the database (a liveness check would fail, and restart every instance,
# exactly while PostgreSQL is away).
PROBES = frozenset({"/healthz", "/readyz"})


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The authenticated caller of one request."""

    user: User
    method: str  # "basic" | "cookie" | "bearer"
    token: AccessClaims | None = None  # the access token's claims, for "bearer"
    # a remembered caller (gateway.callers), not looked up: the request's write confirms it
    check: CallerCheck | None = None


class PasswordCache:
    """A bounded cache of recent successful password checks (derived digests only)."""

    def __init__(self, size: int = 4096, ttl: float = 300.0) -> None:
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self._size = size
        self._ttl = ttl

    @staticmethod
    def _key(user: User, password: str) -> bytes:
        material = f"{user.id}\x00{user.password_hash}\x00{password}"
        return hashlib.sha256(material.encode()).digest()

    def cached(self, user: User, password: str) -> bool:
        """Tell whether ``password`` was verified for ``user`` recently (cheap, no scrypt)."""
        key = self._key(user, password)
        expiry = self._entries.get(key)
        if expiry is not None and expiry > time.monotonic():
            self._entries.move_to_end(key)
            return True
        return False

    def verify(self, user: User, password: str) -> bool:
        """Verify ``password`` for ``user`` (scrypt) and remember a success."""
        if not verify_password(password, user.password_hash):
            return False
        self._entries[self._key(user, password)] = time.monotonic() + self._ttl
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return True

    def check(self, user: User, password: str) -> bool:
        """Verify ``password`` for ``user``, using the cache when possible."""
        return self.cached(user, password) or self.verify(user, password)


def login_rules(request: web.Request, name: str) -> list[Rule]:
    """The failed-login limits a password check for ``name`` counts against."""
    settings = request.app[SETTINGS]
    window = settings.login_failure_window_seconds
    if window < 1:
        return []
    rules = []
    if settings.login_max_failures_per_user > 0:
        user_key = "login:user:" + key_part(name.lower())
        rules.append(Rule(user_key, settings.login_max_failures_per_user, window))
    if settings.login_max_failures_per_address > 0:
        addr_key = "login:addr:" + client_address(request, settings.trust_proxy)
        rules.append(Rule(addr_key, settings.login_max_failures_per_address, window))
    return rules


async def check_password(request: web.Request, name: str, user: User | None, password: str) -> User:
    """Return ``user`` if ``password`` is theirs; raise 401, or 429 while ``name`` or the
    client address has too many recent failures.

    ``user`` is None for an unknown or disabled name, which is limited and answered exactly
    like a wrong password.  Only the first check of a password on this instance reaches the
    limiter; cache hits return at once.
    """
    cache = request.app[PASSWORD_CACHE]
    if user is not None and cache.cached(user, password):
        return user
    limiter = request.app[RATE_LIMITER]
    rules = login_rules(request, name)
    decision = await limiter.acquire(rules)
    if not decision.allowed:
        raise TooManyRequests(
            f"Too many failed login attempts; retry in {decision.retry_after} seconds.",
            retry_after=decision.retry_after,
        )
    if user is None:
        # the same scrypt work as a wrong password: response time tells no name's existence
        verify_password(password, _unknown_user_hash())
        raise Unauthorized("Name or password is incorrect.")
    if not cache.verify(user, password):
        raise Unauthorized("Name or password is incorrect.")
    await limiter.refund([rule.key for rule in rules])  # a good password does not count
    return user


@cache
def _unknown_user_hash() -> str:
    """A hash no password matches, checked for unknown and disabled names."""
    return hash_password(secrets.token_urlsafe(32))


def parse_basic(header: str) -> tuple[str, str]:
    """Split a Basic ``Authorization`` header into (name, password)."""
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("Malformed Basic credentials.") from exc
    name, sep, password = decoded.partition(":")
    if not sep or "\x00" in name:
        raise Unauthorized("Malformed Basic credentials.")
    return name, password


def make_session_cookie(secret: str, user: User) -> str:
    """Return a signed session token for ``user``."""
    now = int(time.time())
    claims = {
        "sub": user.name,
        "uid": user.id,
        "iat": now,
        "exp": now + SESSION_TTL_SECONDS,
        "typ": "session",
    }
    return jwt.encode(claims, secret, algorithm=SESSION_ALGORITHM)


def read_session_cookie(secret: str, token: str) -> tuple[str, int]:
    """Return (user name, user id) of a valid session token, or raise ``Unauthorized``."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[SESSION_ALGORITHM],
            options={"require": ["exp", "sub", "uid"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("Session expired.") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("Invalid session.") from exc
    uid = claims.get("uid")
    if claims.get("typ") != "session" or not isinstance(claims.get("sub"), str):
        raise Unauthorized("Invalid session.")
    if not isinstance(uid, int) or isinstance(uid, bool):
        raise Unauthorized("Invalid session.")
    return claims["sub"], uid


def forwarded(request: web.Request, header: str) -> str | None:
    """The last value of a proxy's ``X-Forwarded-*`` header, with ``GATEWAY_TRUST_PROXY``
    only (the proxy in front appends it; what is left of it is whatever the client sent)."""
    if not request.app[SETTINGS].trust_proxy:
        return None
    values = [v.strip() for line in request.headers.getall(header, []) for v in line.split(",")]
    values = [v for v in values if v]
    return values[-1] if values else None


def is_https(request: web.Request) -> bool:
    """Whether the browser reached the gateway over https (here, or at a trusted proxy)."""
    return request.secure or (forwarded(request, "X-Forwarded-Proto") or "").lower() == "https"


def _cookie_attributes(request: web.Request) -> dict[str, Any]:
    """``HttpOnly`` (no script reads it), ``SameSite`` from the settings (``Lax`` by default),
    ``Secure`` over https and always with ``SameSite=None`` (browsers demand it)."""
    samesite = request.app[SETTINGS].session_cookie_samesite
    return {
        "path": "/",
        "httponly": True,
        "samesite": SAMESITE[samesite],
        "secure": samesite == "none" or is_https(request),
    }


def set_session_cookie(request: web.Request, resp: web.StreamResponse, user: User) -> None:
    """Set the ``AuthSession`` cookie for ``user`` on ``resp``."""
    token = make_session_cookie(request.app[SETTINGS].secret_key, user)
    resp.set_cookie(
        SESSION_COOKIE, token, max_age=SESSION_TTL_SECONDS, **_cookie_attributes(request)
    )


def clear_session_cookie(request: web.Request, resp: web.StreamResponse) -> None:
    """Expire the ``AuthSession`` cookie (same attributes, so every browser drops it)."""
    resp.del_cookie(SESSION_COOKIE, **_cookie_attributes(request))


async def authenticate(request: web.Request, *, remembered: bool = True) -> RequestContext | None:
    """Return the caller of ``request``, None if anonymous; raise on bad credentials.

    ``remembered``: a write that can confirm its caller itself may be served with the rows
    of a recent full authentication (``gateway.callers``) instead of a lookup.
    """
    header = request.headers.get("Authorization", "")
    settings = request.app[SETTINGS]
    if header[:6].lower() == "basic ":
        name, password = parse_basic(header)
        if remembered and (ctx := _remembered(request, header)) is not None:
            return ctx
        user = await check_password(request, name, await _load_user(request, name), password)
        _remember(request, header, user)
        return RequestContext(user, "basic")
    if header[:7].lower() == "bearer ":
        claims = read_access_token(settings.secret_key, header[7:].strip())
        user = await _load_user(request, claims.name, jti=claims.jti)
        if user is None or user.id != claims.uid:  # a re-created name is another account
            raise Unauthorized("Invalid access token.")
        return RequestContext(user, "bearer", claims)
    if header:
        raise Unauthorized("Unsupported authorization scheme.")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        name, uid = read_session_cookie(settings.secret_key, cookie)
        user = await _load_user(request, name)
        if user is None or user.id != uid:
            raise Unauthorized("Invalid session.")
        return RequestContext(user, "cookie")
    return None


def _remembered(request: web.Request, header: str) -> RequestContext | None:
    """The caller of a ``_bulk_docs`` or checkpoint write as a recent full authentication of
    the same credentials for the same database found it (PostgreSQL), else None."""
    db_name = request.match_info.get("db")
    if db_name is None or not is_remembered_route(request) or is_sqlite(request.app[ENGINE]):
        return None
    check = request.app[REMEMBERED_CALLERS].get(header, db_name)
    if check is None:
        return None
    request[DB_KEY] = (db_name, check.db)
    return RequestContext(check.user, "basic", check=check)


def _remember(request: web.Request, header: str, user: User) -> None:
    """After a full Basic authentication with the URL's database, remember both rows."""
    found = request.get(DB_KEY)
    if found is None or not may_remember(found[1]) or is_sqlite(request.app[ENGINE]):
        return
    request.app[REMEMBERED_CALLERS].put(header, user, found[1])


def _local_read(request: web.Request) -> str | None:
    """The ``_local/`` id a GET reads (prefetched with the caller), else None."""
    local = request.match_info.get("localid")
    if local is None or request.method != "GET" or "\x00" in local:  # NUL: invalid, 400 later
        return None
    return "_local/" + local


async def _revs_diff_ids(request: web.Request) -> list[str] | None:
    """The document ids of a ``_revs_diff`` body, to look up with the caller (PostgreSQL);
    None when the request is another, or its body is not a small, plain JSON object: the
    handler then reads the documents itself, and answers a bad body after authentication,
    as for any route.

    This runs before the password is checked, so what a stranger can make it do is bounded:
    at most ``PREFETCH_BODY_LIMIT`` bytes as sent, never decompressed (a compressed body
    could unpack to the whole request limit), and at most ``PREFETCH_MAX_IDS`` index probes.
    """
    if request.method != "POST" or request.match_info.route.resource is None:
        return None
    if request.match_info.route.resource.canonical != REVS_DIFF_ROUTE:
        return None
    if is_sqlite(request.app[ENGINE]):  # no round trip to save
        return None
    size = request.content_length
    if size is None or size > min(PREFETCH_BODY_LIMIT, request.client_max_size):
        return None  # chunked, or too large to read here (the handler answers 413)
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    if request.content_type not in ("application/json", "text/plain", ""):
        return None
    try:
        body = read_ahead(request, await request.read())  # kept for the handler
    except (BadRequest, web.HTTPException):
        return None
    if type(body) is not dict or not 0 < len(body) <= PREFETCH_MAX_IDS:
        return None
    return list(body)


async def _load_user(request: web.Request, name: str, jti: str | None = None) -> User | None:
    """Load the caller and, in the same round trip, the URL's database, the _local doc a GET
    reads, the documents a ``_revs_diff`` asks about, and whether the access token was
    revoked."""
    if "\x00" in name:  # no user has one, and PostgreSQL text cannot hold it
        return None
    db_name = request.match_info.get("db")
    if db_name is not None and not DB_NAME_RE.match(db_name):
        db_name = None  # open_db answers 400 for an invalid name
    local_id = _local_read(request) if db_name is not None else None
    doc_ids = await _revs_diff_ids(request) if db_name is not None else None
    async with raw_read(request.app[ENGINE]) as conn:
        caller = await find_caller(
            conn, name, db_name=db_name, local_id=local_id, jti=jti, doc_ids=doc_ids
        )
    if db_name is not None:
        request[DB_KEY] = (db_name, caller.db)
    if local_id is not None:
        request[LOCAL_KEY] = (local_id, caller.local)
    if doc_ids is not None and caller.docs is not None:
        request[DOCS_KEY] = (doc_ids, caller.docs)
    if caller.revoked:
        raise Unauthorized("Access token revoked.")
    if caller.user is None or caller.user.disabled:
        return None
    return caller.user


def context(request: web.Request) -> RequestContext:
    """Return the authenticated caller (the middleware guarantees there is one)."""
    ctx = request.get(CTX_KEY)
    if ctx is None:
        raise Unauthorized("You are not authorized to access this db.")
    return ctx


# Routes that exist to obtain credentials: stale ones sent along (an expired Bearer token an
# HTTP client keeps attaching, an old AuthSession cookie) are ignored there, else a client
# could never refresh or log in again.  A wrong Basic password on /_session is still a 401,
# as in CouchDB.
CREDENTIAL_ROUTES = frozenset({"/api/v1/auth/login", "/api/v1/auth/refresh"})


def is_public(request: web.Request) -> bool:
    if (request.method, request.path) in PUBLIC_ROUTES:
        return True
    return request.method in ("GET", "HEAD") and request.path.startswith(PUBLIC_PREFIXES)


def _ignores_stale_credentials(request: web.Request) -> bool:
    if request.path in CREDENTIAL_ROUTES:
        return True
    return request.path == "/_session" and "Authorization" not in request.headers


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every request; refuse anonymous ones outside the public routes."""
    if request.method == "OPTIONS" or (
        request.method in ("GET", "HEAD") and request.path in PROBES
    ):
        return await handler(request)
    try:
        ctx = await authenticate(request)
    except Unauthorized:
        # a stale or foreign AuthSession cookie must not stop its holder from logging in
        # again, asking who they are, or logging out (CouchDB ignores it there too); nor a
        # stale token its holder's refresh or new login
        if not _ignores_stale_credentials(request):
            raise
        ctx = None
    if ctx is None and not is_public(request):
        raise Unauthorized("You are not authorized to access this db.")
    if ctx is not None:
        request[CTX_KEY] = ctx
    if ctx is None or ctx.check is None:
        return await handler(request)
    try:
        return await handler(request)
    except RecheckCaller:
        # The write did not confirm the remembered caller (its rows changed, or the request
        # took a path that does not check them) and wrote nothing, after reading the whole
        # body: serve the request again, after a full authentication.
        request[CTX_KEY] = await _authenticate_in_full(request, ctx.check)
        return await handler(request)
    except Exception:
        # Refused or failed before any write confirmed the caller: one who may no longer
        # ask gets the 401 of a full authentication, never the handler's answer.  The
        # request is not served again (its body may be half read: a body over the size
        # limit stops where the limit is).
        if not was_confirmed(request):
            await _authenticate_in_full(request, ctx.check)
        raise


async def _authenticate_in_full(request: web.Request, check: CallerCheck) -> RequestContext:
    """Forget the remembered caller and authenticate ``request`` with a lookup."""
    header = request.headers.get("Authorization", "")
    request.app[REMEMBERED_CALLERS].forget(header, check.db.name)
    ctx = await authenticate(request, remembered=False)
    if ctx is None:  # cannot be: the request carries Basic credentials
        raise Unauthorized("You are not authorized to access this db.")
    return ctx
