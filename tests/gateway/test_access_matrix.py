"""The access matrix of SPEC §3: every route that reveals or changes a document, row by row.

Each test builds one small world: a database ``acl`` in some access mode where bob (an
inspector; the manager in a ``readonly`` database, where inspectors cannot write) owns

    b-note           two revisions, a conflicting branch and an attachment ``a.txt``
    b-gone           a deleted document
    _design/b-view   a design document with an attachment ``a.txt``
    _local/b-ckpt    a replication checkpoint (always bob's own)

and alice owns ``a-note``.  Each row of the matrix is a request template about one of
those documents.  Sent about its *missing twin* (``g-note``, ``g-gone``, ``_design/g-view``,
``_local/g-ckpt``: ids nobody ever wrote, with bob's revisions in the request all the
same) it gives the answer that "no such document" looks like.

    owned,    alice    lookups: the twin's answer, byte for byte but for the id; listings:
                       none of bob's ids, revisions or bytes, and no change when bob writes
                       more; writes: bob's documents untouched, and the twin's answer, or
                       a per-document 409 conflict for a create on a taken id
    owned,    staff    lookups differ from the twin's (they see); writes succeed
    shared,   alice    like staff
    readonly, alice    reads like staff; every write route is 403 forbidden
    _local/            private to (user, database) in every mode and for every role

A route added to ``gateway.routes`` under ``/{db}`` must be added to a row below or to
``NON_DOCUMENT`` (with the reason it reveals no document), or
``test_the_matrix_covers_every_database_route`` fails.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.routes import DB, ROUTES
from schema.changes import read_changes
from schema.databases import get_database
from schema.reads import AllDocsQuery, all_docs_range, count_rows, get_doc_rows
from schema.tables import users as users_table
from schema.users import verify_password
from tests.helpers import Couch

NAME = "acl"
SECRET = "BOB-SECRET"
ATTACHMENT = b"BOB-ATTACHMENT"
LOOKUP, LISTING, WRITE = "lookup", "listing", "write"
FEEDS = ("normal", "longpoll", "continuous", "eventsource")
OMIT = object()  # a placeholder whose value is absent: the key or item is left out


# -- request templates ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class J:
    """A query parameter sent JSON-encoded."""

    value: Any


@dataclass(frozen=True, slots=True)
class Call:
    """A request template: ``{db}``, ``{id}``, ``{rev}``... are filled in per target."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    etag: str | None


def fill(value: Any, subst: dict[str, Any]) -> Any:
    """Fill placeholders; a string that is exactly ``{name}`` takes the value's own type."""
    if isinstance(value, str):
        if value[:1] == "{" and value[-1:] == "}" and value[1:-1] in subst:
            return subst[value[1:-1]]
        for name, sub in subst.items():
            if sub is not OMIT:
                value = value.replace("{" + name + "}", str(sub))
        return value
    if isinstance(value, J):
        return J(fill(value.value, subst))
    if isinstance(value, dict):
        pairs = [(fill(k, subst), fill(v, subst)) for k, v in value.items()]
        return {k: v for k, v in pairs if v is not OMIT}
    if isinstance(value, list):
        return [v for v in (fill(item, subst) for item in value) if v is not OMIT]
    return value


def request_bytes(call: Call, subst: dict[str, Any]) -> bytes:
    """Everything the client itself sends (what an answer may echo without leaking)."""
    filled = fill([call.path, call.params, call.body, call.headers], subst)
    return orjson.dumps(filled) + (call.raw or b"")  # (orjson writes a J as {"value": ...})


async def send(couch: Couch, call: Call, subst: dict[str, Any]) -> Answer:
    path = fill(call.path, subst)
    params = {
        k: orjson.dumps(v.value).decode() if isinstance(v, J) else v
        for k, v in fill(call.params, subst).items()
    }
    body = fill(call.body, subst)
    data = call.raw if call.raw is not None else orjson.dumps(body) if body is not None else None
    headers = couch.headers(fill(call.headers, subst))
    async with couch.client.request(
        call.method, path, data=data, params=params, headers=headers
    ) as resp:
        content = await resp.read()
        return Answer(
            resp.status, resp.headers.get("Content-Type", ""), content, resp.headers.get("ETag")
        )


def normalized(answer: Answer, doc_id: str) -> Answer:
    """The answer with the document id (and a multipart boundary) blanked out."""
    body, ctype = answer.body, answer.content_type
    boundary = re.search(r'boundary="?([^";]+)', ctype)
    if boundary:
        body = body.replace(boundary.group(1).encode(), b"<BOUNDARY>")
        ctype = ctype.replace(boundary.group(1), "<BOUNDARY>")
    body = body.replace(orjson.dumps(doc_id)[1:-1], b"<ID>")
    return replace(answer, body=body, content_type=ctype)


def seqless(answer: Answer) -> Answer:
    """The answer with database-wide sequence numbers blanked out."""
    body = re.sub(
        rb'"(last_seq|update_seq|committed_update_seq|pending)":\d+', rb'"\1":0', answer.body
    )
    return replace(answer, body=body)


def is_refused_as_taken(answer: Answer) -> bool:
    """409 conflict, or a ``_bulk_docs`` answer whose every row is a conflict."""
    decoded = orjson.loads(answer.body)
    if answer.status == 409:
        return decoded["error"] == "conflict"
    return (
        answer.status == 201
        and isinstance(decoded, list)
        and bool(decoded)
        and all(row.get("error") == "conflict" for row in decoded)
    )


def succeeded(answer: Answer) -> bool:
    if not 200 <= answer.status < 300:
        return False
    decoded = orjson.loads(answer.body) if answer.body else None
    rows = decoded if isinstance(decoded, list) else [decoded]
    return all(not (isinstance(r, dict) and "error" in r) for r in rows)


# -- the world ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One of bob's documents: its id and revisions."""

    id: str
    current: str
    first: str
    branch: str


TWINS = {"doc": "g-note", "deleted": "g-gone", "design": "_design/g-view", "local": "_local/g-ckpt"}


def substitutions(target: Target, rev: str | None) -> dict[str, Any]:
    """Placeholders for a request about ``target``, sending its revision ``rev`` (a name)."""
    chosen = getattr(target, rev) if rev is not None else None
    base = chosen or target.current
    pos, rev_hash = base.split("-", 1)
    next_hash = "c" * 32
    return {
        "db": NAME,
        "id": target.id,
        "current": target.current,
        "first": target.first,
        "branch": target.branch,
        "rev": chosen if chosen is not None else OMIT,
        "rev_hash": rev_hash,
        "next_pos": int(pos) + 1,
        "next_hash": next_hash,
        "next_rev": f"{int(pos) + 1}-{next_hash}",
    }


@dataclass
class World:
    mode: str
    couches: dict[str, Couch]
    targets: dict[str, Target]
    secrets: list[bytes]

    @property
    def owner(self) -> Couch:
        return self.couches["manager" if self.mode == "readonly" else "bob"]

    def subst(self, target: str, rev: str | None = "current") -> dict[str, Any]:
        return substitutions(self.targets[target], rev)

    def twin_subst(self, target: str, rev: str | None = "current") -> dict[str, Any]:
        return substitutions(replace(self.targets[target], id=TWINS[target]), rev)

    async def snapshot(self) -> dict[str, bytes]:
        """Everything bob's documents are, as the manager (and bob, for _local) sees it."""
        manager, out = self.couches["manager"], {}
        every_rev = {"open_revs": "all", "revs": "true", "attachments": "true"}
        for key in ("doc", "deleted", "design"):
            answer = await send(manager, Call("GET", "/{db}/{id}", every_rev), self.subst(key))
            assert answer.status == 200, answer
            out[key] = answer.body
        local = await send(self.couches["bob"], Call("GET", "/{db}/{id}"), self.subst("local"))
        assert local.status == 200, local
        out["local"] = local.body
        info = orjson.loads((await send(manager, Call("GET", "/{db}"), self.subst("doc"))).body)
        out["db"] = orjson.dumps([info[k] for k in ("update_seq", "doc_count", "doc_del_count")])
        return out

    async def owner_writes_more(self) -> None:
        """Bob creates, updates, deletes and conflicts documents (alice's view must not move)."""
        owner, doc = self.owner, self.targets["doc"]
        await owner.put(f"/{NAME}/b-more", {"kind": "note", "secret": SECRET})
        await owner.put(
            f"/{NAME}/b-note", {"kind": "note", "secret": SECRET}, params={"rev": doc.current}
        )
        await owner.delete(
            f"/{NAME}/b-more", params={"rev": (await owner.get(f"/{NAME}/b-more"))["_rev"]}
        )
        branch = {
            "_id": "b-note",
            "_rev": "2-" + "d" * 32,
            "_revisions": {"start": 2, "ids": ["d" * 32, doc.first.split("-")[1]]},
            "secret": SECRET,
        }
        await owner.post(
            f"/{NAME}/_bulk_docs", {"docs": [branch], "new_edits": False}, expected_status=201
        )


async def build(mode: str, couches: dict[str, Couch]) -> World:
    admin, alice, bob = couches["admin"], couches["alice"], couches["bob"]
    await admin.put(f"/{NAME}?access_mode={mode}")
    owner = couches["manager"] if mode == "readonly" else bob
    db = f"/{NAME}"
    first = (await owner.put(f"{db}/b-note", {"kind": "note", "secret": SECRET}))["rev"]
    second = (
        await owner.put(
            f"{db}/b-note", {"kind": "note", "secret": SECRET, "v": 2}, params={"rev": first}
        )
    )["rev"]
    text = {"Content-Type": "text/plain"}
    current = (
        await owner.put(f"{db}/b-note/a.txt", raw=ATTACHMENT, headers=text, params={"rev": second})
    )["rev"]
    branch = "2-" + "b" * 32
    branch_doc = {
        "_id": "b-note",
        "_rev": branch,
        "_revisions": {"start": 2, "ids": ["b" * 32, first.split("-")[1]]},
        "kind": "note",
        "secret": SECRET + "-BRANCH",
    }
    assert (
        await owner.post(
            f"{db}/_bulk_docs", {"docs": [branch_doc], "new_edits": False}, expected_status=201
        )
        == []
    )
    gone_first = (await owner.put(f"{db}/b-gone", {"kind": "note", "secret": SECRET}))["rev"]
    gone = (await owner.delete(f"{db}/b-gone", params={"rev": gone_first}))["rev"]
    view_first = (await owner.put(f"{db}/_design/b-view", {"views": {}, "secret": SECRET}))["rev"]
    view = (
        await owner.put(
            f"{db}/_design/b-view/a.txt", raw=ATTACHMENT, headers=text, params={"rev": view_first}
        )
    )["rev"]
    ckpt = (await bob.put(f"{db}/_local/b-ckpt", {"last_seq": 3, "secret": SECRET}))["rev"]
    if mode != "readonly":
        await alice.put(f"{db}/a-note", {"kind": "note", "mine": True})
    else:
        await owner.put(f"{db}/a-note", {"kind": "note", "mine": True})
    revs = [first, second, current, branch, gone_first, gone, view_first, view]
    secrets = [
        b"b-note",
        b"b-gone",
        b"b-view",
        b"b-ckpt",
        SECRET.encode(),
        ATTACHMENT,
        base64.b64encode(ATTACHMENT),
        *(rev.split("-")[1].encode() for rev in revs),
    ]
    targets = {
        "doc": Target("b-note", current, first, branch),
        "deleted": Target("b-gone", gone, gone_first, gone_first),
        "design": Target("_design/b-view", view, view_first, view_first),
        "local": Target("_local/b-ckpt", ckpt, ckpt, ckpt),
    }
    return World(mode, couches, targets, secrets)


_verify_once = functools.cache(verify_password)


@pytest.fixture(autouse=True)
def _check_each_password_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here signs the same users in with the same hashes: run scrypt once each."""
    monkeypatch.setattr("gateway.auth.verify_password", _verify_once)


@pytest.fixture
def couches(admin: Couch, manager: Couch, alice: Couch, bob: Couch) -> dict[str, Couch]:
    return {"admin": admin, "manager": manager, "alice": alice, "bob": bob}


# -- the matrix -----------------------------------------------------------------------------


def route(method: str, suffix: str = "") -> tuple[str, str]:
    return (method, DB + suffix)


R_DB = route("GET")
R_POST_DB = route("POST")
R_DOC = route("GET", "/{docid}")
R_PUT_DOC = route("PUT", "/{docid}")
R_DEL_DOC = route("DELETE", "/{docid}")
R_DESIGN = route("GET", "/_design/{ddoc}")
R_PUT_DESIGN = route("PUT", "/_design/{ddoc}")
R_DEL_DESIGN = route("DELETE", "/_design/{ddoc}")
R_ATT = route("GET", "/{docid}/{attname:.+}")
R_PUT_ATT = route("PUT", "/{docid}/{attname:.+}")
R_DEL_ATT = route("DELETE", "/{docid}/{attname:.+}")
R_DATT = route("GET", "/_design/{ddoc}/{attname:.+}")
R_PUT_DATT = route("PUT", "/_design/{ddoc}/{attname:.+}")
R_DEL_DATT = route("DELETE", "/_design/{ddoc}/{attname:.+}")
R_ALL_DOCS = route("GET", "/_all_docs")
R_POST_ALL_DOCS = route("POST", "/_all_docs")
R_CHANGES = route("GET", "/_changes")
R_POST_CHANGES = route("POST", "/_changes")
R_BULK_GET = route("POST", "/_bulk_get")
R_REVS_DIFF = route("POST", "/_revs_diff")
R_BULK_DOCS = route("POST", "/_bulk_docs")
R_LOCAL = route("GET", "/_local/{localid}")
R_PUT_LOCAL = route("PUT", "/_local/{localid}")
R_DEL_LOCAL = route("DELETE", "/_local/{localid}")


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    kind: str  # LOOKUP | LISTING | WRITE
    call: Call
    routes: tuple[tuple[str, str], ...]
    target: str = "doc"  # which of bob's documents the request is about
    rev: str | None = "current"  # writes: the revision alice sends (None: a create)
    twin: bool = True  # writes: alice's answer is the missing twin's answer
    reveals: bytes = b"b-note"  # listings: what a reader allowed to see bob's documents sees
    own: bool = True  # listings: alice's own document is among what she sees


def lookup(row_id: str, call: Call, *routes: tuple[str, str], target: str = "doc") -> Row:
    return Row(row_id, LOOKUP, call, routes, target)


def listing(row_id: str, call: Call, *routes: tuple[str, str], **kw: Any) -> Row:
    return Row(row_id, LISTING, call, routes, **kw)


def write(row_id: str, call: Call, *routes: tuple[str, str], **kw: Any) -> Row:
    return Row(row_id, WRITE, call, routes, **kw)


DOC = "/{db}/{id}"
EVERYTHING = {"include_docs": "true", "style": "all_docs", "conflicts": "true"}
FEED = {"since": "0", "timeout": "0", **EVERYTHING}
REVS = ["{first}", "{current}", "{branch}"]
MULTIPART = {"Accept": "multipart/mixed"}
TEXT = {"Content-Type": "text/plain"}
NOTE = {"kind": "note", "secret": "ALICE-WAS-HERE"}
REPLICATED = {
    "_id": "{id}",
    "_rev": "{next_rev}",
    "_revisions": {"start": "{next_pos}", "ids": ["{next_hash}", "{rev_hash}"]},
    **NOTE,
}
STUB = {"_attachments": {"a.txt": {"stub": True, "content_type": "text/plain"}}}

LOOKUPS = [
    lookup("get-doc", Call("GET", DOC), R_DOC),
    lookup("head-doc", Call("HEAD", DOC), R_DOC),
    lookup("get-doc-rev", Call("GET", DOC, {"rev": "{first}"}), R_DOC),
    lookup("get-doc-rev-latest", Call("GET", DOC, {"rev": "{first}", "latest": "true"}), R_DOC),
    lookup("get-doc-revs-info", Call("GET", DOC, {"revs": "true", "revs_info": "true"}), R_DOC),
    lookup(
        "get-doc-conflicts",
        Call("GET", DOC, {"conflicts": "true", "deleted_conflicts": "true"}),
        R_DOC,
    ),
    lookup(
        "get-doc-meta-attachments",
        Call("GET", DOC, {"meta": "true", "attachments": "true", "atts_since": J(["{first}"])}),
        R_DOC,
    ),
    lookup("get-open-revs-all", Call("GET", DOC, {"open_revs": "all", "revs": "true"}), R_DOC),
    lookup("get-open-revs-list", Call("GET", DOC, {"open_revs": J(REVS), "revs": "true"}), R_DOC),
    lookup(
        "get-open-revs-latest",
        Call("GET", DOC, {"open_revs": J(["{first}"]), "latest": "true"}),
        R_DOC,
    ),
    lookup(
        "get-open-revs-all-multipart",
        Call("GET", DOC, {"open_revs": "all"}, headers=MULTIPART),
        R_DOC,
    ),
    lookup(
        "get-open-revs-list-multipart",
        Call("GET", DOC, {"open_revs": J(REVS)}, headers=MULTIPART),
        R_DOC,
    ),
    lookup("get-deleted", Call("GET", DOC), R_DOC, target="deleted"),
    lookup("get-deleted-rev", Call("GET", DOC, {"rev": "{current}"}), R_DOC, target="deleted"),
    lookup(
        "get-deleted-open-revs",
        Call("GET", DOC, {"open_revs": "all", "revs": "true"}),
        R_DOC,
        target="deleted",
    ),
    lookup("get-design", Call("GET", DOC), R_DESIGN, target="design"),
    lookup("head-design", Call("HEAD", DOC), R_DESIGN, target="design"),
    lookup(
        "get-design-open-revs",
        Call("GET", DOC, {"open_revs": "all", "revs": "true"}),
        R_DESIGN,
        target="design",
    ),
    lookup("get-attachment", Call("GET", DOC + "/a.txt"), R_ATT),
    lookup("head-attachment", Call("HEAD", DOC + "/a.txt"), R_ATT),
    lookup("get-attachment-rev", Call("GET", DOC + "/a.txt", {"rev": "{current}"}), R_ATT),
    lookup("get-design-attachment", Call("GET", DOC + "/a.txt"), R_DATT, target="design"),
    lookup(
        "all-docs-keys-get",
        Call("GET", "/{db}/_all_docs", {"keys": J(["{id}"]), **EVERYTHING}),
        R_ALL_DOCS,
    ),
    lookup(
        "all-docs-keys-post",
        Call("POST", "/{db}/_all_docs", EVERYTHING, {"keys": ["{id}"]}),
        R_POST_ALL_DOCS,
    ),
    lookup(
        "all-docs-key",
        Call("GET", "/{db}/_all_docs", {"key": J("{id}"), "include_docs": "true"}),
        R_ALL_DOCS,
    ),
    lookup(
        "all-docs-startkey-endkey",
        Call("GET", "/{db}/_all_docs", {"startkey": J("{id}"), "endkey": J("{id}"), **EVERYTHING}),
        R_ALL_DOCS,
    ),
    lookup(
        "all-docs-start-end-post",
        Call("POST", "/{db}/_all_docs", {"start_key": J("{id}"), "end_key": J("{id}")}, {}),
        R_POST_ALL_DOCS,
    ),
    lookup(
        "all-docs-keys-deleted",
        Call("POST", "/{db}/_all_docs", EVERYTHING, {"keys": ["{id}"]}),
        R_POST_ALL_DOCS,
        target="deleted",
    ),
    lookup(
        "all-docs-keys-design",
        Call("POST", "/{db}/_all_docs", EVERYTHING, {"keys": ["{id}"]}),
        R_POST_ALL_DOCS,
        target="design",
    ),
    *(
        lookup(
            f"changes-{feed}-doc-ids",
            Call(
                "GET",
                "/{db}/_changes",
                {"feed": feed, "filter": "_doc_ids", "doc_ids": J(["{id}"]), **FEED},
            ),
            R_CHANGES,
        )
        for feed in FEEDS
    ),
    lookup(
        "changes-post-doc-ids",
        Call("POST", "/{db}/_changes", {"filter": "_doc_ids", **FEED}, {"doc_ids": ["{id}"]}),
        R_POST_CHANGES,
    ),
    *(
        lookup(
            f"changes-{feed}-selector",
            Call(
                "POST",
                "/{db}/_changes",
                {"feed": feed, "filter": "_selector", **FEED},
                {"selector": {"_id": "{id}"}},
            ),
            R_POST_CHANGES,
        )
        for feed in FEEDS
    ),
    lookup(
        "changes-doc-ids-deleted",
        Call("GET", "/{db}/_changes", {"filter": "_doc_ids", "doc_ids": J(["{id}"]), **FEED}),
        R_CHANGES,
        target="deleted",
    ),
    lookup(
        "changes-doc-ids-design",
        Call("GET", "/{db}/_changes", {"filter": "_doc_ids", "doc_ids": J(["{id}"]), **FEED}),
        R_CHANGES,
        target="design",
    ),
    lookup(
        "bulk-get-revs",
        Call(
            "POST",
            "/{db}/_bulk_get",
            {"revs": "true", "attachments": "true"},
            {
                "docs": [
                    {"id": "{id}"},
                    {"id": "{id}", "rev": "{first}"},
                    {"id": "{id}", "rev": "{branch}", "atts_since": ["{first}"]},
                ]
            },
        ),
        R_BULK_GET,
    ),
    lookup(
        "bulk-get-latest",
        Call(
            "POST",
            "/{db}/_bulk_get",
            {"revs": "true", "latest": "true"},
            {"docs": [{"id": "{id}", "rev": "{first}"}]},
        ),
        R_BULK_GET,
    ),
    lookup(
        "bulk-get-deleted",
        Call(
            "POST",
            "/{db}/_bulk_get",
            {"revs": "true"},
            {"docs": [{"id": "{id}"}, {"id": "{id}", "rev": "{current}"}]},
        ),
        R_BULK_GET,
        target="deleted",
    ),
    lookup(
        "bulk-get-design",
        Call("POST", "/{db}/_bulk_get", {"revs": "true"}, {"docs": [{"id": "{id}"}]}),
        R_BULK_GET,
        target="design",
    ),
    lookup(
        "revs-diff",
        Call("POST", "/{db}/_revs_diff", body={"{id}": [*REVS, "9-" + "f" * 32]}),
        R_REVS_DIFF,
    ),
    lookup(
        "revs-diff-deleted",
        Call("POST", "/{db}/_revs_diff", body={"{id}": ["{first}", "{current}"]}),
        R_REVS_DIFF,
        target="deleted",
    ),
    lookup("get-local", Call("GET", DOC), R_LOCAL, target="local"),
]

LISTINGS = [
    listing("db-info-doc-count", Call("GET", "/{db}"), R_DB, reveals=b'"doc_count":3', own=False),
    listing(
        "all-docs",
        Call("GET", "/{db}/_all_docs", {"update_seq": "true", **EVERYTHING}),
        R_ALL_DOCS,
    ),
    listing("all-docs-post", Call("POST", "/{db}/_all_docs", EVERYTHING, {}), R_POST_ALL_DOCS),
    listing(
        "all-docs-descending-limit",
        Call("GET", "/{db}/_all_docs", {"descending": "true", "limit": "10"}),
        R_ALL_DOCS,
    ),
    *(
        listing(f"changes-{feed}", Call("GET", "/{db}/_changes", {"feed": feed, **FEED}), R_CHANGES)
        for feed in FEEDS
    ),
    listing("changes-post", Call("POST", "/{db}/_changes", FEED, {}), R_POST_CHANGES),
    listing(
        "changes-descending",
        Call("GET", "/{db}/_changes", {"descending": "true", **FEED}),
        R_CHANGES,
    ),
    *(
        listing(
            f"changes-{feed}-selector-all",
            Call(
                "POST",
                "/{db}/_changes",
                {"feed": feed, "filter": "_selector", **FEED},
                {"selector": {"kind": "note"}},
            ),
            R_POST_CHANGES,
        )
        for feed in FEEDS
    ),
    listing(
        "changes-design-filter",
        Call("GET", "/{db}/_changes", {"filter": "_design", **FEED}),
        R_CHANGES,
        reveals=b"b-view",
        own=False,
    ),
]

WRITES = [
    write(
        "put-doc-create", Call("PUT", DOC, {"rev": "{rev}"}, NOTE), R_PUT_DOC, rev=None, twin=False
    ),
    write("put-doc-update", Call("PUT", DOC, {"rev": "{rev}"}, NOTE), R_PUT_DOC),
    write("put-doc-stale-rev", Call("PUT", DOC, {"rev": "{rev}"}, NOTE), R_PUT_DOC, rev="first"),
    write(
        "put-doc-if-match", Call("PUT", DOC, body=NOTE, headers={"If-Match": '"{rev}"'}), R_PUT_DOC
    ),
    write("put-doc-body-rev", Call("PUT", DOC, body={"_rev": "{rev}", **NOTE}), R_PUT_DOC),
    write("put-doc-stub", Call("PUT", DOC, {"rev": "{rev}"}, {**NOTE, **STUB}), R_PUT_DOC),
    write(
        "put-doc-new-edits-false",
        Call("PUT", DOC, {"new_edits": "false"}, REPLICATED),
        R_PUT_DOC,
        twin=False,
    ),
    write(
        "put-doc-revive-deleted",
        Call("PUT", DOC, {"rev": "{rev}"}, NOTE),
        R_PUT_DOC,
        target="deleted",
        rev=None,
        twin=False,
    ),
    write("delete-doc", Call("DELETE", DOC, {"rev": "{rev}"}), R_DEL_DOC),
    write("delete-doc-without-rev", Call("DELETE", DOC, {"rev": "{rev}"}), R_DEL_DOC, rev=None),
    write(
        "post-db-create",
        Call("POST", "/{db}", body={"_id": "{id}", "_rev": "{rev}", **NOTE}),
        R_POST_DB,
        rev=None,
        twin=False,
    ),
    write(
        "post-db-update",
        Call("POST", "/{db}", body={"_id": "{id}", "_rev": "{rev}", **NOTE}),
        R_POST_DB,
    ),
    write(
        "put-design-create",
        Call("PUT", DOC, {"rev": "{rev}"}, {"views": {}}),
        R_PUT_DESIGN,
        target="design",
        rev=None,
        twin=False,
    ),
    write(
        "put-design-update",
        Call("PUT", DOC, {"rev": "{rev}"}, {"views": {}}),
        R_PUT_DESIGN,
        target="design",
    ),
    write("delete-design", Call("DELETE", DOC, {"rev": "{rev}"}), R_DEL_DESIGN, target="design"),
    write(
        "put-attachment-create",
        Call("PUT", DOC + "/new.txt", {"rev": "{rev}"}, raw=b"ALICE", headers=TEXT),
        R_PUT_ATT,
        rev=None,
        twin=False,
    ),
    write(
        "put-attachment",
        Call("PUT", DOC + "/a.txt", {"rev": "{rev}"}, raw=b"ALICE", headers=TEXT),
        R_PUT_ATT,
    ),
    write("delete-attachment", Call("DELETE", DOC + "/a.txt", {"rev": "{rev}"}), R_DEL_ATT),
    write(
        "put-design-attachment",
        Call("PUT", DOC + "/a.txt", {"rev": "{rev}"}, raw=b"ALICE", headers=TEXT),
        R_PUT_DATT,
        target="design",
    ),
    write(
        "delete-design-attachment",
        Call("DELETE", DOC + "/a.txt", {"rev": "{rev}"}),
        R_DEL_DATT,
        target="design",
    ),
    write(
        "bulk-docs-create",
        Call("POST", "/{db}/_bulk_docs", body={"docs": [{"_id": "{id}", "_rev": "{rev}", **NOTE}]}),
        R_BULK_DOCS,
        rev=None,
        twin=False,
    ),
    write(
        "bulk-docs-update",
        Call("POST", "/{db}/_bulk_docs", body={"docs": [{"_id": "{id}", "_rev": "{rev}", **NOTE}]}),
        R_BULK_DOCS,
    ),
    write(
        "bulk-docs-stale-rev",
        Call("POST", "/{db}/_bulk_docs", body={"docs": [{"_id": "{id}", "_rev": "{rev}", **NOTE}]}),
        R_BULK_DOCS,
        rev="branch",
    ),
    write(
        "bulk-docs-delete",
        Call(
            "POST",
            "/{db}/_bulk_docs",
            body={"docs": [{"_id": "{id}", "_rev": "{rev}", "_deleted": True}]},
        ),
        R_BULK_DOCS,
    ),
    write(
        "bulk-docs-stub",
        Call(
            "POST",
            "/{db}/_bulk_docs",
            body={"docs": [{"_id": "{id}", "_rev": "{rev}", **NOTE, **STUB}]},
        ),
        R_BULK_DOCS,
    ),
    write(
        "bulk-docs-revive-deleted",
        Call("POST", "/{db}/_bulk_docs", body={"docs": [{"_id": "{id}", "_rev": "{rev}", **NOTE}]}),
        R_BULK_DOCS,
        target="deleted",
        rev=None,
        twin=False,
    ),
    write(
        "bulk-docs-design",
        Call("POST", "/{db}/_bulk_docs", body={"docs": [{"_id": "{id}", "_rev": "{rev}"}]}),
        R_BULK_DOCS,
        target="design",
    ),
    write(
        "bulk-docs-new-edits-false",
        Call("POST", "/{db}/_bulk_docs", body={"docs": [REPLICATED], "new_edits": False}),
        R_BULK_DOCS,
        twin=False,
    ),
    write(
        "bulk-docs-new-edits-false-branch",
        Call("POST", "/{db}/_bulk_docs", body={"docs": [REPLICATED], "new_edits": False}),
        R_BULK_DOCS,
        rev="first",
        twin=False,
    ),
    write(
        "bulk-docs-new-edits-false-stub",
        Call(
            "POST",
            "/{db}/_bulk_docs",
            body={"docs": [{**REPLICATED, **STUB}], "new_edits": False},
        ),
        R_BULK_DOCS,
    ),
    write(
        "bulk-docs-new-edits-false-design",
        Call("POST", "/{db}/_bulk_docs", body={"docs": [REPLICATED], "new_edits": False}),
        R_BULK_DOCS,
        target="design",
        twin=False,
    ),
    write(
        "put-local", Call("PUT", DOC, body={"last_seq": 9}), R_PUT_LOCAL, target="local", rev=None
    ),
    write(
        "put-local-rev",
        Call("PUT", DOC, {"rev": "{rev}"}, {"last_seq": 9}),
        R_PUT_LOCAL,
        target="local",
    ),
    write("delete-local", Call("DELETE", DOC, {"rev": "{rev}"}), R_DEL_LOCAL, target="local"),
]

ROWS = [*LOOKUPS, *LISTINGS, *WRITES]

NON_DOCUMENT: dict[tuple[str, str], str] = {
    route("PUT"): "creates a database: admins only",
    route("DELETE"): "deletes a database: admins only",
    route("POST", "/_ensure_full_commit"): "answers the instance start time only",
    route("GET", "/_revs_limit"): "a database setting",
    route("PUT", "/_revs_limit"): "changes a database setting: staff only",
    route("POST", "/_compact"): "drops unreachable bodies, answers counts: staff only",
    route("GET", "/_conflict_policy"): "a database setting",
    route("PUT", "/_conflict_policy"): "changes a database setting: admins only",
    route("GET", "/_security"): "the access mode of the database",
}


def ids(rows: Iterable[Row]) -> list[str]:
    return [row.id for row in rows]


def test_the_matrix_covers_every_database_route() -> None:
    known = {(method, path) for method, path, _ in ROUTES}
    covered = {r for row in ROWS for r in row.routes}
    assert covered <= known, covered - known
    assert set(NON_DOCUMENT) <= known, set(NON_DOCUMENT) - known
    assert not covered & set(NON_DOCUMENT)
    database_routes = {(m, p) for m, p in known if "{db" in p}
    missing = database_routes - covered - set(NON_DOCUMENT)
    assert not missing, f"add these routes to the access matrix: {sorted(missing)}"
    assert len(set(ids(ROWS))) == len(ROWS), "row ids must be unique"


# -- owned database, inspector: nothing of bob's, not even whether it exists -----------------


@pytest.mark.parametrize("row", LOOKUPS, ids=ids(LOOKUPS))
async def test_owned_an_inspector_cannot_tell_another_owners_document_from_a_missing_one(
    row: Row, couches: dict[str, Couch]
) -> None:
    world = await build("owned", couches)
    alice = couches["alice"]
    theirs = await send(alice, row.call, world.subst(row.target))
    missing = await send(alice, row.call, world.twin_subst(row.target))
    assert theirs.status < 500, theirs
    assert normalized(theirs, world.targets[row.target].id) == normalized(
        missing, TWINS[row.target]
    )


@pytest.mark.parametrize("row", LISTINGS, ids=ids(LISTINGS))
async def test_owned_an_inspector_lists_only_her_own_documents(
    row: Row, couches: dict[str, Couch]
) -> None:
    world = await build("owned", couches)
    alice = couches["alice"]
    seen = await send(alice, row.call, world.subst("doc"))
    assert seen.status == 200, seen
    assert [s for s in world.secrets if s in seen.body] == []
    if row.own:
        assert b"a-note" in seen.body
    await world.owner_writes_more()
    again = await send(alice, row.call, world.subst("doc"))
    assert seqless(again) == seqless(seen)


@pytest.mark.parametrize("row", WRITES, ids=ids(WRITES))
async def test_owned_an_inspector_cannot_change_or_probe_another_owners_document(
    row: Row, couches: dict[str, Couch]
) -> None:
    world = await build("owned", couches)
    alice = couches["alice"]
    before = await world.snapshot()
    subst = world.subst(row.target, row.rev)
    theirs = await send(alice, row.call, subst)
    assert await world.snapshot() == before, "bob's documents changed"
    assert theirs.status < 500, theirs
    if row.twin:
        missing = await send(alice, row.call, world.twin_subst(row.target, row.rev))
        assert normalized(theirs, world.targets[row.target].id) == normalized(
            missing, TWINS[row.target]
        )
    else:  # the id is taken in this database: a per-document conflict that reveals nothing
        assert is_refused_as_taken(theirs), theirs
        sent = request_bytes(row.call, subst)
        assert [s for s in world.secrets if s in theirs.body and s not in sent] == []


# -- who may see and change bob's documents --------------------------------------------------

READERS = [("owned", "manager"), ("owned", "admin"), ("shared", "alice"), ("readonly", "alice")]
WRITERS = [("owned", "manager"), ("owned", "admin"), ("shared", "alice"), ("readonly", "manager")]


def who(pairs: list[tuple[str, str]]) -> list[str]:
    return [f"{mode}-{user}" for mode, user in pairs]


@pytest.mark.parametrize(("mode", "user"), READERS, ids=who(READERS))
@pytest.mark.parametrize("row", LOOKUPS, ids=ids(LOOKUPS))
async def test_readers_see_every_document(
    row: Row, mode: str, user: str, couches: dict[str, Couch]
) -> None:
    world = await build(mode, couches)
    reader = couches[user]
    theirs = await send(reader, row.call, world.subst(row.target))
    missing = await send(reader, row.call, world.twin_subst(row.target))
    seen, not_there = (
        normalized(theirs, world.targets[row.target].id),
        normalized(missing, TWINS[row.target]),
    )
    if row.target == "local":  # checkpoints are private to their user, whatever the role
        assert seen == not_there
    else:  # a deleted document is "deleted" to those who may see it, not "missing"
        deleted = theirs.status == 404 and orjson.loads(theirs.body)["reason"] == "deleted"
        assert theirs.status < 400 or deleted, theirs
        assert seen != not_there


@pytest.mark.parametrize(("mode", "user"), READERS, ids=who(READERS))
@pytest.mark.parametrize("row", LISTINGS, ids=ids(LISTINGS))
async def test_readers_list_every_document(
    row: Row, mode: str, user: str, couches: dict[str, Couch]
) -> None:
    world = await build(mode, couches)
    seen = await send(couches[user], row.call, world.subst("doc"))
    assert seen.status == 200, seen
    assert row.reveals in seen.body


async def _private_write_is_the_twins(world: World, caller: Couch, row: Row) -> None:
    """A write to bob's ``_local`` id: the caller's own checkpoint, as for any other id."""
    before = await world.snapshot()
    theirs = await send(caller, row.call, world.subst(row.target, row.rev))
    assert await world.snapshot() == before
    missing = await send(caller, row.call, world.twin_subst(row.target, row.rev))
    assert theirs.status < 500
    assert normalized(theirs, world.targets[row.target].id) == normalized(
        missing, TWINS[row.target]
    )


@pytest.mark.parametrize(("mode", "user"), WRITERS, ids=who(WRITERS))
@pytest.mark.parametrize("row", WRITES, ids=ids(WRITES))
async def test_writers_change_every_document(
    row: Row, mode: str, user: str, couches: dict[str, Couch]
) -> None:
    world = await build(mode, couches)
    writer = couches[user]
    if row.target == "local":
        await _private_write_is_the_twins(world, writer, row)
        return
    before = await world.snapshot()
    answer = await send(writer, row.call, world.subst(row.target, "current"))
    assert succeeded(answer), answer
    assert (await world.snapshot())[row.target] != before[row.target]


@pytest.mark.parametrize("row", WRITES, ids=ids(WRITES))
async def test_readonly_every_write_by_an_inspector_is_forbidden(
    row: Row, couches: dict[str, Couch]
) -> None:
    world = await build("readonly", couches)
    alice = couches["alice"]
    if row.target == "local":  # a pull replication keeps its checkpoint on the source too
        await _private_write_is_the_twins(world, alice, row)
        return
    before = await world.snapshot()
    answer = await send(alice, row.call, world.subst(row.target, row.rev))
    assert answer.status == 403, answer
    assert orjson.loads(answer.body)["error"] == "forbidden"
    assert await world.snapshot() == before
    missing = await send(alice, row.call, world.twin_subst(row.target, row.rev))
    assert missing.status == 403, missing


# -- routes that reveal no document ----------------------------------------------------------

NON_DOCUMENT_CALLS: dict[tuple[str, str], tuple[Call, int]] = {
    route("PUT"): (Call("PUT", "/{db}x"), 403),
    route("DELETE"): (Call("DELETE", "/{db}"), 403),
    route("POST", "/_ensure_full_commit"): (Call("POST", "/{db}/_ensure_full_commit"), 201),
    route("GET", "/_revs_limit"): (Call("GET", "/{db}/_revs_limit"), 200),
    route("PUT", "/_revs_limit"): (Call("PUT", "/{db}/_revs_limit", body=5), 403),
    route("POST", "/_compact"): (Call("POST", "/{db}/_compact"), 403),
    route("GET", "/_conflict_policy"): (Call("GET", "/{db}/_conflict_policy"), 200),
    route("PUT", "/_conflict_policy"): (Call("PUT", "/{db}/_conflict_policy", body="merge"), 403),
    route("GET", "/_security"): (Call("GET", "/{db}/_security"), 200),
}


@pytest.mark.parametrize(
    "key", list(NON_DOCUMENT), ids=[f"{m}-{p.removeprefix(DB) or '/'}" for m, p in NON_DOCUMENT]
)
async def test_routes_without_documents_reveal_nothing_to_an_inspector(
    key: tuple[str, str], couches: dict[str, Couch]
) -> None:
    assert set(NON_DOCUMENT_CALLS) == set(NON_DOCUMENT)
    world = await build("owned", couches)
    call, status = NON_DOCUMENT_CALLS[key]
    answer = await send(couches["alice"], call, world.subst("doc"))
    assert answer.status == status, answer
    assert [s for s in world.secrets if s in answer.body] == []


# -- the owner restriction is part of the SQL, not a filter after the LIMIT ------------------


async def test_owner_filtering_happens_in_sql_before_the_limit(
    couches: dict[str, Couch], engine: AsyncEngine
) -> None:
    admin, alice, bob = couches["admin"], couches["alice"], couches["bob"]
    await admin.put("/own?access_mode=owned")
    bobs = [{"_id": f"0-bob-{i:03}", "secret": SECRET} for i in range(60)]
    await bob.post("/own/_bulk_docs", {"docs": bobs}, expected_status=201)
    await alice.put("/own/z-alice", {"mine": True})
    await bob.post(
        "/own/_bulk_docs",
        {"docs": [{"_id": f"1-bob-{i:03}"} for i in range(60)]},
        expected_status=201,
    )

    changes = await alice.get("/own/_changes", params={"limit": "1"})
    assert [r["id"] for r in changes["results"]] == ["z-alice"]
    newest = await alice.get("/own/_changes", params={"limit": "1", "descending": "true"})
    assert [r["id"] for r in newest["results"]] == ["z-alice"]
    listed = await alice.get("/own/_all_docs", params={"limit": "1"})
    assert [r["id"] for r in listed["rows"]] == ["z-alice"] and listed["total_rows"] == 1
    assert (await alice.get("/own"))["doc_count"] == 1

    async with engine.connect() as conn:
        db = await get_database(conn, "own")
        alice_id = (
            await conn.execute(select(users_table.c.id).where(users_table.c.name == "alice"))
        ).scalar_one()
        rows = await read_changes(
            conn, db.id, since=0, upto=db.update_seq, limit=1, owner_id=alice_id
        )
        assert [r.doc_id for r in rows] == ["z-alice"]
        ranged = await all_docs_range(conn, db.id, AllDocsQuery(limit=1), alice_id)
        assert [r.doc_id for r in ranged] == ["z-alice"]
        assert await count_rows(conn, db.id, alice_id) == 1
        found = await get_doc_rows(conn, db.id, ["0-bob-000", "z-alice"], alice_id)
        assert list(found) == ["z-alice"]
