"""The input limits at their boundaries, on every route they guard, CouchDB and REST.

- nesting depth (``GATEWAY_MAX_JSON_DEPTH``): a document one level deeper than the limit is
  a 400 on every document route (in its own row of ``_bulk_docs`` and of a sync batch), any
  JSON body or JSON query parameter deeper than the limit is a 400, and JSON nested 1,000 or
  100,000 levels is a 400 too, never a 500;
- request body size (``GATEWAY_MAX_REQUEST_BYTES``): a body of exactly the limit is read,
  one byte more is 413 ``too_large``;
- document size (``GATEWAY_MAX_DOCUMENT_BYTES``): a document of exactly the limit is stored,
  one byte more is 413 ``document_too_large`` (a row error in ``_bulk_docs``, a 413 result
  in a sync batch), through CouchDB and REST alike;
- 10 MB strings and 100,000-element arrays with the default limits: refused or answered,
  never a 500, never a hang.

After every refused request every database is exactly as before (``hostile.db_state``).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.jsonio import nests_deeper
from gateway.settings import Settings, load_settings
from tests.gateway.hostile import (
    DBS,
    INSPECTION,
    assert_row_error,
    assert_sane,
    db_state,
    refused,
    seed,
    send,
    unchanged,
)

TEN_MB = "x" * (10 * 1024 * 1024)
LIMIT = Settings().max_json_depth
HUNDRED_K = 100_000


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    """JSON text of ``depth`` nested arrays around ``leaf``."""
    return b"[" * depth + leaf + b"]" * depth


def doc_with(member: bytes) -> bytes:
    """A document ``{"v": member}`` (``member`` raw JSON text)."""
    return b'{"v":' + member + b"}"


@pytest.fixture
async def seeded(admin: Any, db: str) -> dict[str, Any]:
    return await seed(admin)


# --- nesting depth -----------------------------------------------------------------------


async def test_a_document_at_the_depth_limit_round_trips_and_one_level_more_is_400(client, seeded):
    """A document exactly GATEWAY_MAX_JSON_DEPTH deep is stored and read back (documents and
    _local); one level more is a 400 naming the setting, nothing written."""
    at_limit = nested(LIMIT - 1)  # the document object is the first level
    for method, path in (("PUT", "/field/deep"), ("PUT", "/field/_local/deep")):
        answer = await send(client, method, path, raw=doc_with(at_limit))
        assert answer.status == 201, answer.show()
        assert (await send(client, "GET", path)).json()["v"] == orjson.loads(at_limit)
    before = await db_state(client, *DBS)
    for method, path in (("PUT", "/field/deeper"), ("POST", "/field"), ("PUT", "/field/_local/x")):
        answer = await send(client, method, path, raw=doc_with(nested(LIMIT)))
        await refused(client, before, answer, 400, path)
        assert "GATEWAY_MAX_JSON_DEPTH" in answer.json()["reason"]


async def test_a_too_deep_document_is_refused_in_its_bulk_docs_row_and_the_rest_written(
    client, seeded
):
    """In _bulk_docs (both modes) a too deep document is refused in its own row and the others of
    the batch are written."""
    for new_edits in (True, False):
        rev = b'"_rev":"1-a",' if not new_edits else b""
        good = b'{"_id":"ok' + str(new_edits).encode() + b'",' + rev + b'"v":1}'
        deep = b'{"_id":"deep",' + rev + b'"v":' + nested(LIMIT) + b"}"
        flag = orjson.dumps(new_edits)
        body = b'{"new_edits":' + flag + b',"docs":[' + good + b"," + deep + b"]}"
        before = await db_state(client, "field")
        answer = await send(client, "POST", "/field/_bulk_docs", raw=body)
        assert answer.status == 201, answer.show()
        refusal = answer.json()[-1]
        assert_row_error(refusal, "bad_request")
        assert refusal["id"] == "deep"
        after = await db_state(client, "field")
        assert after["field"]["seq"] == before["field"]["seq"] + 1
        assert "deep" not in [i for i, _ in after["field"]["changes"]]


# JSON bodies of every kind; each must refuse nesting past the limit (400), never a 500.
DEEP_TARGETS = [
    ("PUT", "/field/d", doc_with),
    ("POST", "/field", doc_with),
    ("PUT", "/field/_local/d", doc_with),
    ("POST", "/field/_bulk_get", lambda deep: b'{"docs":' + deep + b"}"),
    ("POST", "/field/_revs_diff", lambda deep: b'{"doc":' + deep + b"}"),
    ("POST", "/field/_all_docs", lambda deep: b'{"keys":' + deep + b"}"),
    ("POST", "/field/_changes?filter=_selector", lambda deep: b'{"selector":{"v":' + deep + b"}}"),
    ("PUT", "/field/_revs_limit", lambda deep: deep),
    ("POST", "/_session", lambda deep: b'{"name":' + deep + b"}"),
    ("POST", "/api/v1/inspections", lambda deep: b'{"site":' + deep + b"}"),
    (
        "PATCH",
        f"/api/v1/inspections/{INSPECTION}",
        lambda deep: b'{"version":1,"site":' + deep + b"}",
    ),
    ("POST", "/api/v1/templates", lambda deep: b'{"name":"t","fields":[{"x":' + deep + b"}]}"),
    (
        "POST",
        "/api/v1/conflicts/1/resolve",
        lambda deep: b'{"strategy":"merge","body":' + deep + b"}",
    ),
    ("POST", "/api/v1/auth/login", lambda deep: b'{"username":' + deep + b"}"),
]


async def test_deep_json_on_every_json_route_is_a_400_and_changes_nothing(client, seeded):
    """Past the limit, at 1,000 levels (under orjson's 1,024) and at 100,000 levels, every JSON
    route answers 400, never 500, and writes nothing."""
    for depth in (LIMIT + 5, 1000, HUNDRED_K):  # past the limit, under orjson's 1024, far past
        for method, path, make in DEEP_TARGETS:
            answer = await send(client, method, path, raw=make(nested(depth)))
            await refused(client, seeded, answer, 400, (method, path, depth))


async def test_deep_json_in_a_batch_operation_is_refused_in_its_result(client, seeded):
    """A too deep operation of a sync batch is a 400 result of its own; the other operations are
    applied."""
    good = {"op": "create", "data": {"title": "fine"}}
    deep = b'{"op":"create","data":{"site":' + nested(LIMIT) + b"}}"
    body = b'{"operations":[' + orjson.dumps(good) + b"," + deep + b"]}"
    answer = await send(client, "POST", "/api/v1/sync/batch", raw=body, user="alice")
    assert answer.status == 207, answer.show()
    first, second = answer.json()["results"]
    assert first["outcome"] == "created" and second["status"] == 400, second
    assert_row_error(second, "bad_request")
    after = await db_state(client, "inspections")
    assert after["inspections"]["seq"] == seeded["inspections"]["seq"] + 1


async def test_deep_json_in_a_query_parameter_is_400(client, seeded):
    """JSON query parameters (selector, keys, startkey, open_revs) are held to the depth limit
    too."""
    deep = quote(nested(LIMIT + 1).decode())
    for path in (
        "/field/_changes?filter=_selector&selector=",
        "/field/_all_docs?keys=",
        "/field/_all_docs?startkey=",
        "/field/doc?open_revs=",
    ):
        await refused(client, seeded, await send(client, "GET", path + deep), 400, path)


def depth(value: Any) -> int:
    """The nesting depth, by definition (recursively)."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


# Strings and keys full of what the measure reads: brackets, quotes, commas, line breaks.
TRICKY = st.text(alphabet='[]{}"\\\n:, ab', max_size=6)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY, inner, max_size=3),
    max_leaves=40,
)


@hypothesis_settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(value=JSON_VALUES, limit=st.integers(1, 9))
def test_the_depth_measure_agrees_with_the_definition(value, limit):
    """The fast depth measure (orjson's indented output) equals the recursive definition, for
    values whose strings and keys are full of brackets, quotes and line breaks."""
    assert nests_deeper(value, limit) == (depth(value) > limit)


def test_the_depth_limit_is_read_from_the_environment_and_bounded():
    """GATEWAY_MAX_JSON_DEPTH is read from the environment and refused outside 1..200."""
    assert load_settings({"GATEWAY_MAX_JSON_DEPTH": "64"}, dotenv_path="").max_json_depth == 64
    for bad in ("0", "201", "deep"):
        with pytest.raises(SystemExit):
            load_settings({"GATEWAY_MAX_JSON_DEPTH": bad}, dotenv_path="")


async def test_the_depth_limit_is_configurable(aiohttp_client, settings, engine, admin, db):
    """The configured depth is the one enforced, with the limit in the reason."""
    small = await aiohttp_client(
        create_app(dataclasses.replace(settings, max_json_depth=3), migrate=False)
    )
    ok = await send(small, "PUT", "/field/three", {"a": {"b": [1]}})
    assert ok.status == 201, ok.show()
    before = await db_state(small, "field")
    too_deep = await send(small, "PUT", "/field/four", {"a": {"b": [[1]]}})
    await refused(small, before, too_deep, 400)
    assert "3 levels" in too_deep.json()["reason"]


# --- size limits -------------------------------------------------------------------------


@pytest.fixture
async def limited(aiohttp_client, settings, engine, admin, db) -> Any:
    """An app with a 4 KiB request limit and a 1000-byte document limit."""
    app = create_app(
        dataclasses.replace(settings, max_request_bytes=4096, max_document_bytes=1000),
        migrate=False,
    )
    return await aiohttp_client(app)


def body_of_size(size: int) -> dict[str, str]:
    """A document whose stored form (``{"v":"..."}``) is exactly ``size`` bytes."""
    return {"v": "x" * (size - len(b'{"v":""}'))}


async def test_a_body_at_the_request_limit_is_read_and_one_byte_more_is_413(limited):
    """A body of exactly GATEWAY_MAX_REQUEST_BYTES is read; one byte more is 413 too_large
    (CouchDB and REST), nothing written."""
    doc = orjson.dumps({"v": "x"})
    exact = doc[:-1] + b" " * (4096 - len(doc)) + b"}"
    assert len(exact) == 4096
    answer = await send(limited, "PUT", "/field/exact", raw=exact)
    assert answer.status == 201, answer.show()
    before = await db_state(limited, *DBS)
    for method, path in (("PUT", "/field/over"), ("POST", "/api/v1/sync/batch")):
        over = await send(limited, method, path, raw=exact[:-1] + b" }", user="alice")
        await refused(limited, before, over, 413, path)
        assert over.json()["error"] == "too_large"


async def test_a_document_at_the_size_limit_is_stored_and_one_byte_more_is_413(limited):
    """A document of exactly GATEWAY_MAX_DOCUMENT_BYTES (as stored) is stored; one byte more is
    413 document_too_large by PUT, POST and multipart, nothing written."""
    answer = await send(limited, "PUT", "/field/exact", body_of_size(1000))
    assert answer.status == 201, answer.show()
    before = await db_state(limited, *DBS)
    for method, path in (("PUT", "/field/over"), ("POST", "/field")):
        over = await send(limited, method, path, body_of_size(1001))
        await refused(limited, before, over, 413, path)
        assert over.json()["error"] == "document_too_large"
        assert "GATEWAY_MAX_DOCUMENT_BYTES" in over.json()["reason"]
    doc = {**body_of_size(1001), "_attachments": {"a.txt": {"follows": True, "length": 2}}}
    multipart = (
        b"--b\r\nContent-Type: application/json\r\n\r\n"
        + orjson.dumps(doc)
        + b"\r\n--b\r\n\r\nhi\r\n--b--\r\n"
    )
    ctype = "multipart/related; boundary=b"
    answer = await send(limited, "PUT", "/field/mp", raw=multipart, ctype=ctype)
    await refused(limited, before, answer, 413, "multipart")


async def test_a_too_large_document_is_refused_in_its_bulk_docs_row(limited):
    """In _bulk_docs (both modes) a too large document is a document_too_large row; the others are
    written."""
    for new_edits in (True, False):
        before = await db_state(limited, "field")
        docs = [{"_id": f"small{new_edits}", "v": 1}, {"_id": "big", **body_of_size(1001)}]
        if not new_edits:
            docs = [{**d, "_rev": "1-a"} for d in docs]
        body = {"docs": docs, "new_edits": new_edits}
        answer = await send(limited, "POST", "/field/_bulk_docs", body)
        assert answer.status == 201, answer.show()
        [big] = [r for r in answer.json() if r.get("id") == "big"]
        assert_row_error(big, "document_too_large")
        after = await db_state(limited, "field")
        assert after["field"]["seq"] == before["field"]["seq"] + 1
        assert "big" not in [i for i, _ in after["field"]["changes"]]


async def test_rest_documents_are_held_to_the_document_limit(limited):
    """REST creates, updates, templates and batch operations are held to the same document limit
    (413 document_too_large), nothing written but the batch's other operations."""
    before = await db_state(limited, *DBS)
    big = {"responses": {"q": "x" * 1200}}
    create = await send(limited, "POST", "/api/v1/inspections", big, user="alice")
    await refused(limited, before, create, 413, "create")
    assert create.json()["error"] == "document_too_large"
    description = {"name": "t", "description": "x" * 1200}
    template = await send(limited, "POST", "/api/v1/templates", description)
    await refused(limited, before, template, 413, "template")
    ops = [{"op": "create", "data": {"title": "small"}}, {"op": "create", "data": big}]
    batch = await send(limited, "POST", "/api/v1/sync/batch", {"operations": ops}, user="alice")
    assert batch.status == 207, batch.show()
    small_result, big_result = batch.json()["results"]
    assert small_result["outcome"] == "created"
    assert big_result["status"] == 413 and big_result["error"] == "document_too_large"
    after = await db_state(limited, *DBS)
    assert after["inspections"]["seq"] == before["inspections"]["seq"] + 1
    path = f"/api/v1/inspections/{small_result['id']}"
    patch = await send(limited, "PATCH", path, {"version": 1, **big}, user="alice")
    await refused(limited, after, patch, 413, "patch")


# 10 MB strings with the default limits: too large as a document, too long as an id or key.
TEN_MB_CASES = [
    ("PUT", "/field/big", {"v": TEN_MB}, 413),
    ("PUT", "/field/_local/big", {"v": TEN_MB}, 413),
    ("POST", "/field", {"_id": TEN_MB}, 400),
    ("POST", "/field/_bulk_docs", {"docs": [{"_id": "big", "v": TEN_MB}]}, 201),
    ("POST", "/field/_revs_diff", {TEN_MB: ["1-a"]}, 200),
    ("POST", "/field/_bulk_get", {"docs": [{"id": TEN_MB}]}, 200),
    ("POST", "/field/_all_docs", {"keys": [TEN_MB]}, 200),
    ("POST", "/api/v1/inspections", {"title": TEN_MB}, 413),
    ("POST", "/api/v1/inspections", {"responses": {"q": TEN_MB}}, 413),
    (
        "POST",
        "/api/v1/sync/batch",
        {"operations": [{"op": "create", "data": {"site": TEN_MB}}]},
        207,
    ),
    ("POST", "/api/v1/auth/login", {"username": TEN_MB, "password": "x"}, 401),
]


async def test_ten_megabyte_strings_are_refused_or_harmless(client, seeded):
    """10 MB strings with the default limits: a document too large (413), an id or key too long
    (400 or a not-found row), a login refused (401); never a 500, nothing written."""
    for method, path, body, status in TEN_MB_CASES:
        user = "alice" if "/api/" in path else "admin"
        answer = await send(client, method, path, body, user=user)
        assert answer.status == status, (path, answer.show())
        assert_sane(answer, path)
        if path.endswith("_bulk_docs"):
            assert_row_error(answer.json()[0], "document_too_large")
        elif path.endswith("/batch"):
            assert answer.json()["results"][0]["error"] == "document_too_large"
        await unchanged(client, seeded, path)
    assert (await send(client, "GET", "/field/_local/cp")).json()["seq"] == 1


# --- 100,000-element arrays --------------------------------------------------------------


async def test_a_document_with_a_100k_element_array_round_trips(client, seeded):
    """A document holding a 100,000-element array is stored and read back whole."""
    values = list(range(HUNDRED_K))
    answer = await send(client, "PUT", "/field/wide", {"v": values})
    assert answer.status == 201, answer.show()
    assert (await send(client, "GET", "/field/wide")).json()["v"] == values


# Where the gateway takes a list of ids, revisions or operations: answered in bounded time
# (the per-request deadline) or refused, and nothing written.
WIDE_CASES = [
    ("/field/_bulk_docs", {"docs": [{"v": i} for i in range(HUNDRED_K)]}, 400),
    ("/field/_all_docs", {"keys": [f"k{i}" for i in range(HUNDRED_K)]}, 200),
    ("/field/_revs_diff", {"doc": [f"{i + 1}-a" for i in range(HUNDRED_K)]}, 200),
    ("/field/_revs_diff", {f"k{i}": ["1-a"] for i in range(HUNDRED_K)}, 200),
    ("/field/_bulk_get", {"docs": [{"id": f"k{i}"} for i in range(HUNDRED_K)]}, 200),
    ("/field/_changes?filter=_doc_ids", {"doc_ids": [f"k{i}" for i in range(HUNDRED_K)]}, 200),
    ("/api/v1/sync/batch", {"operations": [{"op": "create"}] * HUNDRED_K}, 413),
]


async def test_100k_element_arrays_are_answered_or_refused_and_write_nothing(client, seeded):
    """100,000 ids, revisions, keys or operations are answered within the request deadline or
    refused (too many documents or operations), and nothing is written."""
    for path, body, status in WIDE_CASES:
        answer = await send(
            client, "POST", path, body, user="alice" if "/api/" in path else "admin"
        )
        assert answer.status == status, (path, answer.show())
        assert_sane(answer, path)
        await unchanged(client, seeded, path)
    revs_diff = (await send(client, "POST", *WIDE_CASES[2][:2])).json()
    assert len(revs_diff["doc"]["missing"]) == HUNDRED_K


async def test_a_revision_path_of_100k_ids_is_stemmed_to_revs_limit(client, seeded):
    """A replicated revision path of 100,000 ids is accepted and stored stemmed to revs_limit
    (1,000)."""
    ids = [f"r{i}" for i in range(HUNDRED_K)]
    doc = {"_id": "long", "_revisions": {"start": HUNDRED_K, "ids": ids}, "v": 1}
    answer = await send(client, "POST", "/field/_bulk_docs", {"docs": [doc], "new_edits": False})
    assert answer.status == 201 and answer.json() == [], answer.show()
    got = (await send(client, "GET", "/field/long?revs=true")).json()
    assert got["_rev"] == f"{HUNDRED_K}-r0"
    assert got["_revisions"] == {"start": HUNDRED_K, "ids": ids[:1000]}
