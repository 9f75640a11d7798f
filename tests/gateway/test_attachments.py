"""Attachments: inline base64 with digests, stubs, standalone routes, ``multipart/related``."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib

import orjson

from gateway.app import create_app
from tests.helpers import Couch


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def md5(data: bytes) -> str:
    return "md5-" + b64(hashlib.md5(data).digest())


def inline(data: bytes, content_type: str = "text/plain") -> dict:
    return {"content_type": content_type, "data": b64(data)}


async def put_with(couch: Couch, db: str, doc_id: str, atts: dict, **body) -> str:
    return (await couch.put(f"/{db}/{doc_id}", {"_attachments": atts, **body}))["rev"]


async def raw_get(client, couch: Couch, path: str, **headers: str):
    async with client.get(path, headers=couch.headers(headers)) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_inline_attachments_come_back_as_stubs_with_an_md5_digest(alice, db):
    await put_with(alice, db, "doc", {"a.txt": inline(b"hello")})
    stub = (await alice.get(f"/{db}/doc"))["_attachments"]["a.txt"]
    assert stub == {
        "content_type": "text/plain",
        "digest": md5(b"hello"),
        "length": 5,
        "revpos": 1,
        "stub": True,
    }


async def test_attachments_true_returns_the_data_inline(alice, db):
    await put_with(alice, db, "doc", {"a.txt": inline(b"hello")})
    att = (await alice.get(f"/{db}/doc?attachments=true"))["_attachments"]["a.txt"]
    assert att["data"] == b64(b"hello") and "stub" not in att


async def test_a_stub_keeps_the_attachment_on_the_next_revision(alice, db):
    first = await put_with(alice, db, "doc", {"a.txt": inline(b"hello")})
    doc = await alice.get(f"/{db}/doc")
    doc["title"] = "changed"
    second = (await alice.put(f"/{db}/doc", doc))["rev"]
    assert second != first
    att = (await alice.get(f"/{db}/doc?attachments=true"))["_attachments"]["a.txt"]
    assert (att["revpos"], att["data"]) == (1, b64(b"hello"))


async def test_leaving_an_attachment_out_removes_it(alice, db):
    first = await put_with(alice, db, "doc", {"a.txt": inline(b"a"), "b.txt": inline(b"b")})
    doc = await alice.get(f"/{db}/doc")
    del doc["_attachments"]["a.txt"]
    await alice.put(f"/{db}/doc", doc)
    assert list((await alice.get(f"/{db}/doc"))["_attachments"]) == ["b.txt"]
    old = await alice.get(f"/{db}/doc?rev={first}")
    assert sorted(old["_attachments"]) == ["a.txt", "b.txt"]


async def test_atts_since_sends_only_newer_attachment_data(alice, db):
    first = await put_with(alice, db, "doc", {"old.txt": inline(b"old")})
    doc = await alice.get(f"/{db}/doc")
    doc["_attachments"]["new.txt"] = inline(b"new")
    await alice.put(f"/{db}/doc", doc)
    since = orjson.dumps([first]).decode()
    atts = (await alice.get(f"/{db}/doc", params={"atts_since": since}))["_attachments"]
    assert atts["old.txt"]["stub"] is True
    assert atts["new.txt"]["data"] == b64(b"new")


async def test_a_stub_for_an_unknown_attachment_is_missing_stub(alice, db):
    rev = (await alice.put(f"/{db}/doc", {"v": 1}))["rev"]
    stub = {"content_type": "text/plain", "stub": True, "digest": md5(b"x"), "length": 1}
    body = {"_rev": rev, "_attachments": {"ghost.txt": stub}}
    err = await alice.put(f"/{db}/doc", body, expected_status=412)
    assert err["error"] == "missing_stub"
    assert (await alice.get(f"/{db}/doc"))["_rev"] == rev


async def test_a_digest_that_does_not_match_the_data_is_refused(alice, db):
    att = {**inline(b"hello"), "digest": md5(b"other")}
    err = await alice.put(f"/{db}/doc", {"_attachments": {"a.txt": att}}, expected_status=400)
    assert err["error"] == "bad_request"
    await alice.get(f"/{db}/doc", expected_status=404)


async def test_invalid_base64_is_refused(alice, db):
    bad = {"a.txt": {"content_type": "text/plain", "data": "not base64!"}}
    await alice.put(f"/{db}/doc", {"_attachments": bad}, expected_status=400)


async def test_standalone_get_returns_the_bytes_type_and_digest_etag(client, alice, db):
    await put_with(alice, db, "doc", {"a.txt": inline(b"hello")})
    status, headers, data = await raw_get(client, alice, f"/{db}/doc/a.txt")
    assert (status, data) == (200, b"hello")
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["ETag"] == f'"{md5(b"hello")}"'
    status, _, _ = await raw_get(
        client, alice, f"/{db}/doc/a.txt", **{"If-None-Match": headers["ETag"]}
    )
    assert status == 304


async def test_standalone_put_adds_an_attachment_as_a_new_revision(client, alice, db):
    rev = (await alice.put(f"/{db}/doc", {"v": 1}))["rev"]
    headers = {"Content-Type": "image/png"}
    made = await alice.put(f"/{db}/doc/pic.png?rev={rev}", raw=b"\x89PNG", headers=headers)
    assert made["ok"] is True and made["rev"].startswith("2-")
    doc = await alice.get(f"/{db}/doc")
    assert doc["v"] == 1 and doc["_attachments"]["pic.png"]["digest"] == md5(b"\x89PNG")
    status, headers, data = await raw_get(client, alice, f"/{db}/doc/pic.png")
    assert (status, data, headers["Content-Type"]) == (200, b"\x89PNG", "image/png")


async def test_standalone_put_without_rev_creates_the_document(alice, db):
    made = await alice.put(f"/{db}/new/a.txt", raw=b"x", headers={"Content-Type": "text/plain"})
    assert made["rev"].startswith("1-")
    assert list((await alice.get(f"/{db}/new"))["_attachments"]) == ["a.txt"]


async def test_standalone_put_with_a_stale_rev_is_a_conflict(alice, db):
    first = (await alice.put(f"/{db}/doc", {"v": 1}))["rev"]
    await alice.put(f"/{db}/doc", {"_rev": first, "v": 2})
    headers = {"Content-Type": "text/plain"}
    await alice.put(f"/{db}/doc/a.txt?rev={first}", raw=b"x", headers=headers, expected_status=409)


async def test_standalone_delete_removes_the_attachment(client, alice, db):
    rev = await put_with(alice, db, "doc", {"a.txt": inline(b"a"), "b.txt": inline(b"b")}, v=1)
    gone = await alice.delete(f"/{db}/doc/a.txt?rev={rev}")
    assert gone["ok"] is True and gone["rev"].startswith("2-")
    status, _, _ = await raw_get(client, alice, f"/{db}/doc/a.txt")
    assert status == 404
    doc = await alice.get(f"/{db}/doc")
    assert doc["v"] == 1 and list(doc["_attachments"]) == ["b.txt"]
    status, _, data = await raw_get(client, alice, f"/{db}/doc/a.txt?rev={rev}")
    assert (status, data) == (200, b"a")


async def test_standalone_delete_needs_a_rev_and_an_existing_attachment(alice, db):
    rev = await put_with(alice, db, "doc", {"a.txt": inline(b"a")})
    await alice.delete(f"/{db}/doc/a.txt", expected_status=409)
    await alice.delete(f"/{db}/doc/zz.txt?rev={rev}", expected_status=404)


async def test_a_missing_attachment_or_document_is_not_found(alice, db):
    await alice.put(f"/{db}/doc", {"v": 1})
    err = await alice.get(f"/{db}/doc/none.txt", expected_status=404)
    assert err["error"] == "not_found"
    await alice.get(f"/{db}/ghost/none.txt", expected_status=404)


async def test_attachment_names_may_contain_slashes(client, alice, db):
    await alice.put(f"/{db}/doc/dir/a.txt", raw=b"deep", headers={"Content-Type": "text/plain"})
    assert list((await alice.get(f"/{db}/doc"))["_attachments"]) == ["dir/a.txt"]
    _, _, data = await raw_get(client, alice, f"/{db}/doc/dir/a.txt")
    assert data == b"deep"


async def test_design_documents_have_attachments_too(client, alice, db):
    await alice.put(
        f"/{db}/_design/app/index.html", raw=b"<p>", headers={"Content-Type": "text/html"}
    )
    _, headers, data = await raw_get(client, alice, f"/{db}/_design/app/index.html")
    assert data == b"<p>" and headers["Content-Type"].startswith("text/html")


def multipart(doc: dict, parts: list[bytes], boundary: str = "abc123") -> tuple[bytes, dict]:
    out = [f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode() + orjson.dumps(doc)]
    out += [f"--{boundary}\r\n\r\n".encode() + part for part in parts]
    body = b"\r\n".join(out) + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f'multipart/related; boundary="{boundary}"'}


async def test_multipart_related_put_stores_following_attachments(client, alice, db):
    atts = {
        "a.txt": {"follows": True, "content_type": "text/plain", "length": 5},
        "b.bin": {"follows": True, "content_type": "application/octet-stream", "length": 3},
    }
    body, headers = multipart({"v": 1, "_attachments": atts}, [b"hello", b"\x00\x01\x02"])
    made = await alice.put(f"/{db}/doc", raw=body, headers=headers)
    assert made["rev"].startswith("1-")
    doc = await alice.get(f"/{db}/doc")
    assert doc["v"] == 1
    assert doc["_attachments"]["a.txt"]["digest"] == md5(b"hello")
    _, _, data = await raw_get(client, alice, f"/{db}/doc/b.bin")
    assert data == b"\x00\x01\x02"


async def test_gzip_encoded_parts_from_couchdbs_replicator_are_stored_plain(client, alice, db):
    """CouchDB keeps text attachments compressed and its replicator sends them so, with the
    digest and length of the plain data: the gateway stores the plain data."""
    plain = b"hello, compressed world " * 40
    packed = gzip.compress(plain)
    meta = {"follows": True, "content_type": "text/plain", "revpos": 1, "digest": md5(plain),
            "length": len(plain), "encoding": "gzip", "encoded_length": len(packed)}  # fmt: skip
    doc = {"_id": "z", "_rev": "1-abc", "_revisions": {"start": 1, "ids": ["abc"]},
           "_attachments": {"a.txt": meta}}  # fmt: skip
    body, headers = multipart(doc, [packed])
    await alice.put(f"/{db}/z?new_edits=false", raw=body, headers=headers, expected_status=201)
    _, _, data = await raw_get(client, alice, f"/{db}/z/a.txt")
    assert data == plain
    stub = (await alice.get(f"/{db}/z"))["_attachments"]["a.txt"]
    assert (stub["digest"], stub["length"]) == (md5(plain), len(plain))
    assert "encoding" not in stub
    for bad, status in ((b"not gzip", 400), (gzip.compress(b"x" * 70_000_000), 413)):
        broken = {**doc, "_id": "bad", "_attachments": {"a.txt": {**meta, "digest": None}}}
        body, headers = multipart(broken, [bad])
        await alice.put(f"/{db}/bad?new_edits=false", raw=body, headers=headers,
                        expected_status=status)  # fmt: skip
    await alice.get(f"/{db}/bad", expected_status=404)


async def test_multipart_with_too_few_parts_is_a_bad_request(alice, db):
    atts = {"a.txt": {"follows": True, "content_type": "text/plain", "length": 5}}
    body, headers = multipart({"_attachments": atts}, [])
    await alice.put(f"/{db}/doc", raw=body, headers=headers, expected_status=400)
    await alice.get(f"/{db}/doc", expected_status=404)


async def test_the_same_attachment_on_two_devices_is_one_revision(alice, bob, db):
    rev = (await alice.put(f"/{db}/doc", {"v": 1}))["rev"]
    body = {"_rev": rev, "v": 1, "_attachments": {"a.txt": inline(b"same")}}
    assert (await alice.put(f"/{db}/doc", body))["rev"] == (await bob.put(f"/{db}/doc", body))[
        "rev"
    ]


async def test_an_attachment_above_the_limit_is_too_large(aiohttp_client, settings, engine):
    small = dataclasses.replace(settings, max_attachment_bytes=4)
    client = await aiohttp_client(create_app(small, migrate=False))
    admin = Couch(client, "admin")
    await admin.put("/field", expected_status=201)
    body = {"_attachments": {"a.txt": inline(b"too long")}}
    err = await admin.put("/field/doc", body, expected_status=413)
    assert err["error"] == "too_large"
    headers = {"Content-Type": "text/plain"}
    await admin.put("/field/doc2/a.txt", raw=b"too long", headers=headers, expected_status=413)
    assert (await admin.get("/field"))["update_seq"] == 0
