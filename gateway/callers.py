"""Callers this instance verified moments ago, so the writes of a replication batch can skip
their lookup round trip (PostgreSQL; see ``schema.callers`` for why that stays safe).

After a full HTTP Basic authentication of a request to a database (PouchDB's replicator
sends the same ``Authorization`` header with every request: ``GET /db``, ``_revs_diff``,
the checkpoint read), the user and database rows read with it are remembered under a
digest of (header, database name), for ``TTL_SECONDS``.  A later ``POST /{db}/_bulk_docs``
or ``PUT /{db}/_local/{id}`` with the same header is then served with those rows and no
lookup, and its write statement confirms them (``schema.callers``: ``USER_SQL`` and
``DATABASE_SQL`` on the ``_bulk_docs`` write, ``CALLER_SQL`` on the checkpoint write).

Until that statement has run, the caller is unconfirmed: when the handler raises
``RecheckCaller`` (the rows changed, or the request took a path that cannot confirm them;
nothing was written) ``gateway.auth`` authenticates the request in full and serves it again;
when it raises anything else, it authenticates in full (a caller who may no longer ask gets
the 401) and lets the error through.  So an unconfirmed caller never gets an answer but the
confirmed write's or a fully authenticated one.  The credentials themselves are not kept,
only a digest of them as the key (as by ``gateway.auth.PasswordCache``); a wrong password is
another header, never a hit.  The rows are kept as read (the stored password hash included).
Not used on SQLite (no round trip to save), for databases with write rules (their writes
read and write more rows), nor for Bearer tokens and session cookies.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from aiohttp import web

from schema.callers import CallerCheck
from schema.databases import Database
from schema.rules import has_rules
from schema.users import User

TTL_SECONDS = 300.0  # as long as a password check is cached
SIZE = 4096
# (method, route) of the writes served with a remembered caller
ROUTES = frozenset({("POST", "/{db}/_bulk_docs"), ("PUT", "/{db}/_local/{localid}")})
CONFIRMED_KEY = "gateway_caller_confirmed"  # set once a write confirmed the remembered caller


class RememberedCallers:
    """A bounded map: digest of (Authorization header, database name) -> the rows read."""

    def __init__(self, size: int = SIZE, ttl: float = TTL_SECONDS) -> None:
        self._entries: OrderedDict[bytes, tuple[float, CallerCheck]] = OrderedDict()
        self._size = size
        self._ttl = ttl

    @staticmethod
    def _key(header: str, db_name: str) -> bytes:
        return hashlib.sha256(f"{header}\x00{db_name}".encode()).digest()

    def get(self, header: str, db_name: str) -> CallerCheck | None:
        """The rows remembered for this header and database, if recent."""
        key = self._key(header, db_name)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, header: str, user: User, db: Database) -> None:
        """Remember ``user`` and ``db`` as just verified for ``header``."""
        key = self._key(header, db.name)
        self._entries[key] = (time.monotonic() + self._ttl, CallerCheck(user, db))
        self._entries.move_to_end(key)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, header: str, db_name: str) -> None:
        self._entries.pop(self._key(header, db_name), None)


def confirmed(request: web.Request) -> None:
    """Record that this request's write confirmed its remembered caller (and wrote): from
    here on the request is never served again, whatever happens."""
    request[CONFIRMED_KEY] = True


def was_confirmed(request: web.Request) -> bool:
    return request.get(CONFIRMED_KEY, False)


def is_remembered_route(request: web.Request) -> bool:
    """Whether ``request`` is one of the writes a remembered caller may be served for."""
    resource = request.match_info.route.resource
    return resource is not None and (request.method, resource.canonical) in ROUTES


def may_remember(db: Database | None) -> bool:
    """Whether writes to ``db`` can confirm a remembered caller in their own statement."""
    return db is not None and not has_rules(db)
