"""Who may call what (SPEC §3): every route of ``gateway.routes.ROUTES`` by every caller.

Callers: ``anonymous`` (no credentials), ``bad-basic`` (alice with a wrong password),
``forged-bearer`` (an access token for admin, signed with another key), and one user of each
role over Basic: ``inspector`` (alice), ``manager``, ``admin``.  Each (route, caller) gets one
of three answers:

- 401 with a CouchDB-shaped ``{"error": "unauthorized", "reason"}``, from the auth middleware
  (the handler never runs);
- 403 with ``{"error": "forbidden", "reason"}``;
- allowed: the request reaches the route's own handler (an innermost middleware records the
  route that matched) and gets the row's success status -- each row sends a request valid
  enough that only the role decides.

A write that is refused must change nothing, and an allowed one must take effect: rows that
change something say how to tell (``done``), and that is checked for every caller.

Access classes (bad credentials are 401 on every route but the probes and the routes that
hand out credentials, as in CouchDB):

    access   anonymous  bad creds  inspector  manager  admin
    probe    ok         ok         ok         ok       ok     /healthz, /readyz
    login    ok         ok         ok         ok       ok     a stale token cannot block a refresh
    public   ok         401        ok         ok       ok
    user     401        401        ok         ok       ok
    staff    401        401        403        ok       ok
    admin    401        401        403        403      ok

    route                                         access
    GET    /                                      public
    GET    /healthz, /readyz                      probe
    GET    /metrics                               public (admin with GATEWAY_METRICS_PUBLIC=false)
    GET    /_all_dbs, /_uuids                     user
    GET    /_db_updates                           staff
    GET|POST|DELETE /_session                     public
    GET    /dashboard, /dashboard/{path}          public
    POST   /api/v1/auth/login, /auth/refresh      login
    POST   /api/v1/auth/logout, GET /auth/me      user
    GET    /api/v1/checkpoints                    staff
    DELETE /api/v1/checkpoints                    admin
    GET    /api/v1/openapi.json                   public
    GET    /api/v1/activity, /activity/stats      staff
    *      /api/v1/inspections[/{id}[/photos]]    user
    POST   /api/v1/photos/upload-params, confirm  user
    *      /api/v1/sync/batch, /sync/changes      user
    GET    /api/v1/templates[/{id}]               user
    POST|PATCH|DELETE /api/v1/templates[/{id}]    staff  (the templates database is readonly)
    *      /api/v1/conflicts[/{id}[/resolve]]     user   (an inspector: their own records)
    PUT|DELETE /{db}                              admin
    PUT    /{db}/_revs_limit, POST /{db}/_compact staff
    PUT    /{db}/_conflict_policy                 admin
    every other /{db}/... route                   user   (in a ``shared`` database; the
                                                          access modes: test_access_matrix)

A route added to ``ROUTES`` without a row here fails ``test_every_route_has_a_row``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from gateway.app import create_app
from gateway.routes import DB, ROUTES
from gateway.settings import Settings
from gateway.tokens import make_access_token
from schema.engine import make_engine
from schema.tables import metadata, users
from schema.users import find_user, verify_password
from tests.conftest import BACKEND, USERS
from tests.fake_cloudinary import FakeCloudinary
from tests.helpers import PASSWORD, Couch

SECRET_KEY = "test-secret-key-that-is-long-enough-for-hs256"  # as tests/conftest.py's settings
PROBE, LOGIN, PUBLIC = "probe", "login", "public"
USER, STAFF, ADMIN = "user", "staff", "admin"
CALLERS = ("anonymous", "bad-basic", "forged-bearer", "inspector", "manager", "admin")
ROLE_USERS = {"inspector": "alice", "manager": "manager", "admin": "admin"}
assert {USERS[name] for name in ROLE_USERS.values()} == {"inspector", "manager", "admin"}
HANDLERS = {(method, path): handler for method, path, handler in ROUTES}
INSPECTION = {"template_id": "tpl-1", "title": "Boiler room", "site": "Block C", "responses": {}}
TEMPLATE = {"name": "Boiler room", "fields": [{"key": "pressure", "type": "number"}]}
TEXT = {"Content-Type": "text/plain"}


def expected(access: str, caller: str) -> int | None:
    """The refusal ``caller`` gets on a route of class ``access`` (None: allowed)."""
    if caller in ("bad-basic", "forged-bearer"):
        return None if access in (PROBE, LOGIN) else 401
    if caller == "anonymous":
        return None if access in (PROBE, LOGIN, PUBLIC) else 401
    if access == STAFF:
        return 403 if caller == "inspector" else None
    if access == ADMIN:
        return None if caller == "admin" else 403
    return None


def canonical(path: str) -> str:
    """A route path without its regular expressions: ``/{db:[^/_][^/]*}`` → ``/{db}``."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


# -- the world -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reached:
    """A request that got past every middleware to its handler."""

    method: str
    path: str  # the matched resource, canonical
    handler: Any


@dataclass
class World:
    """One gateway (and one with private metrics) over one database, shared by every case."""

    clients: dict[str, Any]
    reached: list[Reached]
    fake: FakeCloudinary
    forged: str  # admin's access token, signed with the wrong key
    inspection: str  # alice's
    template: str
    conflict: int  # a record about alice's document
    serial: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    def couch(self, user: str | None, password: str = PASSWORD, app: str = "main") -> Couch:
        return Couch(self.clients[app], user, password)

    @property
    def admin(self) -> Couch:
        return self.couch("admin")

    @property
    def manager(self) -> Couch:
        return self.couch("manager")

    @property
    def alice(self) -> Couch:
        return self.couch("alice")

    async def status(self, path: str, user: str = "admin") -> int:
        async with self.clients["main"].get(path, headers=self.couch(user).headers()) as resp:
            await resp.read()
            return resp.status

    async def exists(self, path: str, user: str = "admin") -> bool:
        status = await self.status(path, user)
        assert status in (200, 404), (path, status)
        return status == 200


@dataclass(frozen=True, slots=True)
class Req:
    url: str
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """The request to send and, for a write, how to tell that it took effect."""

    req: Req
    done: Callable[[], Awaitable[bool]] | None = None


@dataclass(frozen=True, slots=True)
class Ctx:
    """One case: a unique tag for the names it creates, and the caller's own user, if any."""

    tag: str
    me: Couch | None


Make = Callable[[World, Ctx], Awaitable[Plan]]


@dataclass(frozen=True, slots=True)
class Row:
    method: str
    path: str  # exactly as in ROUTES
    access: str
    make: Make
    ok: int = 200  # the status of an allowed request
    app: str = "main"
    variant: str = ""
    handler_checks: bool = False  # public to the auth middleware; the handler asks for a user

    @property
    def label(self) -> str:
        return canonical(self.path) + (f" [{self.variant}]" if self.variant else "")


ROWS: list[Row] = []


def row(method: str, path: str, access: str, **kw: Any) -> Callable[[Make], Make]:
    """Register a row whose request is built (and its world prepared) by the function."""

    def register(make: Make) -> Make:
        ROWS.append(Row(method, path, access, make, **kw))
        return make

    return register


def fixed(method: str, path: str, access: str, url: str, body: Any = None, **kw: Any) -> None:
    """Register a row that sends the same request for every caller."""

    async def make(world: World, ctx: Ctx) -> Plan:
        return Plan(Req(url, body))

    row(method, path, access, **kw)(make)


def api(suffix: str) -> str:
    return "/api/v1" + suffix


def at_db(suffix: str = "") -> str:
    return DB + suffix


# -- the matrix: server routes ---------------------------------------------------------------------

fixed("GET", "/", PUBLIC, "/")
fixed("GET", "/healthz", PROBE, "/healthz")
fixed("GET", "/readyz", PROBE, "/readyz")
fixed("GET", "/metrics", PUBLIC, "/metrics")
fixed(  # in PUBLIC_ROUTES: the handler itself asks for an admin
    "GET", "/metrics", ADMIN, "/metrics", app="private", variant="metrics not public",
    handler_checks=True,
)  # fmt: skip
fixed("GET", "/_all_dbs", USER, "/_all_dbs")
fixed("GET", "/_uuids", USER, "/_uuids")
fixed("GET", "/_db_updates", STAFF, "/_db_updates")
fixed("GET", "/_session", PUBLIC, "/_session")
fixed("POST", "/_session", PUBLIC, "/_session", {"name": "bob", "password": PASSWORD})
fixed("DELETE", "/_session", PUBLIC, "/_session")
fixed("GET", "/dashboard", PUBLIC, "/dashboard")
fixed("GET", "/dashboard/{path:.*}", PUBLIC, "/dashboard/app.js")

# -- /api/v1/auth, checkpoints, activity -----------------------------------------------------------

fixed(
    "POST",
    api("/auth/login"),
    LOGIN,
    api("/auth/login"),
    {"username": "bob", "password": PASSWORD},
)


@row("POST", api("/auth/refresh"), LOGIN)
async def _refresh(world: World, ctx: Ctx) -> Plan:
    login = {"username": "bob", "password": PASSWORD}
    token = (await world.couch(None).post(api("/auth/login"), login))["refresh_token"]

    async def spent() -> bool:
        again = await world.couch(None).post(
            api("/auth/refresh"), {"refresh_token": token}, expected_status=None
        )
        return again.get("error") == "unauthorized"

    return Plan(Req(api("/auth/refresh"), {"refresh_token": token}), spent)


fixed("POST", api("/auth/logout"), USER, api("/auth/logout"))
fixed("GET", api("/auth/me"), USER, api("/auth/me"))
fixed("GET", api("/checkpoints"), STAFF, api("/checkpoints"))


@row("DELETE", api("/checkpoints"), ADMIN)
async def _reset_checkpoints(world: World, ctx: Ctx) -> Plan:
    local = f"/field/_local/ck-{ctx.tag}"
    await world.couch("bob").put(local, {"last_seq": 1})

    async def gone() -> bool:
        return not await world.exists(local, "bob")

    return Plan(Req(api(f"/checkpoints?user=bob&db=field&id=ck-{ctx.tag}")), gone)


fixed("GET", api("/openapi.json"), PUBLIC, api("/openapi.json"))
fixed("GET", api("/activity"), STAFF, api("/activity"))
fixed("GET", api("/activity/stats"), STAFF, api("/activity/stats"))

# -- /api/v1/inspections, photos, sync -------------------------------------------------------------

fixed("GET", api("/inspections"), USER, api("/inspections"))


def rest_collection_rows(
    name: str, writers: str, body: dict[str, Any], field: str, author: str
) -> None:
    """The create, get, patch and delete rows of ``/api/v1/{name}``: writes need ``writers``
    access; patch and delete work on a fresh item made by ``author`` (``alice``, ``manager``),
    and each says how to tell it took effect (``field`` renamed, the item gone)."""
    base = api(f"/{name}")
    param = "{" + name[:-1] + "_id}"

    async def fresh(world: World) -> str:
        maker = getattr(world, author)
        return (await maker.post(base, body, expected_status=201))["id"]

    @row("POST", base, writers, ok=201)
    async def _create(world: World, ctx: Ctx) -> Plan:
        new = str(uuid.uuid4())
        created = functools.partial(world.exists, f"{base}/{new}")
        return Plan(Req(base, {"id": new, **body}), created)

    @row("GET", f"{base}/{param}", USER)
    async def _get(world: World, ctx: Ctx) -> Plan:
        return Plan(Req(f"{base}/{getattr(world, name[:-1])}"))

    @row("PATCH", f"{base}/{param}", writers)
    async def _patch(world: World, ctx: Ctx) -> Plan:
        path = f"{base}/{await fresh(world)}"

        async def patched() -> bool:
            return (await world.manager.get(path))[field] == "Changed"

        return Plan(Req(path, {"version": 1, field: "Changed"}), patched)

    @row("DELETE", f"{base}/{param}", writers)
    async def _delete(world: World, ctx: Ctx) -> Plan:
        path = f"{base}/{await fresh(world)}"

        async def deleted() -> bool:
            return not await world.exists(path)

        return Plan(Req(path + "?version=1"), deleted)


rest_collection_rows("inspections", USER, INSPECTION, "title", author="alice")


@row("GET", api("/inspections/{inspection_id}/photos"), USER)
async def _list_photos(world: World, ctx: Ctx) -> Plan:
    return Plan(Req(api(f"/inspections/{world.inspection}/photos")))


@row("POST", api("/photos/upload-params"), USER)
async def _upload_params(world: World, ctx: Ctx) -> Plan:
    return Plan(Req(api("/photos/upload-params"), {"inspection_id": world.inspection}))


@row("POST", api("/photos/confirm"), USER, ok=201)
async def _confirm_photo(world: World, ctx: Ctx) -> Plan:
    public_id = f"inspections/{world.inspection}/{uuid.uuid4().hex}"
    world.fake.add_asset(public_id)

    async def recorded() -> bool:
        listed = await world.manager.get(api(f"/inspections/{world.inspection}/photos"))
        return public_id in [p["public_id"] for p in listed["results"]]

    body = {"inspection_id": world.inspection, "public_id": public_id}
    return Plan(Req(api("/photos/confirm"), body), recorded)


@row("POST", api("/sync/batch"), USER, ok=207)
async def _sync_batch(world: World, ctx: Ctx) -> Plan:
    new = str(uuid.uuid4())
    created = functools.partial(world.exists, api(f"/inspections/{new}"))
    operations = [{"op": "create", "id": new, "data": INSPECTION}]
    return Plan(Req(api("/sync/batch"), {"operations": operations}), created)


fixed("GET", api("/sync/changes"), USER, api("/sync/changes"))

# -- /api/v1/templates -----------------------------------------------------------------------------

fixed("GET", api("/templates"), USER, api("/templates"))
rest_collection_rows("templates", STAFF, TEMPLATE, "name", author="manager")


# -- /api/v1/conflicts -----------------------------------------------------------------------------

fixed("GET", api("/conflicts"), USER, api("/conflicts"))


@row("GET", api("/conflicts/{conflict_id}"), USER)
async def _get_conflict(world: World, ctx: Ctx) -> Plan:
    return Plan(Req(api(f"/conflicts/{world.conflict}")))


async def alices_conflict(world: World, doc: str) -> int:
    """Alice's document ``doc`` in ``field`` with a second branch pushed: its record's id."""
    first = (await world.alice.put(f"/field/{doc}", {"n": 1}))["rev"]
    await world.alice.put(f"/field/{doc}", {"n": 2}, params={"rev": first})
    branch = {
        "_id": doc,
        "_rev": "2-" + "b" * 32,
        "_revisions": {"start": 2, "ids": ["b" * 32, first.split("-")[1]]},
        "n": 3,
    }
    await world.alice.post(
        "/field/_bulk_docs", {"docs": [branch], "new_edits": False}, expected_status=201
    )
    listed = await world.manager.get(api("/conflicts"), params={"db": "field", "doc_id": doc})
    [record] = listed["results"]
    return int(record["id"])


@row("POST", api("/conflicts/{conflict_id}/resolve"), USER)
async def _resolve_conflict(world: World, ctx: Ctx) -> Plan:
    record = await alices_conflict(world, f"conflict-{ctx.tag}")

    async def resolved() -> bool:
        return (await world.manager.get(api(f"/conflicts/{record}")))["status"] != "open"

    return Plan(Req(api(f"/conflicts/{record}/resolve"), {"strategy": "keep_theirs"}), resolved)


# -- /{db} -----------------------------------------------------------------------------------------


@row("PUT", DB, ADMIN, ok=201)
async def _put_db(world: World, ctx: Ctx) -> Plan:
    name = f"new-{ctx.tag}"
    return Plan(Req(f"/{name}?access_mode=shared"), functools.partial(world.exists, f"/{name}"))


fixed("GET", DB, USER, "/field")


@row("DELETE", DB, ADMIN)
async def _delete_db(world: World, ctx: Ctx) -> Plan:
    name = f"gone-{ctx.tag}"
    await world.admin.put(f"/{name}?access_mode=shared")

    async def deleted() -> bool:
        return not await world.exists(f"/{name}")

    return Plan(Req(f"/{name}"), deleted)


@row("POST", DB, USER, ok=201)
async def _post_doc(world: World, ctx: Ctx) -> Plan:
    doc = f"post-{ctx.tag}"
    return Plan(
        Req("/field", {"_id": doc, "n": 1}), functools.partial(world.exists, f"/field/{doc}")
    )


fixed("GET", at_db("/_changes"), USER, "/field/_changes")
fixed("POST", at_db("/_changes"), USER, "/field/_changes?filter=_doc_ids", {"doc_ids": ["w-doc"]})


@row("POST", at_db("/_bulk_docs"), USER, ok=201)
async def _bulk_docs(world: World, ctx: Ctx) -> Plan:
    doc = f"bulk-{ctx.tag}"
    written = functools.partial(world.exists, f"/field/{doc}")
    return Plan(Req("/field/_bulk_docs", {"docs": [{"_id": doc, "n": 1}]}), written)


fixed("POST", at_db("/_bulk_get"), USER, "/field/_bulk_get", {"docs": [{"id": "w-doc"}]})
fixed("POST", at_db("/_revs_diff"), USER, "/field/_revs_diff", {"w-doc": ["9-" + "a" * 32]})
fixed("GET", at_db("/_all_docs"), USER, "/field/_all_docs")
fixed("POST", at_db("/_all_docs"), USER, "/field/_all_docs", {"keys": ["w-doc"]})
fixed("POST", at_db("/_ensure_full_commit"), USER, "/field/_ensure_full_commit", ok=201)
fixed("GET", at_db("/_revs_limit"), USER, "/field/_revs_limit")


@row("PUT", at_db("/_revs_limit"), STAFF)
async def _put_revs_limit(world: World, ctx: Ctx) -> Plan:
    name = f"limit-{ctx.tag}"
    await world.admin.put(f"/{name}?access_mode=shared")

    async def changed() -> bool:
        return await world.admin.get(f"/{name}/_revs_limit") == 7

    return Plan(Req(f"/{name}/_revs_limit", 7), changed)


fixed("POST", at_db("/_compact"), STAFF, "/field/_compact", ok=202)
fixed("GET", at_db("/_conflict_policy"), USER, "/field/_conflict_policy")


@row("PUT", at_db("/_conflict_policy"), ADMIN)
async def _put_conflict_policy(world: World, ctx: Ctx) -> Plan:
    name = f"policy-{ctx.tag}"
    await world.admin.put(f"/{name}?access_mode=shared")

    async def changed() -> bool:
        return await world.admin.get(f"/{name}/_conflict_policy") == "merge"

    return Plan(Req(f"/{name}/_conflict_policy", "merge"), changed)


fixed("GET", at_db("/_security"), USER, "/field/_security")

# -- /{db}/_local (each user's own) ----------------------------------------------------------------


async def local_doc(world: World, ctx: Ctx) -> tuple[Couch, str, str]:
    """A checkpoint of the caller's own (alice's for callers without a user): owner, path, rev."""
    owner = ctx.me or world.alice
    path = f"/field/_local/ck-{ctx.tag}"
    return owner, path, (await owner.put(path, {"last_seq": 1}))["rev"]


@row("GET", at_db("/_local/{localid}"), USER)
async def _get_local(world: World, ctx: Ctx) -> Plan:
    _, path, _ = await local_doc(world, ctx)
    return Plan(Req(path))


@row("PUT", at_db("/_local/{localid}"), USER, ok=201)
async def _put_local(world: World, ctx: Ctx) -> Plan:
    path = f"/field/_local/new-{ctx.tag}"

    async def written() -> bool:
        return await world.exists(path, (ctx.me or world.alice).user or "")

    return Plan(Req(path, {"last_seq": 1}), written)


@row("DELETE", at_db("/_local/{localid}"), USER)
async def _delete_local(world: World, ctx: Ctx) -> Plan:
    owner, path, rev = await local_doc(world, ctx)

    async def deleted() -> bool:
        return not await world.exists(path, owner.user or "")

    return Plan(Req(f"{path}?rev={rev}"), deleted)


# -- /{db}/_design/{ddoc} and /{db}/{docid}, with attachments --------------------------------------


def doc_rows(prefix: str, route: str) -> None:
    """The six document and attachment rows, for ``_design/`` ids or plain ones."""
    kind = prefix.strip("/_") or "doc"
    world_doc = f"/field/{prefix}w-{kind}"

    async def alices(world: World, ctx: Ctx, attachment: bool = False) -> tuple[str, str]:
        path = f"/field/{prefix}{kind}-{ctx.tag}"
        rev = (await world.alice.put(path, {"n": 1}))["rev"]
        if attachment:
            put = await world.alice.put(
                f"{path}/a.txt", raw=b"hi", headers=TEXT, params={"rev": rev}
            )
            rev = put["rev"]
        return path, rev

    @row("GET", at_db(route), USER)
    async def _get(world: World, ctx: Ctx) -> Plan:
        return Plan(Req(world_doc))

    @row("PUT", at_db(route), USER, ok=201)
    async def _put(world: World, ctx: Ctx) -> Plan:
        path = f"/field/{prefix}new-{ctx.tag}"
        return Plan(Req(path, {"n": 1}), functools.partial(world.exists, path))

    @row("DELETE", at_db(route), USER)
    async def _delete(world: World, ctx: Ctx) -> Plan:
        path, rev = await alices(world, ctx)

        async def deleted() -> bool:
            return not await world.exists(path)

        return Plan(Req(f"{path}?rev={rev}"), deleted)

    @row("GET", at_db(route + "/{attname:.+}"), USER)
    async def _get_attachment(world: World, ctx: Ctx) -> Plan:
        return Plan(Req(f"{world_doc}/a.txt"))

    @row("PUT", at_db(route + "/{attname:.+}"), USER, ok=201)
    async def _put_attachment(world: World, ctx: Ctx) -> Plan:
        path, rev = await alices(world, ctx)
        added = functools.partial(world.exists, f"{path}/a.txt")
        return Plan(Req(f"{path}/a.txt?rev={rev}", raw=b"hello", headers=TEXT), added)

    @row("DELETE", at_db(route + "/{attname:.+}"), USER)
    async def _delete_attachment(world: World, ctx: Ctx) -> Plan:
        path, rev = await alices(world, ctx, attachment=True)

        async def removed() -> bool:
            return not await world.exists(f"{path}/a.txt")

        return Plan(Req(f"{path}/a.txt?rev={rev}"), removed)


doc_rows("_design/", "/_design/{ddoc}")
doc_rows("", "/{docid}")


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """One migrated database for the whole module (as conftest's ``database_url``, once)."""
    if BACKEND == "postgres":
        return request.getfixturevalue("pg_migrated")
    target = tmp_path_factory.mktemp("role-matrix") / "gateway.sqlite3"
    shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
    return f"sqlite+aiosqlite:///{target}"


def recorder(reached: list[Reached]) -> Any:
    """An innermost middleware: the requests that got through to their handler."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route
        path = route.resource.canonical if route.resource is not None else ""
        reached.append(Reached(request.method, path, request.match_info.handler))
        return await handler(request)

    return record


async def build_world(
    clients: dict[str, Any], reached: list[Reached], fake: FakeCloudinary, forged: str
) -> World:
    """The shared database ``field``; alice's document, inspection and conflict; a design
    document and a template (each case creates whatever else it changes)."""
    world = World(clients, reached, fake, forged, inspection="", template="", conflict=0)
    await world.admin.put("/field?access_mode=shared", expected_status=201)
    for doc in ("/field/w-doc", "/field/_design/w-design"):
        rev = (await world.alice.put(doc, {"n": 1}))["rev"]
        await world.alice.put(f"{doc}/a.txt", raw=b"hi", headers=TEXT, params={"rev": rev})
    made = functools.partial(Couch.post, expected_status=201)
    world.inspection = (await made(world.alice, api("/inspections"), INSPECTION))["id"]
    world.template = (await made(world.manager, api("/templates"), TEMPLATE))["id"]
    world.conflict = await alices_conflict(world, "w-conflict")
    return world


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    matrix_database_url: str, password_hash: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    engine = make_engine(matrix_database_url, pool_size=5)
    async with engine.begin() as conn:
        if BACKEND == "postgres":
            names = ", ".join(t.name for t in metadata.sorted_tables if t.name != "alembic_version")
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        await conn.execute(
            users.insert(),
            [{"name": n, "role": r, "password_hash": password_hash} for n, r in USERS.items()],
        )
        admin_user = await find_user(conn, "admin")
    assert admin_user is not None
    forged, _ = make_access_token("not-" + SECRET_KEY, admin_user, 900)
    fake = FakeCloudinary()
    await fake.start()
    settings = Settings(  # tests/conftest.py's ``settings``, plus:
        data_dir=tmp_path_factory.mktemp("role-matrix-data"),
        database_url=matrix_database_url,
        secret_key=SECRET_KEY,
        cors_origins=("http://app.example",),
        feed_poll_seconds=0.5,
        db_pool_size=5,
        cloudinary_url=fake.cloudinary_url,  # the photo routes reach a (fake) Cloudinary
        cloudinary_api_base=fake.url,
        # every case signs in again: wrong passwords ~100 times a minute must stay 401s, not
        # 429s (the failed-login limits have their own tests: test_login_rate_limit.py)
        login_failure_window_seconds=0,
    )
    reached: list[Reached] = []
    clients: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        # the same users sign in with the same passwords in every case: run scrypt once each
        patch.setattr("gateway.auth.verify_password", functools.cache(verify_password))
        for name, changes in {"main": {}, "private": {"metrics_public": False}}.items():
            app = create_app(dataclasses.replace(settings, **changes), migrate=False)
            app.middlewares.append(recorder(reached))
            # no cookie jar: POST /_session must not sign later "anonymous" requests in
            client = TestClient(TestServer(app), cookie_jar=DummyCookieJar())
            await client.start_server()
            clients[name] = client
        try:
            yield await build_world(clients, reached, fake, forged)
        finally:
            for client in clients.values():
                await client.close()
            await fake.stop()
            await engine.dispose()


# -- the tests -------------------------------------------------------------------------------------


def caller_couch(world: World, caller: str, app: str) -> tuple[Couch, dict[str, str]]:
    """The client ``caller`` sends with, and any extra headers."""
    if caller in ROLE_USERS:
        return world.couch(ROLE_USERS[caller], app=app), {}
    if caller == "bad-basic":
        return world.couch("alice", "not the password", app=app), {}
    if caller == "forged-bearer":
        return world.couch(None, app=app), {"Authorization": f"Bearer {world.forged}"}
    return world.couch(None, app=app), {}


CASES = [(r, caller) for r in ROWS for caller in CALLERS]


def case_id(case: tuple[Row, str]) -> str:
    r, caller = case
    return f"{r.method} {r.label} as {caller}"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
async def test_route_as_caller(case: tuple[Row, str], world: World) -> None:
    r, caller = case
    refusal = expected(r.access, caller)
    tag = f"{caller}-{next(world.serial)}"
    me = world.couch(ROLE_USERS[caller]) if caller in ROLE_USERS else None
    plan = await r.make(world, Ctx(tag, me))
    couch, extra = caller_couch(world, caller, r.app)
    req = plan.req
    data = (
        req.raw if req.raw is not None else orjson.dumps(req.body) if req.body is not None else None
    )
    world.reached.clear()
    async with couch.client.request(
        r.method, req.url, data=data, headers=couch.headers({**req.headers, **extra})
    ) as resp:
        status, content = resp.status, await resp.read()
    reached = list(world.reached)
    answer = f"{status} {content[:300]!r}"

    handler = [Reached(r.method, canonical(r.path), HANDLERS[r.method, r.path])]
    if refusal is None:
        assert status == r.ok, answer
        assert reached == handler, "not answered by the route's own handler"
    else:
        assert status == refusal, answer
        body = orjson.loads(content)
        assert set(body) == {"error", "reason"} and isinstance(body["reason"], str), body
        assert body["error"] == ("unauthorized" if refusal == 401 else "forbidden"), body
        # 403: the handler's role check; 401: the auth middleware, unless the route is public
        # to the middleware and its handler asks for credentials (then only anonymous gets by)
        if refusal == 403 or (r.handler_checks and caller == "anonymous"):
            assert reached == handler, "refused before the route's handler"
        else:
            assert reached == [], "refused by the handler, not by the auth middleware"
    if plan.done is not None:
        took_effect = await plan.done()
        if refusal is None:
            assert took_effect, "the allowed request took no effect"
        else:
            assert not took_effect, "the refused request changed the database"


def test_every_route_has_a_row() -> None:
    routes = {(method, path) for method, path, _ in ROUTES}
    rows = {(r.method, r.path) for r in ROWS}
    assert routes - rows == set(), "routes without a row in the role matrix"
    assert rows - routes == set(), "rows for routes that are gone"
    labels = [(r.method, r.label) for r in ROWS]
    assert len(labels) == len(set(labels)), "a route has two rows"
