"""CSRF protection for cookie-authenticated writes (``gateway.csrf``) and the cookie itself.

A request that carries the ``AuthSession`` cookie and changes something must come from the
gateway's own origin or an allowed CORS origin (``settings`` allows ``http://app.example``);
otherwise it is a 403 ``forbidden`` that writes nothing.  Clients without browser headers,
Basic and Bearer credentials, and safe methods are not affected.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.settings import Settings, load_settings
from schema.tables import idempotency_keys
from tests.helpers import PASSWORD, Couch, basic

ALLOWED = "http://app.example"
FOREIGN = "http://evil.example"
API = "/api/v1/inspections"
NEW = {"template_id": "tpl-1", "title": "Boiler room", "site": "Block C", "responses": {}}

Answer = tuple[int, Any, Any]  # status, parsed body, headers


async def login(client: Any, user: str, headers: dict[str, str] | None = None) -> Answer:
    """``POST /_session`` as ``user``; the test client's cookie jar is emptied afterwards, so
    every later request carries exactly the headers the test gives it."""
    body = orjson.dumps({"name": user, "password": PASSWORD})
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    async with client.post("/_session", data=body, headers=all_headers) as resp:
        answer = (resp.status, await resp.json(), resp.headers)
    client.session.cookie_jar.clear()
    return answer


async def cookie_of(client: Any, user: str = "alice") -> str:
    status, _, headers = await login(client, user)
    assert status == 200
    return headers["Set-Cookie"].split(";")[0].split("=", 1)[1]


async def send(
    client: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Answer:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if cookie is not None:
        all_headers["Cookie"] = f"AuthSession={cookie}"
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    async with client.request(method, path, data=data, headers=all_headers) as resp:
        content = await resp.read()
        is_json = resp.content_type == "application/json" and content
        parsed = orjson.loads(content) if is_json else content
        return resp.status, parsed, resp.headers


def refused(answer: Answer) -> bool:
    """A CSRF refusal: 403 with exactly CouchDB's two members."""
    status, body, _ = answer
    return (
        status == 403
        and isinstance(body, dict)
        and set(body) == {"error", "reason"}
        and body["error"] == "forbidden"
        and "Cross-site request refused" in body["reason"]
    )


def own_origin(client: Any) -> str:
    return str(client.make_url("/")).rstrip("/")


@dataclasses.dataclass
class World:
    """A document, an attachment-less revision and an inspection that alice can change."""

    rev: str
    inspection: str


@pytest.fixture
async def world(alice: Couch, db: str) -> World:
    rev = (await alice.put(f"/{db}/kept", {"v": 1}))["rev"]
    created = await alice.post(API, NEW, expected_status=201)
    return World(rev=rev, inspection=created["id"])


JSON = "application/json"
BATCH = {"operations": [{"op": "create", "data": NEW}]}
# (user, method, path, body, content type): every kind of write a cookie can authenticate
WRITES: dict[str, tuple[str, str, str, Any, str]] = {
    "PUT a document": ("alice", "PUT", "/field/new", {"v": 1}, JSON),
    "POST a document": ("alice", "POST", "/field", {"_id": "posted"}, JSON),
    "POST _bulk_docs": ("alice", "POST", "/field/_bulk_docs", {"docs": [{"_id": "b"}]}, JSON),
    "update a document": ("alice", "PUT", "/field/kept", {"_rev": "{rev}", "v": 2}, JSON),
    "DELETE a document": ("alice", "DELETE", "/field/kept?rev={rev}", None, JSON),
    "PUT an attachment": ("alice", "PUT", "/field/kept/a.txt?rev={rev}", b"hi", "text/plain"),
    "PUT a checkpoint": ("alice", "PUT", "/field/_local/ck", {"seq": 1}, JSON),
    "REST create": ("alice", "POST", API, NEW, JSON),
    "REST PATCH": ("alice", "PATCH", API + "/{insp}", {"version": 1, "title": "x"}, JSON),
    "REST DELETE": ("alice", "DELETE", API + "/{insp}?version=1", None, JSON),
    "REST sync batch": ("alice", "POST", "/api/v1/sync/batch", BATCH, JSON),
    "DELETE a database": ("admin", "DELETE", "/field", None, JSON),
}


async def attempt(
    client: Any, world: World, write: str, cookie: str, headers: dict[str, str]
) -> Answer:
    """Send the write named ``write`` with ``cookie`` and ``headers``."""
    _, method, path, body, ctype = WRITES[write]
    path = path.format(rev=world.rev, insp=world.inspection)
    if isinstance(body, bytes):
        return await send(
            client, method, path, raw=body, cookie=cookie, headers=headers, content_type=ctype
        )
    if isinstance(body, dict) and body.get("_rev") == "{rev}":
        body = {**body, "_rev": world.rev}
    return await send(client, method, path, body, cookie=cookie, headers=headers)


async def snapshot(admin: Couch, alice: Couch) -> Any:
    """Everything the writes above could change, as the server reports it."""
    dbs = await admin.get("/_all_dbs")
    infos = [await admin.get(f"/{name}") for name in dbs]
    counts = [(i["db_name"], i["update_seq"], i["doc_count"], i["doc_del_count"]) for i in infos]
    local = await alice.get("/field/_local/ck", expected_status=None)
    return counts, local


@pytest.mark.parametrize("write", list(WRITES))
async def test_a_cookie_write_from_a_foreign_origin_is_refused_and_writes_nothing(
    client: Any, admin: Couch, alice: Couch, world: World, write: str
) -> None:
    """A hostile page's write with the victim's cookie is a 403 that changes nothing."""
    cookie = await cookie_of(client, WRITES[write][0])
    before = await snapshot(admin, alice)
    headers = {"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"}
    answer = await attempt(client, world, write, cookie, headers)
    assert refused(answer), answer
    assert await snapshot(admin, alice) == before


@pytest.mark.parametrize("write", list(WRITES))
async def test_the_same_cookie_write_from_an_allowed_origin_succeeds(
    client: Any, world: World, write: str
) -> None:
    """The browser app on an allowed CORS origin writes with its cookie as before."""
    cookie = await cookie_of(client, WRITES[write][0])
    headers = {"Origin": ALLOWED, "Sec-Fetch-Site": "cross-site"}
    status, body, resp_headers = await attempt(client, world, write, cookie, headers)
    assert 200 <= status < 300, (status, body)
    assert resp_headers["Access-Control-Allow-Origin"] == ALLOWED


FOREIGN_SOURCES = {
    "another site": {"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"},
    "an opaque origin (sandboxed frame, data: URL)": {"Origin": "null"},
    "another port of the allowed origin": {"Origin": ALLOWED + ":8080"},
    "https twin of the allowed http origin": {"Origin": "https://app.example"},
    "a look-alike of the allowed origin": {"Origin": "http://app.example.evil.example"},
    "another port of the gateway's host": {"Origin": "http://127.0.0.1:1"},
    "a script URL": {"Origin": "javascript:alert(1)"},
    "an empty Origin": {"Origin": ""},
    "a foreign Referer and no Origin": {"Referer": FOREIGN + "/page.html"},
    "a cross-site fetch naming no origin": {"Sec-Fetch-Site": "cross-site"},
    "a same-site sibling naming no origin": {"Sec-Fetch-Site": "same-site"},
    "a foreign Origin despite an allowed Referer": {"Origin": FOREIGN, "Referer": ALLOWED + "/"},
}


@pytest.mark.parametrize("source", list(FOREIGN_SOURCES))
async def test_every_untrusted_source_is_refused(
    client: Any, alice: Couch, db: str, source: str
) -> None:
    """Only exact trusted origins pass: no prefix match, no port or scheme leeway, no
    trusting ``null`` or a cross-site request that hides its origin."""
    cookie = await cookie_of(client)
    docs = {"docs": [{"_id": "x"}]}
    answer = await send(
        client, "POST", "/field/_bulk_docs", docs, cookie=cookie, headers=FOREIGN_SOURCES[source]
    )
    assert refused(answer), answer
    await alice.get("/field/x", expected_status=404)


async def test_trusted_sources_pass(client: Any, alice: Couch, db: str) -> None:
    """The allowed origin (however spelled), the gateway's own origin (http, or https when
    TLS ends at a proxy), an allowed Referer, and clients that send no browser headers."""
    own = own_origin(client)
    sources = [
        {"Origin": ALLOWED, "Sec-Fetch-Site": "cross-site"},
        {"Origin": "HTTP://App.Example:80"},
        {"Origin": own, "Sec-Fetch-Site": "same-origin"},
        {"Origin": own.replace("http://", "https://")},
        {"Referer": ALLOWED + "/app/index.html?x=1"},
        {"Referer": own + "/dashboard"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {},  # PouchDB in Node, curl, CouchDB's replicator with a cookie they hold
    ]
    cookie = await cookie_of(client)
    for n, headers in enumerate(sources):
        status, body, _ = await send(
            client, "PUT", f"/field/ok{n}", {"n": n}, cookie=cookie, headers=headers
        )
        assert status == 201, (headers, body)
    assert (await alice.get("/field"))["doc_count"] == len(sources)


async def test_basic_and_bearer_credentials_are_not_ambient_and_not_checked(
    client: Any, alice: Couch, db: str
) -> None:
    """A page can only send Basic or Bearer through a CORS preflight, which a foreign origin
    fails; so a foreign Origin with them is a non-browser client and is served.  A cookie
    sent along does not turn them into a cookie request."""
    status, tokens, _ = await send(
        client, "POST", "/api/v1/auth/login", {"username": "alice", "password": PASSWORD}
    )
    assert status == 200
    cookie = await cookie_of(client)
    foreign = {"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"}
    credentials = [
        {"Authorization": basic("alice")},
        {"Authorization": "Bearer " + tokens["access_token"]},
    ]
    for n, creds in enumerate(credentials):
        for with_cookie in (None, cookie):
            path = f"/field/hdr{n}{'c' if with_cookie else ''}"
            status, body, _ = await send(
                client, "PUT", path, {"n": n}, cookie=with_cookie, headers={**foreign, **creds}
            )
            assert status == 201, (creds, body)
    assert (await alice.get("/field"))["doc_count"] == 4


async def test_no_401_asks_a_browser_for_basic_credentials(client: Any, db: str) -> None:
    """Browsers cache credentials typed into a Basic prompt and attach them to cross-site
    requests: the gateway never challenges for Basic, so Basic never becomes ambient."""
    attempts = [
        {},
        {"Authorization": basic("alice", "wrong password")},
        {"Cookie": "AuthSession=forged"},
        {"Authorization": "Bearer forged"},
    ]
    for headers in attempts:
        async with client.get("/field", headers=headers) as resp:
            assert resp.status == 401
            challenge = resp.headers.get("WWW-Authenticate", "")
            assert "basic" not in challenge.lower(), (headers, challenge)


async def test_safe_methods_with_the_cookie_are_served_to_any_origin(
    client: Any, alice: Couch, db: str
) -> None:
    """GET and HEAD change nothing; CORS alone keeps their answers from foreign pages (no
    ``Access-Control-Allow-Origin`` for them)."""
    await alice.put("/field/doc", {"v": 1})
    cookie = await cookie_of(client)
    foreign = {"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"}
    for method, path in [("GET", "/field/doc"), ("HEAD", "/field/doc"), ("GET", "/field/_changes")]:
        status, _, headers = await send(client, method, path, cookie=cookie, headers=foreign)
        assert status == 200, (method, path)
        assert "Access-Control-Allow-Origin" not in headers


async def test_a_text_plain_form_post_from_another_page_is_refused(
    client: Any, alice: Couch, db: str
) -> None:
    """``<form enctype="text/plain">`` can spell a JSON document (a field named
    ``{"_id":"pwned","x":"`` with the value ``"}``) and the gateway accepts text/plain bodies
    as CouchDB does.  With the victim's cookie from a foreign page it is refused; the same
    body from the allowed origin is written, so the 403 is the CSRF check, not the type."""
    cookie = await cookie_of(client)
    body = b'{"_id":"pwned","x":"=x"}'
    form = {
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document",
    }
    for headers in ({"Origin": FOREIGN, **form}, {"Referer": FOREIGN + "/", **form}, form):
        answer = await send(
            client,
            "POST",
            "/field",
            raw=body,
            cookie=cookie,
            headers=headers,
            content_type="text/plain",
        )
        assert refused(answer), (headers, answer)
    await alice.get("/field/pwned", expected_status=404)
    status, _, _ = await send(
        client,
        "POST",
        "/field",
        raw=body,
        cookie=cookie,
        headers={"Origin": ALLOWED},
        content_type="text/plain",
    )
    assert status == 201
    await alice.get("/field/pwned")


async def test_a_foreign_page_cannot_log_the_browser_in(client: Any) -> None:
    """Login CSRF: a cross-site form posting the attacker's name and password to
    ``/_session`` would put the attacker's cookie in the victim's browser.  It is refused
    and sets no cookie; the allowed origin and non-browser clients log in as before."""
    status, body, headers = await login(client, "alice", {"Origin": FOREIGN})
    assert (status, body["error"]) == (403, "forbidden") and "Set-Cookie" not in headers
    status, _, headers = await login(client, "alice", {"Sec-Fetch-Site": "cross-site"})
    assert status == 403 and "Set-Cookie" not in headers
    for trusted in ({"Origin": ALLOWED}, {"Origin": own_origin(client)}, {}):
        status, _, headers = await login(client, "alice", trusted)
        assert status == 200 and headers["Set-Cookie"].startswith("AuthSession="), trusted


async def test_a_foreign_page_cannot_log_the_user_out(client: Any) -> None:
    """``DELETE /_session`` with the cookie from a foreign origin keeps the cookie."""
    cookie = await cookie_of(client)
    answer = await send(client, "DELETE", "/_session", cookie=cookie, headers={"Origin": FOREIGN})
    assert refused(answer) and "Set-Cookie" not in answer[2]
    status, _, headers = await send(
        client, "DELETE", "/_session", cookie=cookie, headers={"Origin": ALLOWED}
    )
    assert status == 200 and "Max-Age=0" in headers["Set-Cookie"]


async def test_a_refused_write_claims_no_idempotency_key(
    client: Any, alice: Couch, engine: AsyncEngine
) -> None:
    """The check runs before the key is claimed: the legitimate retry with the same key runs
    (201, not a replayed 403)."""
    cookie = await cookie_of(client)
    key = {"Idempotency-Key": "csrf-1"}
    answer = await send(client, "POST", API, NEW, cookie=cookie, headers={"Origin": FOREIGN, **key})
    assert refused(answer)
    async with engine.connect() as conn:
        assert (
            await conn.execute(select(func.count()).select_from(idempotency_keys))
        ).scalar() == 0
    status, _, headers = await send(
        client, "POST", API, NEW, cookie=cookie, headers={"Origin": ALLOWED, **key}
    )
    assert status == 201 and "Idempotent-Replayed" not in headers


async def test_a_preflight_then_a_cookie_write_from_the_allowed_origin(
    client: Any, alice: Couch, db: str
) -> None:
    """What browser PouchDB does: a preflight (no credentials) granted with credentials
    allowed, then the write with the cookie."""
    preflight = {
        "Origin": ALLOWED,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type",
    }
    async with client.options("/field/pre", headers=preflight) as resp:
        assert 200 <= resp.status < 300
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    cookie = await cookie_of(client)
    status, _, headers = await send(
        client, "PUT", "/field/pre", {"v": 1}, cookie=cookie, headers={"Origin": ALLOWED}
    )
    assert status == 201 and headers["Access-Control-Allow-Credentials"] == "true"
    await alice.get("/field/pre")


async def test_behind_a_trusted_proxy_its_forwarded_origin_is_the_gateways_own(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    """With ``GATEWAY_TRUST_PROXY`` the proxy's ``X-Forwarded-Host``/``-Proto`` name the
    origin pages of this gateway have; without it those headers are the client's word."""
    proxy = {"X-Forwarded-Host": "gw.example", "X-Forwarded-Proto": "https"}
    headers = {"Origin": "https://gw.example", **proxy}
    for trust, expected in ((True, 201), (False, 403)):
        app = create_app(dataclasses.replace(settings, trust_proxy=trust), migrate=False)
        client = await aiohttp_client(app)
        alice = Couch(client, "alice")
        await Couch(client, "admin").put(f"/proxied{int(trust)}?access_mode=shared")
        cookie = await cookie_of(client)
        path = f"/proxied{int(trust)}/doc"
        status, body, _ = await send(client, "PUT", path, {}, cookie=cookie, headers=headers)
        assert status == expected, (trust, body)
        await alice.get(path, expected_status=200 if trust else 404)


async def test_a_wildcard_trusts_every_origin_but_an_opaque_one(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    """``GATEWAY_CORS_ORIGINS=*`` already lets any page read answers with credentials, so it
    trusts any origin for cookie writes too; ``Origin: null`` stays refused."""
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, cors_origins=("*",)), migrate=False)
    )
    alice = Couch(client, "alice")
    await Couch(client, "admin").put("/field?access_mode=shared", expected_status=201)
    cookie = await cookie_of(client)
    status, _, _ = await send(
        client, "PUT", "/field/w", {}, cookie=cookie, headers={"Origin": FOREIGN}
    )
    assert status == 201
    answer = await send(client, "PUT", "/field/n", {}, cookie=cookie, headers={"Origin": "null"})
    assert refused(answer)
    await alice.get("/field/n", expected_status=404)


# -- the cookie's attributes ------------------------------------------------------------------


def attributes(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")]
    return {p.split("=", 1)[0].lower(): [*p.split("=", 1), ""][1] for p in parts[1:]}


async def test_the_cookie_is_httponly_and_samesite_lax(client: Any) -> None:
    """No script can read it, and other sites' pages do not send it (``Lax``); over plain
    http it cannot be ``Secure``."""
    _, _, headers = await login(client, "alice")
    attrs = attributes(headers["Set-Cookie"])
    assert "httponly" in attrs and attrs["samesite"] == "Lax" and attrs["path"] == "/"
    assert attrs["max-age"] == "600" and "secure" not in attrs


async def test_the_cookie_is_secure_when_the_browser_used_https(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    """Behind a trusted TLS-terminating proxy the cookie is ``Secure``; an untrusted
    ``X-Forwarded-Proto`` changes nothing."""
    for trust in (True, False):
        app = create_app(dataclasses.replace(settings, trust_proxy=trust), migrate=False)
        client = await aiohttp_client(app)
        _, _, headers = await login(client, "alice", {"X-Forwarded-Proto": "https"})
        assert ("secure" in attributes(headers["Set-Cookie"])) is trust


@pytest.mark.parametrize(("value", "expected"), [("strict", "Strict"), ("none", "None")])
async def test_samesite_is_configurable_and_none_is_always_secure(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine, value: str, expected: str
) -> None:
    """``GATEWAY_SESSION_COOKIE_SAMESITE``: ``none`` (an app on another site) must be
    ``Secure`` or browsers drop it; the logout cookie carries the same attributes."""
    configured = load_settings({"GATEWAY_SESSION_COOKIE_SAMESITE": value.upper()}, dotenv_path="")
    changed = dataclasses.replace(
        settings, session_cookie_samesite=configured.session_cookie_samesite
    )
    client = await aiohttp_client(create_app(changed, migrate=False))
    _, _, headers = await login(client, "alice")
    attrs = attributes(headers["Set-Cookie"])
    assert attrs["samesite"] == expected and "httponly" in attrs
    assert ("secure" in attrs) is (value == "none")
    async with client.delete("/_session") as resp:
        assert attributes(resp.headers["Set-Cookie"])["samesite"] == expected


def test_an_unknown_samesite_value_is_a_configuration_error() -> None:
    with pytest.raises(SystemExit, match="GATEWAY_SESSION_COOKIE_SAMESITE"):
        load_settings({"GATEWAY_SESSION_COOKIE_SAMESITE": "sometimes"}, dotenv_path="")


async def test_a_stale_cookie_does_not_lock_its_holder_out_of_the_session_routes(
    client: Any,
) -> None:
    """A browser still holding a cookie the gateway no longer accepts (expired, another
    secret key) can ask who it is, log in again and log out, as with CouchDB; other routes
    still refuse it."""
    stale = {"Cookie": "AuthSession=eyJhbGciOiJIUzI1NiJ9.e30.forged"}
    status, body, _ = await send(client, "GET", "/_session", headers=stale)
    assert status == 200 and body["userCtx"]["name"] is None
    status, _, headers = await login(client, "alice", stale)
    assert status == 200 and headers["Set-Cookie"].startswith("AuthSession=")
    status, _, headers = await send(client, "DELETE", "/_session", headers=stale)
    assert status == 200 and "Max-Age=0" in headers["Set-Cookie"]
    status, _, _ = await send(client, "GET", "/_all_dbs", headers=stale)
    assert status == 401
