"""Server and database routes: ``/``, ``_all_dbs``, ``_uuids``, ``_session``, db lifecycle."""

from __future__ import annotations

import re

import pytest

from gateway.routes import ROUTES
from tests.helpers import PASSWORD, Couch

PUBLIC = {
    ("GET", "/"),
    ("GET", "/_session"),
    ("POST", "/_session"),
    ("DELETE", "/_session"),
    ("POST", "/api/v1/auth/login"),  # credentials are the body
    ("POST", "/api/v1/auth/refresh"),  # the refresh token is the body
    ("GET", "/api/v1/openapi.json"),  # the API description
    ("GET", "/metrics"),  # public unless GATEWAY_METRICS_PUBLIC=false (then admins only)
    ("GET", "/dashboard"),  # the dashboard's static files hold no data
    ("GET", "/dashboard/{path:.*}"),
}
SAMPLE = {
    "db": "field",
    "docid": "doc",
    "ddoc": "app",
    "attname": "a.txt",
    "localid": "cp",
    "conflict_id": "1",
    "inspection_id": "5f0c2f4e-8a7b-4c1d-9e2f-3a4b5c6d7e8f",
    "template_id": "0b6e7d2a-3c4f-4e5a-9b8c-7d6e5f4a3b2c",
}


def concrete(path: str) -> str:
    """Fill a route pattern's placeholders with sample values."""
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: SAMPLE[m.group(1)], path)


PROTECTED = [
    (method, concrete(path))
    for method, path, _ in ROUTES
    if (method, path) not in PUBLIC and not path.startswith(("/healthz", "/readyz"))
]


async def login(client, name: str, password: str = PASSWORD):
    async with client.post("/_session", json={"name": name, "password": password}) as resp:
        return resp.status, await resp.json(), resp.cookies.get("AuthSession")


async def test_the_welcome_object_needs_no_auth(anon):
    body = await anon.get("/")
    assert body["couchdb"] == "Welcome"
    assert isinstance(body["version"], str) and body["vendor"]["name"]


async def test_health_probes_need_no_auth(anon):
    assert (await anon.get("/healthz"))["status"] == "ok"
    assert (await anon.get("/readyz"))["status"] == "ok"


async def test_all_dbs_lists_databases_sorted(admin, alice):
    for name in ("zeta", "alpha"):
        await admin.put(f"/{name}", expected_status=201)
    assert await alice.get("/_all_dbs") == ["alpha", "inspections", "templates", "zeta"]


async def test_uuids_are_unique_and_counted(alice):
    body = await alice.get("/_uuids?count=5")
    assert len(set(body["uuids"])) == 5
    assert all(re.fullmatch(r"[0-9a-f]{32}", u) for u in body["uuids"])
    assert len((await alice.get("/_uuids"))["uuids"]) == 1
    for count in ("0", "1001", "many"):
        await alice.get(f"/_uuids?count={count}", expected_status=400)


async def test_session_login_sets_a_cookie_that_authenticates(client, anon):
    status, body, cookie = await login(client, "alice")
    assert status == 200 and body["ok"] is True and body["name"] == "alice"
    assert "inspector" in body["roles"]
    assert cookie is not None and cookie["httponly"]
    client.session.cookie_jar.clear()
    headers = {"Cookie": f"AuthSession={cookie.value}"}
    session = await anon.get("/_session", headers=headers)
    assert session["userCtx"]["name"] == "alice"
    assert session["info"]["authenticated"] == "cookie"
    assert isinstance(await anon.get("/_all_dbs", headers=headers), list)


async def test_session_login_accepts_a_form_body(client):
    form = {"name": "manager", "password": PASSWORD}
    async with client.post("/_session", data=form) as resp:
        assert resp.status == 200
        assert (await resp.json())["name"] == "manager"


async def test_a_wrong_password_gets_no_session(client):
    status, body, cookie = await login(client, "alice", "wrong")
    assert status == 401 and body["error"] == "unauthorized"
    assert cookie is None
    status, _, _ = await login(client, "nobody")
    assert status == 401


async def test_login_needs_a_name_and_a_password(anon):
    await anon.post("/_session", {"name": "alice"}, expected_status=400)


async def test_logout_clears_the_cookie(client, anon):
    await login(client, "alice")
    async with client.delete("/_session") as resp:
        assert resp.status == 200
        assert resp.cookies["AuthSession"].value == ""
    session = await anon.get("/_session")
    assert session["userCtx"] == {"name": None, "roles": []}


async def test_a_forged_cookie_is_unauthorized(anon):
    err = await anon.get("/_all_dbs", headers={"Cookie": "AuthSession=forged"}, expected_status=401)
    assert err["error"] == "unauthorized"


async def test_basic_auth_identifies_the_user_in_session(alice):
    session = await alice.get("/_session")
    assert session["userCtx"] == {"name": "alice", "roles": ["inspector"]}


async def test_a_wrong_basic_password_is_unauthorized(client):
    bad = Couch(client, "alice", "wrong")
    err = await bad.get("/_all_dbs", expected_status=401)
    assert err["error"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_every_non_public_route_needs_auth(anon, admin, method, path):
    await admin.put("/field?access_mode=shared", expected_status=201)
    err = await anon.request(method, path, {}, expected_status=401)
    assert err["error"] == "unauthorized"


async def test_only_admins_create_and_delete_databases(admin, manager, alice):
    for user in (manager, alice):
        err = await user.put("/newdb", expected_status=403)
        assert err["error"] == "forbidden"
    assert (await admin.put("/newdb", expected_status=201))["ok"] is True
    for user in (manager, alice):
        await user.delete("/newdb", expected_status=403)
    assert (await admin.delete("/newdb"))["ok"] is True
    await admin.get("/newdb", expected_status=404)


async def test_creating_an_existing_database_is_file_exists(admin, db):
    err = await admin.put(f"/{db}", expected_status=412)
    assert err["error"] == "file_exists"


async def test_invalid_database_names_and_modes_are_refused(admin):
    await admin.put("/Upper", expected_status=400)
    await admin.put("/9lives", expected_status=400)
    await admin.put("/ok?access_mode=open", expected_status=400)
    await admin.put("/ok?conflict_policy=sometimes", expected_status=400)
    for reserved in ("dashboard", "metrics", "healthz", "readyz"):
        await admin.put(f"/{reserved}", expected_status=400)
    assert await admin.get("/_all_dbs") == ["inspections", "templates"]  # made at start-up


async def test_the_rest_databases_exist_from_the_start_with_their_modes(admin):
    assert (await admin.get("/inspections"))["access_mode"] == "owned"
    assert (await admin.get("/templates"))["access_mode"] == "readonly"


async def test_database_info_counts_documents(alice, db):
    rev = (await alice.put(f"/{db}/a", {"v": 1}))["rev"]
    await alice.put(f"/{db}/b", {"v": 1})
    await alice.delete(f"/{db}/a?rev={rev}")
    info = await alice.get(f"/{db}/")
    assert info["db_name"] == db
    assert (info["update_seq"], info["doc_count"], info["doc_del_count"]) == (3, 1, 1)
    assert info["compact_running"] is False
    assert info["instance_start_time"]


async def test_owned_database_counts_are_the_callers_own(admin, alice, bob):
    await admin.put("/private", expected_status=201)
    await alice.put("/private/a1", {})
    await alice.put("/private/a2", {})
    await bob.put("/private/b1", {})
    assert (await bob.get("/private"))["doc_count"] == 1
    assert (await admin.get("/private"))["doc_count"] == 3


async def test_a_missing_database_is_not_found(alice):
    err = await alice.get("/nowhere", expected_status=404)
    assert err["error"] == "not_found"
    await alice.get("/nowhere/doc", expected_status=404)


async def test_deleting_a_database_with_a_rev_is_refused(admin, db):
    await admin.delete(f"/{db}?rev=1-abc", expected_status=400)
    await admin.get(f"/{db}")


async def test_deleting_a_database_deletes_its_documents(admin, db):
    await admin.put(f"/{db}/a", {"v": 1})
    await admin.delete(f"/{db}")
    await admin.put(f"/{db}", expected_status=201)
    await admin.get(f"/{db}/a", expected_status=404)
    assert (await admin.get(f"/{db}"))["update_seq"] == 0


async def test_revs_limit_is_read_and_set_by_staff(manager, alice, db):
    assert await alice.get(f"/{db}/_revs_limit") == 1000
    await alice.request("PUT", f"/{db}/_revs_limit", 5, expected_status=403)
    assert (await manager.request("PUT", f"/{db}/_revs_limit", 5))["ok"] is True
    assert await alice.get(f"/{db}/_revs_limit") == 5
    for bad in ("5", 0, True, [5]):
        await manager.request("PUT", f"/{db}/_revs_limit", bad, expected_status=400)


async def test_revs_limit_bounds_the_stored_history(manager, alice, db):
    await manager.request("PUT", f"/{db}/_revs_limit", 2)
    rev = (await alice.put(f"/{db}/a", {"v": 0}))["rev"]
    for v in range(1, 4):
        rev = (await alice.put(f"/{db}/a", {"_rev": rev, "v": v}))["rev"]
    doc = await alice.get(f"/{db}/a?revs=true")
    assert doc["_revisions"]["start"] == 4 and len(doc["_revisions"]["ids"]) == 2


async def test_compact_drops_old_revision_bodies_and_keeps_the_leaves(manager, alice, db):
    first = (await alice.put(f"/{db}/a", {"v": 1}))["rev"]
    second = (await alice.put(f"/{db}/a", {"_rev": first, "v": 2}))["rev"]
    await alice.post(f"/{db}/_compact", expected_status=403)
    assert (await manager.post(f"/{db}/_compact", expected_status=202))["ok"] is True
    await alice.get(f"/{db}/a?rev={first}", expected_status=404)
    assert (await alice.get(f"/{db}/a?rev={second}"))["v"] == 2
    info = await alice.get(f"/{db}")
    assert info["compact_running"] is False and info["doc_count"] == 1


async def test_security_shows_the_access_mode(admin, alice, db):
    sec = await alice.get(f"/{db}/_security")
    assert sec["access_mode"] == "shared"
    assert "inspector" in sec["members"]["roles"]
    await admin.put("/catalog?access_mode=readonly", expected_status=201)
    sec = await alice.get("/catalog/_security")
    assert sec["access_mode"] == "readonly" and "inspector" not in sec["members"]["roles"]


async def test_ensure_full_commit_reports_the_instance_start_time(alice, db):
    body = await alice.post(f"/{db}/_ensure_full_commit", expected_status=201)
    assert body["ok"] is True
    assert body["instance_start_time"] == (await alice.get(f"/{db}"))["instance_start_time"]


async def test_head_is_answered_wherever_get_is(client, alice, db):
    await alice.put(f"/{db}/a", {"v": 1})
    for path in (f"/{db}", f"/{db}/a"):
        async with client.head(path, headers=alice.headers()) as resp:
            assert resp.status == 200
    async with client.head(f"/{db}/zz", headers=alice.headers()) as resp:
        assert resp.status == 404
