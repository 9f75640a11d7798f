"""A corpus of known nasty inputs, each sent to the routes where it matters, CouchDB and REST.

Huge numbers, invalid UTF-8 and lone surrogates (raw bytes, JSON escapes, URL escapes), NUL
bytes, duplicate keys, ``_revisions`` inconsistent with ``_rev``, revision paths longer than
``revs_limit``, attachment digests that do not match, ids with ``/``, ``%2F`` and ``..``, and
Unicode normalization twins.  Every answer is a success or a 4xx with a CouchDB-shaped body
(never a 500, never a hang: each request has a deadline), a refused request changes nothing
(every database's seq, counts and changes feed are compared), and what is accepted is read
back exactly as sent.  The limits (depth, sizes) are in ``test_input_limits.py``.
"""

from __future__ import annotations

import asyncio
import base64
import math
import unicodedata
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from replication import md5_digest
from tests.gateway.hostile import (
    DBS,
    assert_error,
    assert_row_error,
    assert_sane,
    db_state,
    refused,
    seed,
    send,
    unchanged,
)
from tests.helpers import basic


@pytest.fixture
async def seeded(admin: Any, db: str) -> dict[str, Any]:
    return await seed(admin)


async def created(client: Any, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    """Send a write that must succeed; return its JSON answer."""
    answer = await send(client, method, path, body, **kw)
    assert answer.status in (200, 201, 207), answer.show()
    return answer.json()


async def inspection(client: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Create an inspection as alice and read it back."""
    made = await created(client, "POST", "/api/v1/inspections", data, user="alice")
    answer = await send(client, "GET", f"/api/v1/inspections/{made['id']}", user="alice")
    return answer.json()


# --- huge numbers ------------------------------------------------------------------------

# JSON number text -> what it reads as (None: not a number the gateway can hold, 400).
# Integers beyond 64 bits read as doubles, as JavaScript (PouchDB) reads them.
NUMBERS: dict[bytes, Any] = {
    b"1e400": None,
    b"-1e400": None,
    b"1e-400": 0.0,
    b"18446744073709551616": float(2**64),
    b"18446744073709551615": 2**64 - 1,
    b"-9223372036854775808": -(2**63),
    b"-0": 0,
    b"-0.0": -0.0,
    b"1" + b"0" * 99: 1e99,
    b"1.7976931348623157e308": 1.7976931348623157e308,
    b"NaN": None,
    b"Infinity": None,
}


async def test_a_huge_number_is_stored_as_read_or_refused_with_400(client, seeded):
    """A number beyond a double (or NaN/Infinity) is a 400 on every document route, REST included,
    and writes nothing; any other number, 2**64 and 100-digit integers included, is stored and
    read back as orjson (and JavaScript) reads it, -0.0 keeping its sign."""
    for index, (text, expected) in enumerate(NUMBERS.items()):
        name = f"n{index}"
        targets = [
            ("PUT", f"/field/{name}", "admin", b'{"v":' + text + b"}"),
            ("POST", "/field", "admin", b'{"_id":"b' + name.encode() + b'","v":' + text + b"}"),
            ("PUT", f"/field/_local/{name}", "admin", b'{"v":' + text + b"}"),
            ("PUT", f"/field/_local/seq{index}", "admin", b'{"last_seq":' + text + b"}"),
            ("POST", "/api/v1/inspections", "alice", b'{"responses":{"v":' + text + b"}}"),
        ]
        before = await db_state(client, *DBS)
        answers = [await send(client, m, p, raw=raw, user=u) for m, p, u, raw in targets]
        if expected is None:
            for answer in answers:
                assert_error(answer, 400, case=text)
            await unchanged(client, before, text)
            continue
        for answer in answers:
            assert answer.status == 201, (text, answer.show())
        rest = answers[-1].json()["id"]
        stored = [
            (await send(client, "GET", f"/field/{name}")).json()["v"],
            (await send(client, "GET", f"/field/b{name}")).json()["v"],
            (await send(client, "GET", f"/field/_local/{name}")).json()["v"],
            (await send(client, "GET", f"/api/v1/inspections/{rest}", user="alice")).json(),
        ]
        stored[-1] = stored[-1]["responses"]["v"]
        for value in stored:
            assert value == expected and type(value) is type(expected), (text, value)
            if isinstance(expected, float):
                assert math.copysign(1, value) == math.copysign(1, expected), (text, value)


# Numbers where the protocol wants a small integer or a boolean: refused, nothing written.
PROTOCOL_NUMBERS = [
    ("PUT", "/field/r?new_edits=false", {"_revisions": {"start": 2**64, "ids": ["a"]}}),
    ("PUT", "/field/r?new_edits=false", {"_revisions": {"start": 10**15, "ids": ["a"]}}),
    ("PUT", "/field/r?new_edits=false", {"_revisions": {"start": 1.0, "ids": ["a"]}}),
    ("PUT", "/field/r?new_edits=false", {"_revisions": {"start": True, "ids": ["a"]}}),
    ("PUT", "/field/r?new_edits=false", {"_revisions": {"start": -0, "ids": ["a"]}}),
    ("PUT", "/field/r", {"_rev": "18446744073709551616-a"}),
    ("PUT", "/field/a", {"_attachments": {"a": {"stub": True, "length": 2**64}}}),
    ("PUT", "/field/a", {"_attachments": {"a": {"stub": True, "length": -1}}}),
    ("PUT", "/field/a", {"_attachments": {"a": {"data": "aGk=", "revpos": 1.5}}}),
    ("POST", "/field/_bulk_docs", {"docs": [{"v": 1}], "new_edits": 0}),
    ("PUT", "/field/_revs_limit", 2**64),
    ("PUT", "/field/_revs_limit", 2**63),
    ("PUT", "/field/_revs_limit", 0),
    ("PUT", "/field/_revs_limit", 1.5),
    ("PUT", "/field/_revs_limit", -(2**63)),
    ("POST", "/field/_changes", {"since": 2**64}),
    ("POST", "/field/_changes", {"since": -1}),
]


async def test_huge_numbers_in_protocol_fields_are_400(client, seeded):
    """Huge, negative, fractional or boolean numbers where the protocol wants a generation, a
    length, a revs_limit, a seq or a flag are 400s that write nothing."""
    for method, path, body in PROTOCOL_NUMBERS:
        answer = await send(client, method, path, body)
        await refused(client, seeded, answer, 400, body)


BIG_INTS = ["9223372036854775808", "18446744073709551616", "1" + "0" * 99, "-1", "1e3", "0x10"]
# Every integer query parameter (and a few ids) the routes read.
INT_PARAMS = [
    "/field/_changes?since={}",
    "/field/_changes?limit={}",
    "/field/_changes?seq_interval={}",
    "/field/_changes?feed=longpoll&timeout=1&heartbeat={}",
    "/field/_all_docs?skip={}",
    "/field/_all_docs?limit={}",
    "/_uuids?count={}",
    "/_db_updates?since={}",
    "/api/v1/inspections?limit={}",
    "/api/v1/sync/changes?since={}",
    "/api/v1/sync/changes?limit={}",
    "/api/v1/activity?limit={}",
    "/api/v1/activity/stats?minutes={}",
    "/api/v1/conflicts?limit={}",
    "/api/v1/conflicts/{}",
    "/api/v1/templates?limit={}",
]


async def test_huge_integers_in_query_parameters_are_answered_or_refused(client, seeded):
    """Integers beyond 64 bits, negative, exponent or hex in every integer query parameter: never
    a 500 (a 64-bit column or LIMIT would overflow), never a write."""
    for pattern in INT_PARAMS:
        for value in BIG_INTS:
            path = pattern.format(value)
            assert_sane(await send(client, "GET", path, encoded=True), path)
    await unchanged(client, seeded)


async def test_huge_or_odd_rest_versions_never_break_the_api(client, seeded):
    """None of these names the inspection's version (1): each is refused, or a stale version
    (409, which opens a ConflictRecord by design), and no revision is written."""
    made = await created(client, "POST", "/api/v1/inspections", {"title": "t"}, user="alice")
    before = await db_state(client, "inspections")
    path = f"/api/v1/inspections/{made['id']}"
    for version in (2**64, 10**99, -1, 0, 1.5, "1e3", True, None):
        operation = {"op": "update", "id": made["id"], "version": version}
        answers = [
            await send(client, "PATCH", path, {"version": version, "title": "u"}, user="alice"),
            await send(client, "DELETE", path + "?version=" + quote(str(version)), user="alice"),
            await send(
                client, "POST", "/api/v1/sync/batch", {"operations": [operation]}, user="alice"
            ),
        ]
        for answer in answers:
            assert_sane(answer, version)
            assert answer.status not in (200, 201), (version, answer.show())
        for result in answers[-1].json()["results"]:
            assert result["status"] >= 400, (version, result)
    after = await db_state(client, "inspections")
    assert after["inspections"]["seq"] == before["inspections"]["seq"]


async def test_a_checkpoint_with_a_huge_seq_is_stored_as_sent(client, seeded):
    """A checkpoint whose last_seq does not fit the registry's 64-bit column is stored as sent (it
    records no seq) instead of failing with a 500, and the registry still lists."""
    seqs = ("99999999999999999999999-x", "9223372036854775808", "0-x", 2**63, -(2**63))
    for index, last_seq in enumerate(seqs):
        path = f"/field/_local/seq{index}"
        await created(client, "PUT", path, {"last_seq": last_seq})
        got = (await send(client, "GET", path)).json()
        assert got["last_seq"] == last_seq
        listed = await send(client, "GET", "/api/v1/checkpoints?db=field")
        assert listed.status == 200, (last_seq, listed.show())


async def test_huge_or_odd_checkpoint_revisions_are_refused(client, seeded):
    """``_local`` revisions are ``0-N`` with N a 32-bit counter: anything past it is a stale
    revision (409), anything else malformed (400)."""
    for rev, status in (("0-99999999999999999999", 409), ("0-2147483648", 409), ("0-\u00b2", 400)):
        for method in ("PUT", "DELETE"):
            answer = await send(client, method, f"/field/_local/cp?rev={quote(rev)}", {"seq": 2})
            await refused(client, seeded, answer, status, (method, rev))
    assert (await send(client, "GET", "/field/_local/cp")).json()["seq"] == 1


async def test_huge_checkpoint_seqs_are_refused(client, seeded):
    """Rewinding checkpoints to a seq beyond 64 bits, negative or not an integer is a 400 and
    rewinds nothing."""
    for to_seq in ("18446744073709551616", "9223372036854775808", "-1", "1e400"):
        path = f"/api/v1/checkpoints?user=admin&to_seq={to_seq}"
        await refused(client, seeded, await send(client, "DELETE", path), 400)
    assert (await send(client, "GET", "/field/_local/cp")).json()["seq"] == 1


# --- invalid UTF-8 and lone surrogates ---------------------------------------------------

# Inside a JSON string: raw bytes that are not UTF-8, and escapes of lone surrogates.
BAD_TEXT = [
    b"\xff",
    b"\xc0\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate (CESU-8)
    b"\xe2\x82",  # truncated
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\\ud800",
    b"\\udfff",
    b"\\ud800\\u0041",
    b"\\udc00\\ud800",  # a pair in the wrong order
]
# (method, path, user, template): the bad text goes where {} is, as a value, a key or an id.
TEXT_TARGETS = [
    ("PUT", "/field/t", "admin", b'{"v":"a{}b"}'),
    ("PUT", "/field/t", "admin", b'{"a{}b":1}'),
    ("POST", "/field", "admin", b'{"_id":"a{}b"}'),
    ("POST", "/field/_bulk_docs", "admin", b'{"docs":[{"_id":"t","v":"{}"}]}'),
    (
        "POST",
        "/field/_bulk_docs",
        "admin",
        b'{"new_edits":false,"docs":[{"_id":"{}","_rev":"1-a"}]}',
    ),
    ("PUT", "/field/_local/t", "admin", b'{"v":"{}"}'),
    ("POST", "/field/_revs_diff", "admin", b'{"a{}":["1-a"]}'),
    ("POST", "/field/_all_docs", "admin", b'{"keys":["{}"]}'),
    ("POST", "/field/_bulk_get", "admin", b'{"docs":[{"id":"{}"}]}'),
    ("POST", "/field/_changes?filter=_selector", "admin", b'{"selector":{"v":"{}"}}'),
    ("POST", "/api/v1/inspections", "alice", b'{"title":"{}"}'),
    (
        "POST",
        "/api/v1/sync/batch",
        "alice",
        b'{"operations":[{"op":"create","data":{"title":"{}"}}]}',
    ),
    ("POST", "/api/v1/templates", "admin", b'{"name":"{}"}'),
    ("POST", "/api/v1/auth/login", None, b'{"username":"{}","password":"x"}'),
    ("POST", "/_session", None, b'{"name":"{}","password":"x"}'),
]


async def test_invalid_utf8_and_lone_surrogates_in_json_are_400(client, seeded):
    """Bytes that are not UTF-8 and escapes of lone surrogates, as a value, a key or an id, on
    every JSON route (CouchDB, REST, auth): 400, nothing written."""
    for method, path, user, template in TEXT_TARGETS:
        for bad in BAD_TEXT:
            raw = template.replace(b"{}", bad)
            answer = await send(client, method, path, raw=raw, user=user)
            assert_error(answer, 400, case=raw)
    await unchanged(client, seeded)


async def test_a_surrogate_pair_escape_is_one_character_and_round_trips(client, seeded):
    """A valid surrogate pair escape is one astral character, in ids and values, stored as its
    UTF-8."""
    raw = b'{"_id":"smile\\ud83d\\ude00","v":"\\ud83d\\ude00"}'
    made = await created(client, "POST", "/field", raw=raw)
    assert made["id"] == "smile\U0001f600"
    got = await send(client, "GET", "/field/" + quote(made["id"]))
    assert got.json()["v"] == "\U0001f600"
    assert "\U0001f600".encode() in got.raw


# Percent-escapes that are not UTF-8, in every part of a URL that names something.
BAD_URLS = [
    "/field/%FF",
    "/field/%ED%A0%80",
    "/field/%C0%AF",
    "/field/a%E2%82",
    "/field/doc/%FF",
    "/field/_local/%FF",
    "/field/_design/%FF",
    "/%FF",
    "/field/_all_docs?key=%22%FF%22",
    "/field/_changes?since=%FF",
    "/field/doc?rev=1-%FF",
    "/api/v1/templates/%FF",
    "/api/v1/inspections?status=%ED%A0%80",
]


async def test_percent_escapes_that_are_not_utf8_are_400(client, seeded):
    """A URL whose percent-escapes are not UTF-8 (in a db name, a doc id, an attachment, a _local
    id, a query) is a 400: not silently the id "%FF" that /db/%25FF also names."""
    for path in BAD_URLS:
        for method in ("GET", "PUT", "DELETE"):
            answer = await send(client, method, path, {"v": 1}, encoded=True)
            assert_error(answer, 400, case=(method, path))
            assert "UTF-8" in answer.json()["reason"]
    await unchanged(client, seeded)


async def test_malformed_http_is_refused_by_the_http_parser(client, seeded):
    """Not valid HTTP/1.1 (raw non-ASCII or NUL bytes in the request line, a request line or
    a header over 8,190 bytes): aiohttp's parser answers 400 (plain text) before the
    application sees the request, so nothing can be written."""
    auth = b"Authorization: " + basic("admin").encode()
    requests = [
        b"PUT /field/\xff HTTP/1.1\r\n" + auth,
        b"PUT /field/a\x00b HTTP/1.1\r\n" + auth,
        b"PUT /field/" + b"a" * 9000 + b" HTTP/1.1\r\n" + auth,
        b"PUT /field/long HTTP/1.1\r\n" + auth + b"\r\nX-Long: " + b"a" * 9000,
    ]
    for head in requests:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        tail = b"\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        writer.write(head + tail)
        await writer.drain()
        status_line = (await asyncio.wait_for(reader.read(), 30)).split(b"\r\n", 1)[0]
        writer.close()
        assert status_line.split()[1] == b"400", status_line
    await unchanged(client, seeded)


async def test_headers_that_are_not_utf8_are_refused_or_ignored(client, seeded):
    """Basic credentials that are not UTF-8 are a 401, an Idempotency-Key that is not ASCII a 400
    (both writing nothing); a device id or request id that is not printable ASCII is ignored."""
    bad_basic = "Basic " + base64.b64encode(b"\xff\xfe:\xed\xa0\x80").decode()
    answer = await send(
        client, "PUT", "/field/h", {"v": 1}, user=None, headers={"Authorization": bad_basic}
    )
    await refused(client, seeded, answer, 401)
    bad_key = {"Idempotency-Key": "k\u00ff"}
    answer = await send(client, "POST", "/api/v1/inspections", {}, user="alice", headers=bad_key)
    await refused(client, seeded, answer, 400)
    odd = {"X-Device-Id": "\u00ff\u00fe", "X-Request-Id": "\u00ff"}
    made = await created(client, "PUT", "/field/h", {"v": 1}, headers=odd)
    assert made["id"] == "h"


# --- NUL bytes ---------------------------------------------------------------------------

NUL_KEY = "a\u0000b"
NUL_VALUE = "x\u0000y"


async def test_nul_in_ids_is_400_on_every_route_that_takes_an_id(client, seeded):
    """NUL in a document, _local, attachment or template id, from the URL or the body, is a 400 (a
    row error in _bulk_docs), nothing written."""
    answers = [
        await send(client, "PUT", "/field/a%00b", {"v": 1}),
        await send(client, "PUT", "/field/_local/a%00b", {"v": 1}),
        await send(client, "PUT", "/field/doc/a%00b?rev=1-a", raw=b"x", ctype="text/plain"),
        await send(client, "POST", "/field", {"_id": NUL_KEY}),
        await send(client, "PUT", "/api/v1/templates/a%00b", {"name": "t"}),
        await send(client, "PUT", "/field/d", {"_attachments": {NUL_KEY: {"data": "aGk="}}}),
    ]
    for answer in answers:
        assert_error(answer)
    rows = await created(client, "POST", "/field/_bulk_docs", {"docs": [{"_id": NUL_KEY}]})
    assert_row_error(rows[0], "bad_request")
    await unchanged(client, seeded)


async def test_nul_in_member_names_and_values_round_trips(client, seeded):
    """NUL in member names and values is data: stored and read back exactly, through PUT,
    replication and _local, and matched by a selector."""
    body = {NUL_KEY: NUL_VALUE, "list": [NUL_VALUE]}
    await created(client, "PUT", "/field/nul", body)
    replicated = {"_id": "nul2", "_rev": "1-a", **body}
    await created(client, "POST", "/field/_bulk_docs", {"docs": [replicated], "new_edits": False})
    await created(client, "PUT", "/field/_local/nul", body)
    for path in ("/field/nul", "/field/nul2", "/field/_local/nul"):
        got = (await send(client, "GET", path)).json()
        assert {k: got[k] for k in body} == body
    found = await send(client, "POST", "/field/_changes?filter=_selector", {"selector": body})
    assert [r["id"] for r in found.json()["results"]] == ["nul", "nul2"]


async def test_nul_in_rest_fields_round_trips_or_is_refused(client, seeded):
    """The REST fields are copied into SQL columns (an index): text there cannot hold NUL on
    PostgreSQL, so they must be refused or stored without breaking the write."""
    data = {"title": NUL_VALUE, "template_id": NUL_VALUE, "responses": {NUL_KEY: NUL_VALUE}}
    answer = await send(client, "POST", "/api/v1/inspections", data, user="alice")
    assert_sane(answer)
    if answer.status == 201:
        got = (
            await send(client, "GET", f"/api/v1/inspections/{answer.json()['id']}", user="alice")
        ).json()
        assert {k: got[k] for k in data} == data
    listed = await send(client, "GET", "/api/v1/inspections?template_id=x", user="alice")
    assert listed.status == 200, listed.show()
    replicated = {"_id": "insp", "_rev": "1-a", "template_id": NUL_VALUE, "status": NUL_VALUE}
    rows = await send(
        client, "POST", "/inspections/_bulk_docs", {"docs": [replicated], "new_edits": False}
    )
    assert_sane(rows)
    template = await send(
        client, "POST", "/api/v1/templates", {"name": NUL_VALUE, "description": NUL_VALUE}
    )
    assert_sane(template)
    if template.status == 201:
        got = await send(client, "GET", f"/api/v1/templates/{template.json()['id']}")
        assert got.json()["name"] == NUL_VALUE


async def test_an_attachment_content_type_with_nul_is_stored_and_served_safely(client, seeded):
    """A content_type with NUL and CR/LF is kept in the stub but never becomes a header (the bytes
    are served as application/octet-stream)."""
    att = {"a.txt": {"content_type": "text/plain\u0000\r\nX-Evil: 1", "data": "aGk="}}
    await created(client, "PUT", "/field/att", {"_attachments": att})
    served = await send(client, "GET", "/field/att/a.txt")
    assert served.status == 200 and served.raw == b"hi"
    assert served.content_type == "application/octet-stream"
    stub = (await send(client, "GET", "/field/att")).json()["_attachments"]["a.txt"]
    assert stub["content_type"] == att["a.txt"]["content_type"]


# --- duplicate keys ----------------------------------------------------------------------


async def test_duplicate_keys_keep_the_last_value_everywhere(client, seeded):
    """Of duplicate keys the last wins (documents, _id, _revs_diff, REST), once, and the revision
    is the one of the deduplicated body."""
    dup = await created(client, "PUT", "/field/dup", raw=b'{"v":1,"v":2,"w":[1],"w":"last"}')
    plain = await created(client, "PUT", "/field/plain", {"v": 2, "w": "last"})
    got = await send(client, "GET", "/field/dup")
    assert got.json() == {"_id": "dup", "_rev": dup["rev"], "v": 2, "w": "last"}
    assert got.raw.count(b'"v"') == 1
    assert dup["rev"] == plain["rev"]  # the same body, so the same deterministic revision
    rows = await created(
        client, "POST", "/field/_bulk_docs", raw=b'{"docs":[{"_id":"x","_id":"y"}]}'
    )
    assert [r["id"] for r in rows] == ["y"]
    diff = await send(client, "POST", "/field/_revs_diff", raw=b'{"y":["9-a"],"y":["1-z"]}')
    assert diff.json() == {"y": {"missing": ["1-z"]}}
    made = await inspection(client, orjson.loads(b'{"title":"first"}'))
    raw = b'{"title":"first","title":"second"}'
    again = await created(client, "POST", "/api/v1/inspections", raw=raw, user="alice")
    assert made["title"] == "first" and again["title"] == "second"


# --- _revisions inconsistent with _rev, and paths longer than revs_limit -------------------

INCONSISTENT = [
    {"_rev": "2-a", "_revisions": {"start": 2, "ids": ["b", "a"]}},
    {"_rev": "3-b", "_revisions": {"start": 2, "ids": ["b", "a"]}},
    {"_revisions": {"start": 1, "ids": ["a", "b"]}},
    {"_revisions": {"start": 0, "ids": ["a"]}},
    {"_revisions": {"start": -1, "ids": ["a"]}},
    {"_revisions": {"start": "2", "ids": ["b", "a"]}},
    {"_revisions": {"start": 2, "ids": []}},
    {"_revisions": {"start": 2, "ids": "ba"}},
    {"_revisions": {"start": 2, "ids": ["b", 1]}},
    {"_revisions": {"start": 2, "ids": ["b c", "a"]}},
    {"_revisions": {"start": 2, "ids": ["x" * 129, "a"]}},
    {"_revisions": {"start": 2}},
    {"_revisions": ["2-b", "1-a"]},
    {"_rev": "1-a", "_revisions": {"start": 1, "ids": ["a\u0000"]}},
]


async def test_revisions_inconsistent_with_rev_are_refused_and_write_nothing(client, seeded):
    """_revisions that contradict _rev, are longer than start allows, or are malformed: a 400 for
    PUT and a row error in _bulk_docs, in both new_edits modes, nothing written."""
    docs = [{"_id": f"r{i}", "v": 1, **d} for i, d in enumerate(INCONSISTENT)]
    for new_edits in (False, True):
        body = {"docs": docs, "new_edits": new_edits}
        rows = await created(client, "POST", "/field/_bulk_docs", body)
        assert len(rows) == len(docs)
        for row in rows:
            assert_row_error(row, "bad_request")
        flag = "true" if new_edits else "false"
        for doc in docs:
            answer = await send(client, "PUT", f"/field/{doc['_id']}?new_edits={flag}", doc)
            assert_error(answer, 400, case=doc)
    await unchanged(client, seeded)


async def test_a_path_longer_than_revs_limit_is_stemmed_and_extends_without_conflict(
    client, seeded
):
    """A replicated path longer than revs_limit is stored stemmed to revs_limit, and a longer path
    of the same branch extends it without opening a conflict."""
    await created(client, "PUT", "/field/_revs_limit", 5)
    ids = [f"r{i}" for i in range(20, 0, -1)]  # 20-r20 ... 1-r1
    first = {"_id": "stem", "_revisions": {"start": 20, "ids": ids}, "v": 1}
    assert (
        await created(client, "POST", "/field/_bulk_docs", {"docs": [first], "new_edits": False})
        == []
    )
    got = (await send(client, "GET", "/field/stem?revs=true")).json()
    assert got["_revisions"] == {"start": 20, "ids": ids[:5]}
    longer = {"_id": "stem", "_revisions": {"start": 21, "ids": ["r21", *ids]}, "v": 2}
    assert (
        await created(client, "POST", "/field/_bulk_docs", {"docs": [longer], "new_edits": False})
        == []
    )
    got = (await send(client, "GET", "/field/stem?revs=true&conflicts=true")).json()
    assert got["_rev"] == "21-r21" and "_conflicts" not in got
    assert got["_revisions"] == {"start": 21, "ids": ["r21", *ids[:4]]}
    diff = await send(client, "POST", "/field/_revs_diff", {"stem": ["21-r21", "20-r20"]})
    assert diff.json() == {}
    info = (await send(client, "GET", "/field")).json()
    assert info["open_conflicts"] == 0


# --- attachment digests that do not match ------------------------------------------------

WRONG = md5_digest(b"something else")


async def test_an_inline_attachment_whose_digest_does_not_match_is_refused(client, seeded):
    """Inline data whose md5 digest is not the one sent: 400 for PUT, a row error in _bulk_docs
    (both modes), nothing written."""
    att = {"a.txt": {"content_type": "text/plain", "data": "aGk=", "digest": WRONG}}
    for new_edits in (True, False):
        doc = {"_id": "att", "_attachments": att, **({} if new_edits else {"_rev": "1-a"})}
        body = {"docs": [doc], "new_edits": new_edits}
        rows = await created(client, "POST", "/field/_bulk_docs", body)
        assert_row_error(rows[0], "bad_request")
        flag = "true" if new_edits else "false"
        answer = await send(client, "PUT", f"/field/att?new_edits={flag}", doc)
        await refused(client, seeded, answer, 400, new_edits)


async def test_a_multipart_attachment_whose_digest_does_not_match_is_refused(client, seeded):
    """A multipart/related part whose md5 digest is not the one declared: 400, nothing written."""
    doc = {"_attachments": {"a.txt": {"follows": True, "length": 2, "digest": WRONG}}}
    body = (
        b"--b\r\nContent-Type: application/json\r\n\r\n"
        + orjson.dumps(doc)
        + b"\r\n--b\r\n\r\nhi\r\n--b--\r\n"
    )
    answer = await send(client, "PUT", "/field/mp", raw=body, ctype="multipart/related; boundary=b")
    await refused(client, seeded, answer, 400)


async def test_a_stub_for_an_attachment_this_document_never_had_is_412(client, seeded):
    """A stub may only point at the document's own stored attachments: knowing another
    document's digest does not give access to its bytes."""
    att = {
        "secret.txt": {"content_type": "text/plain", "data": base64.b64encode(b"secret").decode()}
    }
    await created(client, "PUT", "/field/other", {"_attachments": att}, user="admin")
    before = await db_state(client, "field")
    digest = md5_digest(b"secret")
    stub = {"_attachments": {"x.txt": {"stub": True, "digest": digest, "length": 6}}}
    current = (await send(client, "GET", "/field/doc")).json()["_rev"]
    for path in ("/field/doc?rev=" + current, "/field/fresh"):
        await refused(client, before, await send(client, "PUT", path, stub), 412)


# --- ids with "/", "%2F" and ".." --------------------------------------------------------


def escaped(doc_id: str) -> str:
    """``doc_id`` as one path segment, dots escaped too (else ``..`` is a dot-segment)."""
    return quote(doc_id, safe="").replace(".", "%2E")


async def test_ids_with_slashes_escapes_and_dots_are_plain_ids(client, seeded):
    """Ids with '/', '%2F', '.' and '..' are stored byte for byte, addressed escaped, never escape
    their database; /db/a/b is an attachment, not document 'a/b'."""
    ids = ["a/b", "%2F", "..", ".", "../inspections", "a/../../x", "/"]
    for doc_id in ids:
        made = await created(
            client, "PUT", "/field/" + escaped(doc_id), {"id": doc_id}, encoded=True
        )
        assert made["id"] == doc_id
    for doc_id in ids:
        got = await send(client, "GET", "/field/" + escaped(doc_id), encoded=True)
        assert got.json()["id"] == doc_id and got.json()["_id"] == doc_id
    listed = (await send(client, "GET", "/field/_all_docs")).json()
    assert sorted([*ids, "doc"]) == sorted(r["id"] for r in listed["rows"])
    assert (await db_state(client, "inspections")) == {"inspections": seeded["inspections"]}
    # "/field/a/b" is attachment "b" of document "a", not document "a/b"
    assert_error(await send(client, "GET", "/field/a/b"), 404)


async def test_attachment_and_local_names_with_slashes_round_trip(client, seeded):
    """Attachment and _local names may hold '/', escaped or not, and '..': each is one name."""
    rev = (await send(client, "GET", "/field/doc")).json()["_rev"]
    made = await created(
        client, "PUT", f"/field/doc/dir/a.txt?rev={rev}", raw=b"one", ctype="text/plain"
    )
    await created(
        client, "PUT", f"/field/doc/dir%2Fb.txt?rev={made['rev']}", raw=b"two", ctype="text/plain"
    )
    assert (await send(client, "GET", "/field/doc/dir%2Fa.txt")).raw == b"one"
    assert (await send(client, "GET", "/field/doc/dir/b.txt")).raw == b"two"
    names = (await send(client, "GET", "/field/doc")).json()["_attachments"]
    assert sorted(names) == ["dir/a.txt", "dir/b.txt"]
    await created(client, "PUT", "/field/_local/a%2F..%2Fb", {"v": "slash"})
    assert (await send(client, "GET", "/field/_local/a%2F..%2Fb")).json()["_id"] == "_local/a/../b"


async def test_database_names_with_slashes_or_dots_are_refused(client, seeded):
    """Database names with '/' or dots, escaped or not, are refused on create, read and delete; no
    database appears or goes."""
    for path in ("/a%2Fb", "/..%2Ffield", "/field%2F_all_docs", "/%2E%2E", "/%2E"):
        for method in ("PUT", "GET", "DELETE"):
            answer = await send(client, method, path, encoded=True)
            assert_error(answer, case=(method, path))
    assert (await send(client, "GET", "/_all_dbs")).json() == ["field", "inspections", "templates"]
    await unchanged(client, seeded)


async def test_rest_ids_with_slashes_and_dots_are_refused(client, seeded):
    """REST ids with '/', '..' or a design prefix are refused (400 or 404) on read, update and
    delete; nothing written."""
    for path in (
        "/api/v1/templates/..%2F..",
        "/api/v1/inspections/..%2Fx",
        "/api/v1/templates/_design%2Fx",
    ):
        for method in ("GET", "PATCH", "DELETE"):
            answer = await send(client, method, path, {"version": 1}, encoded=True)
            assert_error(answer)
    await unchanged(client, seeded)


async def test_every_spelling_of_an_inspection_uuid_names_the_same_inspection(client, seeded):
    """Upper-case, braced, URN and unhyphenated spellings of an inspection's UUID name that
    inspection in a sync batch (not a 404), and creating it again under another spelling is a
    409, not a second inspection."""
    made = await created(client, "POST", "/api/v1/inspections", {"title": "t"}, user="alice")
    plain = made["id"]
    spellings = [plain.upper(), "{" + plain + "}", "urn:uuid:" + plain, plain.replace("-", "")]
    for version, spelling in enumerate(spellings, start=1):
        operation = {
            "op": "update",
            "id": spelling,
            "version": version,
            "data": {"title": spelling},
        }
        body = {"operations": [operation]}
        [result] = (await created(client, "POST", "/api/v1/sync/batch", body, user="alice"))[
            "results"
        ]
        assert (result["status"], result["id"]) == (200, plain), (spelling, result)
    again = await send(client, "POST", "/api/v1/inspections", {"id": plain.upper()}, user="alice")
    assert_error(again, 409)
    listed = (await send(client, "GET", "/api/v1/inspections", user="alice")).json()["results"]
    assert [(i["id"], i["version"]) for i in listed] == [(plain, len(spellings) + 1)]


# --- Unicode normalization twins ---------------------------------------------------------

TWINS = ["caf\u00e9", "cafe\u0301", "\u00c5", "A\u030a", "\u212b"]


def test_the_twins_are_distinct_strings_that_normalize_alike():
    """The fixture: five distinct strings, two characters once normalized (NFC)."""
    assert len(set(TWINS)) == len(TWINS)
    assert len({unicodedata.normalize("NFC", t) for t in TWINS}) == 2


async def test_normalization_twins_are_distinct_ids_that_round_trip_byte_exact(client, seeded):
    """NFC and NFD twins (and the Angstrom sign) are distinct documents, by URL and by _bulk_docs,
    each read back with its own bytes; twin member names are distinct members."""
    for index, twin in enumerate(TWINS[:3]):
        await created(client, "PUT", "/field/" + quote(twin), {"n": index, twin: twin})
    docs = [{"_id": twin, "n": i} for i, twin in enumerate(TWINS[3:], start=3)]
    rows = await created(client, "POST", "/field/_bulk_docs", {"docs": docs})
    assert [r["id"] for r in rows] == TWINS[3:]
    for index, twin in enumerate(TWINS):
        got = await send(client, "GET", "/field/" + quote(twin))
        assert got.json()["_id"] == twin and got.json()["n"] == index
        assert b'"_id":' + orjson.dumps(twin) in got.raw  # the very bytes, not a normal form
    listed = (await send(client, "GET", "/field/_all_docs")).json()
    assert sorted(r["id"] for r in listed["rows"]) == sorted([*TWINS, "doc"])
    keys = await send(client, "POST", "/field/_all_docs", {"keys": TWINS})
    assert [r["id"] for r in keys.json()["rows"]] == TWINS
    body = (await send(client, "GET", "/field/" + quote(TWINS[0]))).json()
    assert body[TWINS[0]] == TWINS[0] and TWINS[1] not in body


async def test_normalization_twins_are_distinct_local_docs_and_attachment_names(client, seeded):
    """Twins are distinct _local documents, distinct attachment names and distinct REST member
    names."""
    for twin in TWINS[:2]:
        await created(client, "PUT", "/field/_local/" + quote(twin), {"v": twin})
    for twin in TWINS[:2]:
        assert (await send(client, "GET", "/field/_local/" + quote(twin))).json()["v"] == twin
    atts = {twin: {"data": base64.b64encode(twin.encode()).decode()} for twin in TWINS}
    await created(client, "PUT", "/field/twins", {"_attachments": atts})
    for twin in TWINS:
        assert (await send(client, "GET", "/field/twins/" + quote(twin))).raw == twin.encode()
    made = await inspection(client, {"title": TWINS[1], "responses": {t: t for t in TWINS}})
    assert made["title"] == TWINS[1] and made["responses"] == {t: t for t in TWINS}
