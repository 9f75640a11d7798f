"""``Idempotency-Key`` on every mutating ``/api/v1/`` route (SPEC §7).

A ``POST``/``PUT``/``PATCH``/``DELETE`` under ``/api/v1/`` that carries an ``Idempotency-Key``
(1 to 255 printable ASCII characters, else 400) runs at most once per (user, key) for 24 hours:

- the request's hash is sha256 of its method, path with query and body (JSON bodies
  canonicalized: key order and whitespace do not matter);
- the key is claimed in the database *before* the handler runs (an insert-ignore in its own
  committed transaction, ``schema.idempotency``), so two instances on one database racing
  with the same key agree on one winner; the loser sees the winner's row;
- a row with the same hash and a stored answer is replayed byte for byte (status,
  ``Content-Type``, body, and its ``ETag``, ``Location`` and ``Last-Modified``) with
  ``Idempotent-Replayed: true``; a different hash is
  422 ``idempotency_key_reused``; a row still in progress is 409 ``request_in_progress``
  with ``Retry-After: 1`` (the first request is running, maybe on another instance);
- the handler's answer is stored when its status is below 500, 4xx included (a 409 for a
  stale version or a 400 is the answer to *that* request, and replaying it is what makes a
  retry safe); a 5xx, an exception or a streamed answer drops the claim so a retry runs.

Crashes.  A claim lives ``CLAIM_LEASE`` (seconds, not minutes) and the running request
renews it every ``RENEW_EVERY``, so a claim whose instance died (SIGKILL, power loss) frees
itself within one lease and the client's retry runs; a live request keeps its claim however
long it takes.  Handlers that write in one transaction store their answer *inside* it
(``store_with_write``, used by the inspection, batch-sync, template and conflict-resolve
routes): the write and its
stored answer commit together, so a crash between the two cannot exist, and a request whose
claim was taken over after its lease ran out (an instance stalled longer than the lease)
cannot commit its write: it answers 409 ``request_in_progress`` and the retry's answer is
the one stored.  Other handlers store their answer right after they return: photo
confirmation (a second run finds the photo by its ``public_id`` and answers 200) and the
checkpoint reset (deleting twice deletes nothing more), whose second run changes nothing.

The auth routes (``/api/v1/auth/*``) are excluded: login and refresh answer with fresh
secrets, which must not be kept in the database nor handed out again (a replayed refresh
would also defeat refresh-token rotation and its reuse detection), and logout is idempotent
by nature.  Keys belong to the authenticated user: the same key from two users is two keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from aiohttp import hdrs, web
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.auth import CTX_KEY
from gateway.errors import error_middleware, error_response
from gateway.jsonio import read_body
from gateway.keys import ENGINE
from replication import BadRequest, Conflict
from schema.engine import write_transaction
from schema.idempotency import StoredKey, claim_key, release_key, renew_claim, store_response

log = logging.getLogger("gateway.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Headers of a stored answer that its replays repeat (the resource it made, its version).
REPLAYED_HEADERS = (hdrs.ETAG, hdrs.LOCATION, hdrs.LAST_MODIFIED)
MAX_KEY_LENGTH = 255
MAX_CONTENT_TYPE = 100  # the column's size
KEY_TTL = timedelta(hours=24)
CLAIM_LEASE = timedelta(seconds=10)  # a dead instance's claim blocks its key this long at most
RENEW_EVERY = 3.0  # seconds: a running request extends its claim's lease this often
RELEASE_RETRY_SECONDS = 0.5  # a claim the database was away for: retry releasing it this often
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_PREFIX = "/api/v1/"
EXCLUDED_PREFIX = "/api/v1/auth/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class ActiveClaim:
    """The claim a running request holds (``request[CLAIM]``)."""

    user_id: int
    key: str
    token: datetime
    stored: bool = False  # the answer was stored inside the handler's write transaction
    lost: bool = False  # the lease ran out and another request took the key over


CLAIM: web.RequestKey[ActiveClaim] = web.RequestKey("gateway_idempotency_claim", ActiveClaim)
# the renewal and release tasks of each engine's requests (referenced until done)
_BACKGROUND: dict[AsyncEngine, set[asyncio.Task[None]]] = {}


class ClaimLost(Conflict):
    """The request's claim was taken over: its write must not commit (409)."""

    error = "request_in_progress"
    default_reason = f"A request with this {HEADER} is still being processed; retry shortly."


def applies(request: web.Request) -> bool:
    """Whether ``request`` is a mutating ``/api/v1/`` request outside the auth routes."""
    path = request.path
    return (
        request.method in MUTATING
        and path.startswith(API_PREFIX)
        and not path.startswith(EXCLUDED_PREFIX)
    )


def idempotency_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key``, None without one; 400 when malformed."""
    values = request.headers.getall(HEADER, [])
    if not values:
        return None
    key = values[0]
    if len(values) > 1 or not (
        0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()
    ):
        raise BadRequest(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.")
    return key


def _is_json(content_type: str) -> bool:
    return content_type in ("application/json", "text/plain", "") or content_type.endswith("+json")


def canonical_body(content_type: str, body: bytes) -> bytes:
    """The body as hashed: JSON re-serialized with sorted keys, anything else as sent."""
    if not body or not _is_json(content_type):
        return body
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError, ValueError):
        return body


def request_hash(method: str, path_qs: str, content_type: str, body: bytes) -> str:
    """sha256 of (method, path with query, canonical body), hex."""
    digest = hashlib.sha256()
    for part in (method.encode(), path_qs.encode("utf-8", "surrogatepass")):
        digest.update(len(part).to_bytes(8, "big") + part)
    digest.update(canonical_body(content_type, body))
    return digest.hexdigest()


def _replay(row: StoredKey, request_hash_: str) -> web.StreamResponse:
    """The answer to a request whose key is already taken by ``row``."""
    if row.request_hash != request_hash_:
        return error_response(
            422,
            "idempotency_key_reused",
            f"This {HEADER} was already used with a different request "
            "(method, path or body); use a new key for a new request.",
        )
    if row.status is None:
        resp = error_response(
            409,
            "request_in_progress",
            f"A request with this {HEADER} is still being processed; retry shortly.",
        )
        resp.headers["Retry-After"] = "1"
        return resp
    headers = orjson.loads(row.headers) if row.headers else {}
    headers[REPLAYED_HEADER] = "true"
    if row.content_type:
        headers[hdrs.CONTENT_TYPE] = row.content_type
    return web.Response(status=row.status, body=row.body or b"", headers=headers)


def _kept_headers(resp: web.StreamResponse) -> bytes | None:
    """The answer's headers a replay repeats (``REPLAYED_HEADERS``), as JSON; None if none."""
    kept = {str(name): resp.headers[name] for name in REPLAYED_HEADERS if name in resp.headers}
    return orjson.dumps(kept) if kept else None


def _storable(resp: web.StreamResponse) -> tuple[str, bytes] | None:
    """(content type, body) of an answer that can be stored and replayed, else None."""
    if resp.status >= 500 or resp.prepared or not isinstance(resp, web.Response):
        return None
    body = resp.body
    if body is None:
        body = b""
    if not isinstance(body, bytes):
        return None  # a streamed payload (file, iterator): not replayable
    content_type = resp.headers.get(hdrs.CONTENT_TYPE) or resp.content_type
    if len(content_type) > MAX_CONTENT_TYPE:
        return None
    return content_type, body


async def store_with_write(
    request: web.Request, conn: AsyncConnection, resp: web.StreamResponse
) -> None:
    """Store ``resp`` as the answer to the request's ``Idempotency-Key`` inside the caller's
    write transaction, so the write and its stored answer commit together or not at all.

    Nothing to do without a key or for an answer that is not stored (a 5xx).  Raises
    ``ClaimLost`` when another request took the key over (this one outlived its lease): the
    caller's transaction must roll back, and the client is told to retry.
    """
    claim = request.get(CLAIM)
    stored = _storable(resp)
    if claim is None or stored is None:
        return
    content_type, body = stored
    kept = await store_response(
        conn, claim.user_id, claim.key, claim.token, status=resp.status,
        content_type=content_type, body=body, headers=_kept_headers(resp), ttl=KEY_TTL,
    )  # fmt: skip
    if not kept:
        claim.lost = True
        raise ClaimLost()
    claim.stored = True


async def _keep_claimed(engine: AsyncEngine, claim: ActiveClaim, done: asyncio.Event) -> None:
    """Renew ``claim``'s lease every ``RENEW_EVERY`` seconds until ``done`` is set."""
    while True:
        try:
            await asyncio.wait_for(done.wait(), RENEW_EVERY)
            return
        except TimeoutError:
            pass
        try:
            async with write_transaction(engine) as conn:
                alive = await renew_claim(
                    conn, claim.user_id, claim.key, claim.token, lease=CLAIM_LEASE
                )
        except Exception as exc:  # the request itself meets the same trouble and answers it
            log.warning("could not renew an %s claim: %s", HEADER, exc)
            continue
        if not alive:
            return


def _keep_claimed_in_background(engine: AsyncEngine, claim: ActiveClaim) -> asyncio.Event:
    """Start renewing ``claim``; set the returned event to stop.  The task is never awaited
    by the request (a renewal waiting for a lock must not delay the answer)."""
    done = asyncio.Event()
    _track(engine, asyncio.create_task(_keep_claimed(engine, claim, done)))
    return done


def _track(engine: AsyncEngine, task: asyncio.Task[None]) -> asyncio.Task[None]:
    tasks = _BACKGROUND.setdefault(engine, set())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def stop_background(engine: AsyncEngine) -> None:
    """Cancel the claim renewals and releases still running on ``engine`` (the app is
    closing, before the engine is disposed: they would otherwise open new connections on
    it).  A claim left behind frees itself when its lease runs out."""
    tasks = _BACKGROUND.pop(engine, set())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _release_when_back(engine: AsyncEngine, user_id: int, key: str, token: datetime) -> None:
    """Release a claim the database was away for once it answers again (a request that
    failed because the database went away), so the client's retry runs as soon as the
    database is back rather than when the lease runs out; given up with the lease."""
    deadline = datetime.now(UTC) + CLAIM_LEASE
    while datetime.now(UTC) < deadline:
        await asyncio.sleep(RELEASE_RETRY_SECONDS)
        try:
            async with write_transaction(engine) as conn:
                await release_key(conn, user_id, key, token)
            return
        except Exception:
            continue


def _release_in_background(
    engine: AsyncEngine, user_id: int, key: str, token: datetime
) -> asyncio.Task[None]:
    return _track(engine, asyncio.create_task(_release_when_back(engine, user_id, key, token)))


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run a keyed mutating request at most once per (user, key); replay its answer."""
    if not applies(request):
        return await handler(request)
    key = idempotency_key(request)
    ctx = request.get(CTX_KEY)
    if key is None or ctx is None:
        return await handler(request)
    body = await read_body(request)  # cached by aiohttp: the handler reads it again
    hashed = request_hash(request.method, request.path_qs, request.content_type, body)
    user_id = ctx.user.id
    engine = request.app[ENGINE]
    async with write_transaction(engine) as conn:
        claim = await claim_key(conn, user_id, key, hashed, lease=CLAIM_LEASE)
    token = claim.token
    if token is None:
        if claim.existing is None:  # claimed and released under us, repeatedly
            return _replay(StoredKey(hashed, None, None, None), hashed)
        return _replay(claim.existing, hashed)
    active = ActiveClaim(user_id, key, token)
    request[CLAIM] = active

    async def release() -> None:
        try:
            async with write_transaction(engine) as conn:
                await release_key(conn, user_id, key, token)
        except Exception as exc:  # the database is away: keep trying while the lease runs
            log.warning("could not release an %s claim (%s); retrying", HEADER, exc)
            _release_in_background(engine, user_id, key, token)

    renewing = _keep_claimed_in_background(engine, active)
    try:
        # Errors become answers here (not in the outer error middleware) so 4xx are stored.
        resp = await error_middleware(request, handler)
    except BaseException:
        await asyncio.shield(release())
        raise
    finally:
        renewing.set()
    if active.lost:  # another request holds the key now; its answer will be the stored one
        return _replay(StoredKey(hashed, None, None, None), hashed)
    stored = _storable(resp)
    if stored is None:
        await release()
        return resp
    if active.stored:
        return resp
    content_type, body_out = stored
    try:
        async with write_transaction(engine) as conn:
            kept = await store_response(
                conn, user_id, key, token, status=resp.status, content_type=content_type,
                body=body_out, headers=_kept_headers(resp), ttl=KEY_TTL,
            )  # fmt: skip
        if not kept:
            log.warning("%s claim expired before its answer was stored", HEADER)
    except Exception:
        log.exception("could not store the answer of an %s request", HEADER)
    return resp
