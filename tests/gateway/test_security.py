"""Security checks (issue 3): forged and stale credentials, role escalation through document
bodies, hostile ids and database names, cross-user replay of refresh tokens.

``tests/gateway/test_tokens.py`` covers the token basics on ``/api/v1/auth/me`` (alg none,
wrong key, expiry, rotation and reuse, logout); these extend them to the CouchDB routes and
to the attacks around them.  Every hostile input must end in a success that round-trips
exactly or in a CouchDB-shaped ``{"error", "reason"}`` 4xx -- never a 500.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from gateway.auth import make_session_cookie
from gateway.tokens import ISSUER, make_access_token
from schema.tables import databases, documents, local_docs, revisions
from schema.tables import users as users_table
from schema.users import User, find_user
from tests.helpers import PASSWORD, Couch, basic

SECRET = "test-secret-key-that-is-long-enough-for-hs256"
INVALID = {"error": "unauthorized", "reason": "Invalid access token."}


# -- helpers --------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}.{b64(signature)}"


def hmac_signed(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """A JWS signed with HMAC-SHA256 under ``key``, whatever ``alg`` the header claims."""
    unsigned = compact(header, claims).rsplit(".", 1)[0]
    signature = hmac.new(key, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64(signature)}"


USER_IDS = {"admin": 1, "manager": 2, "alice": 3, "bob": 4}  # conftest order


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "role": "inspector",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "typ": "access",
        "iss": ISSUER,
    }
    merged = {**base, **overrides}
    merged.setdefault("uid", USER_IDS.get(merged["sub"], 0))  # the fixtures' user ids
    return merged


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def call(
    client: Any,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = orjson.dumps(body) if body is not None else None
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    async with client.request(method, path, data=data, headers=all_headers) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw) if raw else None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def user_row(engine: AsyncEngine, name: str) -> User:
    async with engine.connect() as conn:
        found = await find_user(conn, name)
    assert found is not None
    return found


async def login(client: Any, name: str) -> dict[str, Any]:
    status, body = await call(
        client, "POST", "/api/v1/auth/login", {"username": name, "password": PASSWORD}
    )
    assert status == 200, body
    return body


def couch_error(status: int, body: Any) -> bool:
    """A 4xx with CouchDB's error shape."""
    return (
        400 <= status < 500
        and isinstance(body, dict)
        and set(body) == {"error", "reason"}
        and all(isinstance(v, str) for v in body.values())
    )


# -- forged, altered and stale access tokens on the CouchDB routes ---------------------------


def _valid(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def _alg_none(alg: str, signature: bytes = b"") -> str:
    return compact({"alg": alg, "typ": "JWT"}, claims(sub="admin", role="admin"), signature)


def _hs256_with_public_key() -> str:
    # The classic confusion: a server that verifies with "the key" would accept an HMAC made
    # with its (public) RSA key.  Ours only has an HMAC secret and pins HS256.
    pem = public_pem(rsa_key())
    return hmac_signed({"alg": "HS256", "typ": "JWT"}, claims(sub="admin"), pem)


def _rs256() -> str:
    pem = rsa_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(claims(sub="admin"), pem, algorithm="RS256")


def _rs256_with_embedded_jwk() -> str:
    key = rsa_key()
    jwk = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return jwt.encode(claims(sub="admin"), key, algorithm="RS256", headers={"jwk": jwk})


def _rs256_header_with_the_right_hmac() -> str:
    # Signed with the real secret, but the header names another algorithm.
    return hmac_signed({"alg": "RS256", "typ": "JWT"}, claims(), SECRET.encode())


def _es256() -> str:
    return jwt.encode(claims(sub="admin"), ec.generate_private_key(ec.SECP256R1()), "ES256")


def _payload_swapped() -> str:
    header, _, signature = _valid().split(".")
    forged = b64(orjson.dumps(claims(sub="admin", role="admin")))
    return f"{header}.{forged}.{signature}"


def _header_swapped() -> str:
    _, payload, signature = _valid().split(".")
    return f"{b64(orjson.dumps({'alg': 'HS512', 'typ': 'JWT'}))}.{payload}.{signature}"


def _signature_stripped() -> str:
    return _valid().rsplit(".", 1)[0] + "."


def _kid_traversal_empty_key() -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": "../../../../dev/null"}
    return hmac_signed(header, claims(sub="admin"), b"")


FORGERIES = {
    "alg-none": lambda: _alg_none("none"),
    "alg-None": lambda: _alg_none("None"),
    "alg-NONE": lambda: _alg_none("NONE"),
    "alg-none-with-a-signature": lambda: _alg_none("none", b"x" * 32),
    "hs256-signed-with-an-rsa-public-key": _hs256_with_public_key,
    "rs256-own-key": _rs256,
    "rs256-embedded-jwk": _rs256_with_embedded_jwk,
    "rs256-header-right-hmac": _rs256_header_with_the_right_hmac,
    "es256": _es256,
    "payload-swapped": _payload_swapped,
    "header-swapped": _header_swapped,
    "signature-stripped": _signature_stripped,
    "kid-traversal-empty-key": _kid_traversal_empty_key,
}


@pytest.mark.parametrize("forge", list(FORGERIES.values()), ids=list(FORGERIES))
async def test_forged_tokens_open_no_couchdb_route(
    client: Any, admin: Couch, alice: Couch, forge: Any
) -> None:
    await admin.put("/field?access_mode=shared")
    await alice.put("/field/secret", {"v": 1})
    token = forge()
    for method, path, body in [
        ("GET", "/field/_all_docs", None),
        ("GET", "/field/secret", None),
        ("PUT", "/field/forged", {"v": 2}),
        ("PUT", "/forged-db", None),
        ("GET", "/api/v1/auth/me", None),
    ]:
        status, answer = await call(client, method, path, body, bearer(token))
        assert (status, answer) == (401, INVALID), (method, path)
    await admin.get("/field/forged", expected_status=404)
    await admin.get("/forged-db", expected_status=404)


async def test_a_genuine_token_still_works_here(client: Any, admin: Couch) -> None:
    """The forgeries above fail for what they are, not because of the request."""
    await admin.put("/field?access_mode=shared")
    status, _ = await call(client, "GET", "/field/_all_docs", headers=bearer(_valid()))
    assert status == 200


async def test_an_expired_token_says_token_expired_on_every_route(
    client: Any, admin: Couch, engine: AsyncEngine
) -> None:
    await admin.put("/field?access_mode=shared")
    token, _ = make_access_token(SECRET, await user_row(engine, "alice"), -5)
    expired = {"error": "unauthorized", "reason": "token_expired"}
    for method, path, body in [
        ("GET", "/field/_changes", None),
        ("PUT", "/field/late", {"v": 1}),
        ("POST", "/field/_bulk_docs", {"docs": [{"_id": "late2"}]}),
    ]:
        assert await call(client, method, path, body, bearer(token)) == (401, expired)
    assert (await admin.get("/field"))["doc_count"] == 0


async def test_the_token_of_a_deleted_user_is_refused(
    client: Any, admin: Couch, engine: AsyncEngine
) -> None:
    await admin.put("/field?access_mode=shared")
    token, _ = make_access_token(SECRET, await user_row(engine, "alice"), 600)
    assert (await call(client, "GET", "/field", headers=bearer(token)))[0] == 200
    async with engine.begin() as conn:
        await conn.execute(delete(users_table).where(users_table.c.name == "alice"))
    for path in ("/field", "/field/_all_docs", "/api/v1/auth/me"):
        assert await call(client, "GET", path, headers=bearer(token)) == (401, INVALID)


async def test_a_token_does_not_pass_to_a_new_account_with_the_same_name(
    client: Any, engine: AsyncEngine, password_hash: str
) -> None:
    old = await user_row(engine, "alice")
    token, _ = make_access_token(SECRET, old, 600)
    cookie = make_session_cookie(SECRET, old)
    async with engine.begin() as conn:
        await conn.execute(delete(users_table).where(users_table.c.name == "alice"))
        await conn.execute(
            insert(users_table).values(name="alice", role="admin", password_hash=password_hash)
        )
    assert (await call(client, "GET", "/api/v1/auth/me", headers=bearer(token)))[0] == 401
    by_cookie = await call(
        client, "GET", "/api/v1/auth/me", headers={"Cookie": f"AuthSession={cookie}"}
    )
    assert by_cookie[0] == 401
    fresh, _ = make_access_token(SECRET, await user_row(engine, "alice"), 600)
    assert (await call(client, "GET", "/api/v1/auth/me", headers=bearer(fresh)))[0] == 200


async def test_a_disabled_user_is_refused_by_token_basic_and_cookie(
    client: Any, admin: Couch, alice: Couch, engine: AsyncEngine
) -> None:
    await admin.put("/field?access_mode=shared")
    token, _ = make_access_token(SECRET, await user_row(engine, "alice"), 600)
    status, _ = await call(
        client, "POST", "/_session", {"name": "alice", "password": PASSWORD}
    )  # the client keeps the AuthSession cookie
    assert status == 200
    assert (await call(client, "GET", "/field/_all_docs"))[0] == 200  # by cookie
    async with engine.begin() as conn:
        await conn.execute(
            update(users_table).where(users_table.c.name == "alice").values(disabled=True)
        )
    assert (await call(client, "GET", "/field/_all_docs"))[0] == 401  # the same cookie
    client.session.cookie_jar.clear()
    assert await call(client, "GET", "/field/_all_docs", headers=bearer(token)) == (401, INVALID)
    err = await alice.get("/field/_all_docs", expected_status=401)
    assert err == {"error": "unauthorized", "reason": "Name or password is incorrect."}
    await alice.put("/field/x", {"v": 1}, expected_status=401)
    status, _ = await call(client, "POST", "/_session", {"name": "alice", "password": PASSWORD})
    assert status == 401
    status, _ = await call(
        client, "POST", "/api/v1/auth/login", {"username": "alice", "password": PASSWORD}
    )
    assert status == 401
    assert (await admin.get("/field"))["doc_count"] == 0


async def test_the_role_claim_of_a_token_is_not_trusted(
    client: Any, admin: Couch, engine: AsyncEngine
) -> None:
    await admin.put("/field?access_mode=shared")
    alice = await user_row(engine, "alice")
    # Signed by the server itself, but the role in it is not the user's role.
    token, _ = make_access_token(SECRET, replace(alice, role="admin"), 600)
    status, body = await call(client, "PUT", "/newdb", headers=bearer(token))
    assert (status, body["error"]) == (403, "forbidden")
    status, me = await call(client, "GET", "/api/v1/auth/me", headers=bearer(token))
    assert status == 200 and me["role"] == "inspector"
    # The role stored for the user counts, from the next request on, whatever the token says.
    async with engine.begin() as conn:
        await conn.execute(
            update(users_table).where(users_table.c.name == "alice").values(role="admin")
        )
    plain, _ = make_access_token(SECRET, alice, 600)  # role claim: inspector
    assert (await call(client, "PUT", "/newdb", headers=bearer(plain)))[0] == 201


# -- refresh tokens are bound to their user --------------------------------------------------


async def test_a_refresh_token_only_ever_refreshes_its_own_user(
    client: Any, engine: AsyncEngine
) -> None:
    alice, bob = await login(client, "alice"), await login(client, "bob")

    async def refresh(token: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return await call(client, "POST", "/api/v1/auth/refresh", {"refresh_token": token}, headers)

    async def whoami(access: str) -> str:
        status, me = await call(client, "GET", "/api/v1/auth/me", headers=bearer(access))
        assert status == 200, me
        return me["username"]

    # Replayed by bob, with his own credentials alongside: it refreshes alice, never bob.
    status, first = await refresh(alice["refresh_token"], {"Authorization": basic("bob")})
    assert status == 200 and await whoami(first["access_token"]) == "alice"
    status, second = await refresh(first["refresh_token"], bearer(bob["access_token"]))
    assert status == 200 and await whoami(second["access_token"]) == "alice"
    # Bob cannot log alice's session family out by naming her refresh token.
    status, _ = await call(
        client,
        "POST",
        "/api/v1/auth/logout",
        {"refresh_token": second["refresh_token"]},
        bearer(bob["access_token"]),
    )
    assert status == 200
    status, third = await refresh(second["refresh_token"])
    assert status == 200 and await whoami(third["access_token"]) == "alice"
    # A refresh token is not an access token, nor the other way round.
    assert await call(client, "GET", "/field", headers=bearer(third["refresh_token"])) == (
        401,
        INVALID,
    )
    assert (await refresh(third["access_token"]))[0] == 401
    # Once alice is disabled her refresh token is dead; bob's family is untouched.
    async with engine.begin() as conn:
        await conn.execute(
            update(users_table).where(users_table.c.name == "alice").values(disabled=True)
        )
    status, body = await refresh(third["refresh_token"])
    assert couch_error(status, body) and status == 401
    status, bobs = await refresh(bob["refresh_token"])
    assert status == 200 and await whoami(bobs["access_token"]) == "bob"


# -- ownership and roles cannot be written into a document body ------------------------------

ESCALATING = {
    "owner": "bob",
    "owner_id": 2,
    "role": "admin",
    "roles": ["_admin", "admin"],
    "user": "bob",
    "user_id": 2,
    "name": "bob",
}


async def _owner_column(engine: AsyncEngine, db: str, doc_id: str) -> str | None:
    stmt = (
        select(users_table.c.name)
        .select_from(
            documents.join(databases, databases.c.id == documents.c.db_id).outerjoin(
                users_table, users_table.c.id == documents.c.owner_id
            )
        )
        .where(databases.c.name == db, documents.c.doc_id == doc_id)
    )
    async with engine.connect() as conn:
        return (await conn.execute(stmt)).scalar_one()


async def test_owner_and_role_fields_in_a_body_are_ordinary_fields(
    admin: Couch, manager: Couch, alice: Couch, bob: Couch, engine: AsyncEngine
) -> None:
    await admin.put("/own?access_mode=owned")
    bob_id = (await user_row(engine, "bob")).id
    body = {**ESCALATING, "owner_id": bob_id, "user_id": bob_id}
    await alice.put("/own/by-put", body)
    await alice.post("/own", {"_id": "by-post", **body}, expected_status=201)
    rows = await alice.post(
        "/own/_bulk_docs", {"docs": [{"_id": "by-bulk", **body}]}, expected_status=201
    )
    assert rows[0]["ok"] is True
    replicated = {"_id": "by-replication", "_rev": "1-" + "a" * 32, **body}
    await alice.post(
        "/own/_bulk_docs", {"docs": [replicated], "new_edits": False}, expected_status=201
    )
    written = ["by-put", "by-post", "by-bulk", "by-replication"]
    for doc_id in written:
        mine = await alice.get(f"/own/{doc_id}")
        assert {k: v for k, v in mine.items() if not k.startswith("_")} == body
        assert (await manager.get(f"/own/{doc_id}"))["owner"] == "bob"
        assert await bob.get(f"/own/{doc_id}", expected_status=404) == {
            "error": "not_found",
            "reason": "missing",
        }
        assert await _owner_column(engine, "own", doc_id) == "alice"
    # An update that says so again changes nothing either.
    rev = (await alice.get("/own/by-put"))["_rev"]
    await alice.put("/own/by-put", {**body, "v": 2}, params={"rev": rev})
    assert await _owner_column(engine, "own", "by-put") == "alice"
    assert (await bob.get("/own/_all_docs"))["rows"] == []
    assert (await bob.get("/own/_changes"))["results"] == []
    assert (await bob.get("/own"))["doc_count"] == 0
    assert [r["id"] for r in (await alice.get("/own/_all_docs"))["rows"]] == sorted(written)
    # ... and alice is still an inspector.
    await alice.put("/escalated", expected_status=403)
    assert (await alice.get("/api/v1/auth/me"))["role"] == "inspector"
    # The other way round: bob cannot give a document to alice.
    await bob.put("/own/gift", {"owner": "alice", "owner_id": (await user_row(engine, "alice")).id})
    await alice.get("/own/gift", expected_status=404)
    assert await _owner_column(engine, "own", "gift") == "bob"


@pytest.mark.parametrize("member", ["_owner", "_owner_id", "_user", "_role", "_roles"])
async def test_reserved_owner_members_are_refused_everywhere(
    admin: Couch, alice: Couch, member: str
) -> None:
    await admin.put("/own?access_mode=owned")
    expected = {"error": "bad_request", "reason": f"Bad special document member: {member}"}
    assert await alice.put("/own/a", {member: "bob"}, expected_status=400) == expected
    assert await alice.post("/own", {"_id": "b", member: "bob"}, expected_status=400) == expected
    for new_edits in (True, False):
        doc = {"_id": "c", "_rev": "1-" + "c" * 32, member: "bob"}
        rows = await alice.post(
            "/own/_bulk_docs", {"docs": [doc], "new_edits": new_edits}, expected_status=201
        )
        assert rows == [{"id": "c", **expected}]
    assert (await alice.get("/own"))["doc_count"] == 0


# -- hostile document ids, database names and other names ------------------------------------

PRECOMPOSED, DECOMPOSED = "caf\u00e9", "cafe\u0301"
ROUND_TRIP_IDS = [
    "'; DROP TABLE documents; --",
    "' OR '1'='1",
    'x"); DELETE FROM users; --',
    "%27",
    "%2F",
    "%00",
    "..",
    ".",
    "a/../b",
    "a/b",
    "../_all_docs",
    "\uff3fall_docs",  # FULLWIDTH LOW LINE: not an underscore
    "all_docs",
    "_design/..",
    "_design/x'; --",
    PRECOMPOSED,
    DECOMPOSED,
    "emoji \U0001f389",
    "tab\there",
    "new\nline",
    "sep\u2028arator",
    "back\\slash",
    "q?x=1&y=2",
    "h#frag",
    "plus+and space",
    "x" * 1000,
    "\u00e9" * 500,  # 1000 bytes
]
BAD_IDS = {
    "1001-bytes": "x" * 1001,
    "1001-bytes-multibyte": "\u00e9" * 500 + "x",
    "100k": "y" * 100_000,
    "nul": "a\x00b",
    "underscore-all-docs": "_all_docs",
    "underscore-changes": "_changes",
    "underscore-other": "_foo",
    "bare-design-prefix": "_design/",
}


def url_id(name: str) -> str:
    """``name`` as one path segment ("." too: a client would resolve "/db/.." to "/")."""
    return quote(name, safe="").replace(".", "%2E")


def at(path: str) -> URL:
    """A path sent exactly as written (already percent-encoded)."""
    return URL(path, encoded=True)


async def _tables_intact(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        for table in (documents, revisions, databases, local_docs):
            await conn.execute(select(func.count()).select_from(table))
        names = (await conn.execute(select(users_table.c.name))).scalars().all()
    assert sorted(names) == ["admin", "alice", "bob", "manager"]


@pytest.mark.parametrize("doc_id", ROUND_TRIP_IDS, ids=[ascii(i)[:40] for i in ROUND_TRIP_IDS])
async def test_odd_document_ids_round_trip_exactly(
    admin: Couch, alice: Couch, engine: AsyncEngine, doc_id: str
) -> None:
    for name in ("byput", "bypost", "bybulk"):
        await admin.put(f"/{name}?access_mode=shared")
    created = await alice.put(at(f"/byput/{url_id(doc_id)}"), {"v": doc_id})
    assert created["id"] == doc_id
    posted = await alice.post("/bypost", {"_id": doc_id, "v": doc_id}, expected_status=201)
    assert posted["id"] == doc_id
    bulk = await alice.post(
        "/bybulk/_bulk_docs", {"docs": [{"_id": doc_id, "v": doc_id}]}, expected_status=201
    )
    assert bulk[0]["id"] == doc_id and bulk[0]["ok"] is True
    for name in ("byput", "bypost", "bybulk"):
        doc = await alice.get(at(f"/{name}/{url_id(doc_id)}"))
        assert (doc["_id"], doc["v"]) == (doc_id, doc_id)
        listed = await alice.post(f"/{name}/_all_docs", {"keys": [doc_id]})
        assert [r["id"] for r in listed["rows"]] == [doc_id]
        ranged = await alice.get(
            f"/{name}/_all_docs", params={"key": orjson.dumps(doc_id).decode()}
        )
        assert [r["id"] for r in ranged["rows"]] == [doc_id]
        changes = await alice.post(f"/{name}/_changes?filter=_doc_ids", {"doc_ids": [doc_id]})
        assert [r["id"] for r in changes["results"]] == [doc_id]
        got = await alice.post(f"/{name}/_bulk_get", {"docs": [{"id": doc_id}]})
        assert got["results"][0]["docs"][0]["ok"]["_id"] == doc_id
        att = await alice.put(
            at(f"/{name}/{url_id(doc_id)}/a.txt"),
            raw=b"bytes",
            headers={"Content-Type": "text/plain"},
            params={"rev": doc["_rev"]},
        )
        assert att["id"] == doc_id
        assert await alice.get(at(f"/{name}/{url_id(doc_id)}/a.txt")) == b"bytes"
        gone = await alice.delete(at(f"/{name}/{url_id(doc_id)}"), params={"rev": att["rev"]})
        assert gone["id"] == doc_id
        assert (await alice.get(f"/{name}"))["doc_count"] == 0
    await _tables_intact(engine)


async def test_unicode_normalization_twins_are_two_documents(admin: Couch, alice: Couch) -> None:
    await admin.put("/field?access_mode=shared")
    nfc = (await alice.put(at(f"/field/{url_id(PRECOMPOSED)}"), {"form": "NFC"}))["rev"]
    nfd = (await alice.put(at(f"/field/{url_id(DECOMPOSED)}"), {"form": "NFD"}))["rev"]
    assert nfc != nfd
    assert (await alice.get(at(f"/field/{url_id(PRECOMPOSED)}")))["form"] == "NFC"
    assert (await alice.get(at(f"/field/{url_id(DECOMPOSED)}")))["form"] == "NFD"
    rows = (await alice.get("/field/_all_docs"))["rows"]
    assert [r["id"] for r in rows] == sorted([PRECOMPOSED, DECOMPOSED])  # by code point
    assert (await alice.get("/field"))["doc_count"] == 2
    changes = await alice.post("/field/_changes?filter=_doc_ids", {"doc_ids": [PRECOMPOSED]})
    assert [r["id"] for r in changes["results"]] == [PRECOMPOSED]
    diff = await alice.post("/field/_revs_diff", {PRECOMPOSED: [nfc, nfd]})
    assert diff == {PRECOMPOSED: {"missing": [nfd]}}


@pytest.mark.parametrize("doc_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
async def test_unusable_document_ids_are_bad_requests(
    admin: Couch, alice: Couch, engine: AsyncEngine, doc_id: str
) -> None:
    await admin.put("/field?access_mode=shared")
    if len(doc_id) < 4000:  # a longer one does not fit in a request line at all
        status_body = await alice.put(at(f"/field/{url_id(doc_id)}"), {"v": 1}, expected_status=400)
        assert status_body["error"] == "bad_request"
    err = await alice.post("/field", {"_id": doc_id}, expected_status=400)
    assert err["error"] == "bad_request" and set(err) == {"error", "reason"}
    for new_edits in (True, False):
        rows = await alice.post(
            "/field/_bulk_docs",
            {"docs": [{"_id": doc_id, "_rev": "1-" + "d" * 32}], "new_edits": new_edits},
            expected_status=201,
        )
        assert rows == [{"id": doc_id, "error": "bad_request", "reason": rows[0]["reason"]}]
    assert (await alice.get("/field"))["doc_count"] == 0
    await _tables_intact(engine)


async def test_an_overlong_request_line_is_refused_without_a_server_error(
    client: Any, admin: Couch, alice: Couch
) -> None:
    await admin.put("/field?access_mode=shared")
    async with client.get("/field/" + "%C3%A9" * 3000, headers=alice.headers()) as resp:
        assert 400 <= resp.status < 500


BAD_DB_NAMES = [
    "'; DROP TABLE documents; --",
    "x'; DROP TABLE databases; --",
    "%27",
    "..",
    "a/../b",
    "a/b",
    "Field",
    "a b",
    "a\x00b",
    "\u00e9t\u00e9",
    "x" * 239,
    "_users",
    "_all_docs",
]


@pytest.mark.parametrize("name", BAD_DB_NAMES, ids=[ascii(n)[:40] for n in BAD_DB_NAMES])
async def test_hostile_database_names_are_refused_without_a_server_error(
    client: Any, admin: Couch, alice: Couch, engine: AsyncEngine, name: str
) -> None:
    path = "/" + url_id(name)
    before = await admin.get("/_all_dbs")
    for couch, method, suffix, body in [
        (admin, "PUT", "", None),
        (admin, "GET", "", None),
        (admin, "DELETE", "", None),
        (alice, "GET", "/_all_docs", None),
        (alice, "GET", "/_changes", None),
        (alice, "PUT", "/doc", {"v": 1}),
        (alice, "POST", "/_bulk_docs", {"docs": [{"_id": "d"}]}),
        (alice, "GET", "/_local/x", None),
    ]:
        async with client.request(
            method,
            at(path + suffix),
            data=orjson.dumps(body) if body is not None else None,
            headers=couch.headers(),
        ) as resp:
            raw = await resp.read()
            assert 400 <= resp.status < 500, (method, suffix, resp.status, raw)
            assert couch_error(resp.status, orjson.loads(raw)), raw
    assert (await admin.get("/_all_dbs")) == before
    await _tables_intact(engine)


LOCAL_IDS = ["'; DROP TABLE local_docs; --", "..", "a/../b", "%2F", "_x", "\u00e9"]


@pytest.mark.parametrize("local_id", LOCAL_IDS, ids=[ascii(i) for i in LOCAL_IDS])
async def test_odd_local_ids_round_trip_and_stay_private(
    admin: Couch, alice: Couch, bob: Couch, local_id: str
) -> None:
    await admin.put("/field?access_mode=shared")
    path = at(f"/field/_local/{url_id(local_id)}")
    created = await alice.put(path, {"seq": 1})
    assert created["id"] == "_local/" + local_id
    assert (await alice.get(path))["_id"] == "_local/" + local_id
    await bob.get(path, expected_status=404)


ATTACHMENT_NAMES = ["../a.txt", "a/b/c.txt", "'; DROP TABLE attachments; --", "%2e%2e", "\u00e9"]


@pytest.mark.parametrize("att", ATTACHMENT_NAMES, ids=[ascii(n) for n in ATTACHMENT_NAMES])
async def test_odd_attachment_names_round_trip(admin: Couch, alice: Couch, att: str) -> None:
    await admin.put("/field?access_mode=shared")
    rev = (await alice.put("/field/doc", {"v": 1}))["rev"]
    put = await alice.put(
        at(f"/field/doc/{url_id(att)}"),
        raw=b"data",
        headers={"Content-Type": "text/plain"},
        params={"rev": rev},
    )
    assert await alice.get(at(f"/field/doc/{url_id(att)}")) == b"data"
    doc = await alice.get("/field/doc")
    assert list(doc["_attachments"]) == [att]
    await alice.delete(at(f"/field/doc/{url_id(att)}"), params={"rev": put["rev"]})


@pytest.mark.parametrize(
    "content_type",
    ["text/plain\r\nX-Injected: 1", "text/plain\x00", "text/\n", "", "t\u00e9xt/plain"],
    ids=["crlf", "nul", "lf", "empty", "non-ascii"],
)
async def test_a_stored_content_type_cannot_break_or_inject_headers(
    client: Any, admin: Couch, alice: Couch, content_type: str
) -> None:
    await admin.put("/field?access_mode=shared")
    data = base64.b64encode(b"hello").decode()
    doc = {"_attachments": {"a.txt": {"content_type": content_type, "data": data}}}
    await alice.put("/field/doc", doc)
    async with client.get("/field/doc/a.txt", headers=alice.headers()) as resp:
        assert resp.status == 200
        assert await resp.read() == b"hello"
        assert "X-Injected" not in resp.headers
        assert resp.headers["Content-Type"].startswith("application/octet-stream")
    stored = await alice.get("/field/doc")
    assert stored["_attachments"]["a.txt"]["content_type"] == content_type


NUL_REQUESTS = [
    ("GET", "/field/_all_docs?keys=%5B%22a%5Cu0000%22%5D", None),
    ("GET", "/field/_all_docs?startkey=%22a%5Cu0000%22", None),
    ("POST", "/field/_all_docs", {"keys": ["a\x00"]}),
    ("POST", "/field/_bulk_get", {"docs": [{"id": "a\x00"}, {"id": "a\x00", "rev": "1-abc"}]}),
    ("POST", "/field/_revs_diff", {"a\x00": ["1-" + "a" * 32]}),
    ("POST", "/field/_changes?filter=_doc_ids", {"doc_ids": ["a\x00"]}),
    ("POST", "/field/_changes?filter=_selector", {"selector": {"v": "a\x00"}}),
    ("GET", "/field/_local/a%00b", None),
    ("PUT", "/field/_local/a%00b", {"seq": 1}),
    ("GET", "/field/doc/a%00.txt", None),
    ("PUT", "/field/doc/a%00.txt", None),
    ("GET", "/field/doc?open_revs=%5B%221-a%5Cu0000%22%5D", None),
    ("PUT", "/field/nul-body", {"v": "a\x00b", "k\x00": 1}),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), NUL_REQUESTS, ids=[f"{m} {p}"[:50] for m, p, _ in NUL_REQUESTS]
)
async def test_nul_anywhere_is_a_clean_answer(
    client: Any, admin: Couch, alice: Couch, engine: AsyncEngine, method: str, path: str, body: Any
) -> None:
    await admin.put("/field?access_mode=shared")
    await alice.put("/field/doc", {"v": 1})
    data = orjson.dumps(body) if body is not None else b"x"
    async with client.request(method, path, data=data, headers=alice.headers()) as resp:
        raw = await resp.read()
        assert resp.status < 500, raw
        if resp.status >= 400:
            assert couch_error(resp.status, orjson.loads(raw)), raw
    if path == "/field/nul-body":
        assert (await alice.get(path))["v"] == "a\x00b"
    await _tables_intact(engine)
