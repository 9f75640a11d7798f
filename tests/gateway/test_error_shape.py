"""One error shape on every route: bad input is a 4xx ``{"error", "reason"}``, never a 500.

The cases are generated from ``gateway.routes.ROUTES``, so a new route is covered (or fails
``test_every_route_with_a_body_is_classified``) as soon as it is added.  After every refused
request the database must be exactly as it was: nothing half-written.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from typing import Any

import orjson
import pytest

from gateway.app import create_app
from gateway.routes import DB, ROUTES
from tests.helpers import Couch, basic

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
LONG_ID = "x" * 1001
# A valid body for every route that reads one; None means the route reads no body.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/_session"): {"name": "admin", "password": "x"},
    ("POST", "/api/v1/auth/login"): {"username": "admin", "password": "x"},
    ("POST", "/api/v1/auth/refresh"): {"refresh_token": "x"},
    ("POST", "/api/v1/auth/logout"): {},
    ("POST", DB): {"v": 1},
    ("POST", DB + "/_changes"): {},
    ("POST", DB + "/_bulk_docs"): {"docs": []},
    ("POST", DB + "/_bulk_get"): {"docs": []},
    ("POST", DB + "/_revs_diff"): {},
    ("POST", DB + "/_all_docs"): {"keys": []},
    ("PUT", DB + "/_revs_limit"): 5,
    ("PUT", DB + "/_conflict_policy"): "merge",
    ("POST", "/api/v1/conflicts/{conflict_id}/resolve"): {"strategy": "merge"},
    ("POST", "/api/v1/inspections"): {"title": "x"},
    ("POST", "/api/v1/sync/batch"): {"operations": []},
    ("POST", "/api/v1/photos/upload-params"): {"inspection_id": SAMPLE["inspection_id"]},
    ("POST", "/api/v1/photos/confirm"): {
        "inspection_id": SAMPLE["inspection_id"],
        "public_id": "inspections/x/y",
    },
    ("POST", "/api/v1/templates"): {"name": "x"},
    ("PATCH", "/api/v1/templates/{template_id}"): {"version": 1, "name": "x"},
    ("PUT", DB + "/_local/{localid}"): {"v": 1},
    ("PUT", DB + "/_design/{ddoc}"): {"v": 1},
    ("PUT", DB + "/{docid}"): {"v": 1},
}
RAW_BODY_ROUTES = {
    ("PUT", DB + "/_design/{ddoc}/{attname:.+}"),
    ("PUT", DB + "/{docid}/{attname:.+}"),
}
NO_JSON_BODY = {("PUT", DB), ("POST", DB + "/_ensure_full_commit"), ("POST", DB + "/_compact")}
NO_JSON_BODY |= RAW_BODY_ROUTES
MALFORMED = {"truncated": b'{"a":', "not-utf8": b"\xff\xfe{}", "deep": b"[" * 5000}
MORE_MALFORMED = {"infinity": b'{"a": 1e400}', "surrogate": b'"\\ud800"', "trailing": b"{}x"}


def fill(pattern: str, **values: str) -> str:
    merged = {**SAMPLE, **values}
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: merged[m.group(1)], pattern)


def case(method, path, body=None, *, raw=None, ctype=None, status=None, label=""):
    """One request: a JSON ``body`` or ``raw`` bytes, and the status it must get (any 4xx: None)."""
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    name = f"{method} {path[:60]}" + (f" [{label}]" if label else "")
    return pytest.param(method, path, data, ctype or "application/json", status, id=name)


def route_cases() -> list:
    cases = []
    for method, pattern, _ in ROUTES:
        body = BODIES.get((method, pattern))
        if "{db" in pattern:
            if (method, pattern) != ("PUT", DB):
                path = fill(pattern, db="nosuchdb")
                cases.append(case(method, path, body, status=404, label="unknown db"))
            cases.append(case(method, fill(pattern, db="Bad$Name"), body, status=400, label="name"))
        for slot in ("docid", "localid", "ddoc"):
            if "{" + slot in pattern:
                bad = {"nul": "a%00b", "long": LONG_ID}
                if slot == "docid":
                    bad["reserved"] = "_reserved"
                for label, value in bad.items():
                    path = fill(pattern, **{slot: value})
                    cases.append(case(method, path, body, status=400, label=label))
        if method in ("GET", "PUT", "DELETE") and ("{docid}" in pattern or "{ddoc}" in pattern):
            for rev in ("bad", "0-abc"):
                path = fill(pattern) + f"?rev={rev}"
                cases.append(case(method, path, body, status=400, label="rev"))
        if "{localid}" in pattern and method != "GET":
            cases.append(case(method, fill(pattern) + "?rev=1-abc", body, status=400, label="rev"))
        if body is not None:
            path = fill(pattern)
            for label, raw in MALFORMED.items():
                cases.append(case(method, path, raw=raw, status=400, label=label))
            if body != 5:
                cases.append(case(method, path, [], status=400, label="list"))
                cases.append(case(method, path, "doc", status=400, label="string"))
            cases.append(case(method, path, body, ctype="image/png", status=415, label="ctype"))
    return cases


SPECIFIC = [
    *(case("PUT", "/field/doc", raw=raw, label=label) for label, raw in MORE_MALFORMED.items()),
    case("PUT", "/field/doc", 1),
    case("PUT", "/field/doc?rev=1-", {"v": 1}),
    case("PUT", "/field/doc", {"v": 1, "_rev": "1-a b"}),
    case("PUT", "/field/doc", {"_deleted": "yes"}),
    case("PUT", "/field/doc", {"_attachments": []}),
    case("PUT", "/field/doc", {"_attachments": {"a": {"data": 5}}}),
    case("PUT", "/field/doc", {"_revisions": {"start": "x", "ids": []}}),
    case("PUT", "/field/doc", {"_id": "other"}),
    case("PUT", "/field/doc?new_edits=maybe", {"v": 1}),
    case("PUT", "/field/doc/_att", raw=b"x", ctype="text/plain"),
    case("PUT", "/field/doc", raw=b"--x--", ctype="multipart/related; boundary=x"),
    case("PUT", "/field/doc", {"v": 1}, ctype="multipart/related"),
    case("POST", "/field", {"_id": "a\u0000b"}),
    case("POST", "/field", {"_id": LONG_ID}),
    case("POST", "/field", {"_id": 5}),
    case("POST", "/field/_bulk_docs", {"docs": "x"}),
    case("POST", "/field/_bulk_docs", {"docs": [], "new_edits": "false"}),
    case("POST", "/field/_bulk_get", {"docs": {"id": "doc"}}),  # a bad *entry* is its own error
    case("POST", "/field/_revs_diff", {"doc": {"x": 1}}),
    case("POST", "/field/_revs_diff", {"doc": ["bad"]}),
    case("POST", "/field/_all_docs", {"keys": {"a": 1}}),
    case("POST", "/field/_changes?filter=_doc_ids", {"doc_ids": 1}),
    case("POST", "/field/_changes?filter=_selector", {"selector": 5}),
    case("PUT", "/field/_revs_limit", "many"),
    case("PUT", "/field/_revs_limit", 0),
    case("PUT", "/field/_local/cp", {"_id": "_local/other"}),
    case("GET", "/field/doc?open_revs=notjson"),
    case("GET", '/field/doc?open_revs=["bad"]'),
    case("GET", "/field/doc?open_revs={}"),
    case("GET", '/field/doc?atts_since="1-a"'),
    case("GET", "/field/doc?revs=maybe"),
    case("GET", "/field/_all_docs?startkey=nojson"),
    case("GET", "/field/_all_docs?key=5"),
    case("GET", "/field/_all_docs?limit=-1"),
    case("GET", "/field/_changes?since=-1"),
    case("GET", "/field/_changes?since=99999999999999999999999"),
    case("GET", "/field/_changes?heartbeat=soon"),
    case("GET", "/field/_changes?timeout=-5"),
    case("GET", "/field/_changes?seq_interval=0"),
    case("GET", "/_uuids?count=x"),
    case("GET", "/a%00b", status=400),
    case("PUT", "/a%00b", status=400),
    case("GET", "/a%00b/doc", status=400),
    case("PATCH", "/field/doc", {"v": 1}, status=405),
    case("GET", "/_nothing_here", status=404),
    case("GET", "/field/_design/", status=404),
]


@pytest.fixture
async def seeded(admin: Couch, db: str) -> dict[str, Any]:
    att = {"a.txt": {"content_type": "text/plain", "data": base64.b64encode(b"hi").decode()}}
    await admin.put(f"/{db}/doc", {"v": 1, "_attachments": att})
    await admin.put(f"/{db}/_design/app", {"v": 1, "_attachments": att})
    await admin.put(f"/{db}/_local/cp", {"seq": 1})
    return await snapshot(admin)


async def snapshot(admin: Couch) -> dict[str, Any]:
    info = await admin.get("/field")
    return {
        "seq": info["update_seq"],
        "counts": (info["doc_count"], info["doc_del_count"], info["revs_limit"]),
        "local": await admin.get("/field/_local/cp"),
        "dbs": await admin.get("/_all_dbs"),
    }


async def call(client, method: str, path: str, data: bytes | None, ctype: str):
    headers = {"Authorization": basic("admin"), "Content-Type": ctype, "Accept": "application/json"}
    async with client.request(method, path, data=data, headers=headers) as resp:
        return resp.status, resp.content_type, await resp.read()


def assert_error_shape(status: int, content_type: str, raw: bytes, expected: int | None) -> None:
    assert 400 <= status < 500, (status, raw[:300])
    if expected is not None:
        assert status == expected, (status, raw[:300])
    assert content_type == "application/json"
    body = orjson.loads(raw)
    assert set(body) == {"error", "reason"}, body
    assert isinstance(body["error"], str) and isinstance(body["reason"], str)


@pytest.mark.parametrize(("method", "path", "data", "ctype", "status"), route_cases() + SPECIFIC)
async def test_bad_input_is_a_4xx_error_object_and_changes_nothing(
    client, seeded, admin, method, path, data, ctype, status
):
    assert_error_shape(*await call(client, method, path, data, ctype), status)
    assert await snapshot(admin) == seeded


def test_every_route_with_a_body_is_classified():
    for method, pattern, _ in ROUTES:
        if method in ("PUT", "POST"):
            assert (method, pattern) in BODIES or (method, pattern) in NO_JSON_BODY, pattern


@pytest.fixture
async def small_client(aiohttp_client, settings, engine, seeded):
    app = create_app(dataclasses.replace(settings, max_request_bytes=1024), migrate=False)
    return await aiohttp_client(app)


OVERSIZE = [
    case(m, fill(p), raw=b" " * 4096 + orjson.dumps(b), status=413, label="oversize")
    for (m, p), b in BODIES.items()
] + [
    case(m, fill(p), raw=b"x" * 4096, ctype="text/plain", status=413, label="oversize")
    for m, p in RAW_BODY_ROUTES
]


@pytest.mark.parametrize(("method", "path", "data", "ctype", "status"), OVERSIZE)
async def test_an_oversize_body_is_413_and_changes_nothing(
    small_client, seeded, admin, method, path, data, ctype, status
):
    assert_error_shape(*await call(small_client, method, path, data, ctype), status)
    assert await snapshot(admin) == seeded


async def test_an_oversize_multipart_body_is_413(small_client, seeded, admin):
    doc = {"_attachments": {"a.txt": {"follows": True, "length": 4096}}}
    parts = [
        b"--b\r\nContent-Type: application/json\r\n\r\n" + orjson.dumps(doc),
        b"--b\r\n\r\n" + b"x" * 4096,
    ]
    body = b"\r\n".join(parts) + b"\r\n--b--\r\n"
    result = await call(small_client, "PUT", "/field/big", body, "multipart/related; boundary=b")
    assert_error_shape(*result, 413)
    assert await snapshot(admin) == seeded


BAD_DOCS = [
    {"_id": "_reserved"},
    {"_id": "a\u0000b"},
    {"_id": LONG_ID},
    {"_id": "doc", "_rev": "bad"},
    {"_id": "x", "_revisions": {"start": 1, "ids": ["a", "b"]}},
    {"_id": "x", "_deleted": 1},
    {"_id": "x", "_attachments": {"a": {"stub": True}}},
    {"_id": "x", "_attachments": {"a": {"data": "aGk=", "digest": "md5-wrong"}}},
    {"_id": "x", "_unknown": 1},
    "not a document",
]


@pytest.mark.parametrize("new_edits", [True, False])
async def test_refused_bulk_docs_rows_have_the_error_shape_and_write_nothing(
    admin, seeded, new_edits
):
    rows = await admin.post(
        "/field/_bulk_docs", {"docs": BAD_DOCS, "new_edits": new_edits}, expected_status=201
    )
    assert len(rows) == len(BAD_DOCS)
    for row in rows:
        assert isinstance(row["error"], str) and isinstance(row["reason"], str), row
    assert await snapshot(admin) == seeded


async def test_a_batch_with_one_bad_document_writes_only_the_good_ones(admin, seeded):
    docs = [{"_id": "good"}, {"_id": "_bad"}]
    rows = await admin.post("/field/_bulk_docs", {"docs": docs}, expected_status=201)
    assert rows[0]["ok"] is True and rows[1]["error"] == "bad_request"
    assert (await snapshot(admin))["seq"] == seeded["seq"] + 1


def nested(depth: int) -> bytes:
    return b'{"v": ' + b"[" * depth + b"]" * depth + b"}"


# Inputs that may be answered or refused, but never with a 500.
EDGES = [
    case("PUT", "/field/deep", raw=nested(300), label="nested 300"),
    case("POST", "/field/_bulk_docs", raw=b'{"docs": [' + nested(300) + b"]}", label="nested"),
    case("PUT", "/field/_local/deep", raw=nested(300), label="nested"),
    case("POST", "/field/_revs_diff", {"a\u0000b": ["1-a"]}),
    case("POST", "/field/_bulk_get", {"docs": [{"id": "a\u0000b"}]}),
    case("POST", "/field/_all_docs", {"keys": ["a\u0000b", LONG_ID]}),
    case("GET", '/field/_all_docs?key="a\\u0000b"'),
    case("GET", '/field/_all_docs?startkey="a\\u0000b"'),
    case("GET", "/field/_all_docs?limit=100000000000000000000"),
    case("GET", "/field/_all_docs?skip=100000000000000000000"),
    case("GET", "/field/_changes?limit=100000000000000000000"),
    case("GET", "/field/_changes?heartbeat=100000000000000000000&timeout=1"),
    case("POST", "/field/_changes?filter=_doc_ids", {"doc_ids": ["a\u0000b"]}),
    case("POST", "/_session", {"name": "a\u0000b", "password": "x"}),
    case("PUT", "/field/doc/a%00b", raw=b"x", ctype="text/plain"),
    case("GET", "/field/doc/a%00b"),
    case("PUT", "/field/doc", {"v": 1, "_attachments": {"a": {"data": "", "revpos": 1e30}}}),
]


@pytest.mark.parametrize(("method", "path", "data", "ctype", "status"), EDGES)
async def test_edge_inputs_never_cause_a_server_error(
    client, seeded, method, path, data, ctype, status
):
    code, content_type, raw = await call(client, method, path, data, ctype)
    assert code < 500, raw[:300]
    if code >= 400:
        assert_error_shape(code, content_type, raw, None)


async def test_a_nul_in_a_basic_auth_name_is_unauthorized_not_an_error(client, seeded):
    headers = {"Authorization": basic("a\u0000b")}
    async with client.get("/_all_dbs", headers=headers) as resp:
        assert_error_shape(resp.status, resp.content_type, await resp.read(), 401)
