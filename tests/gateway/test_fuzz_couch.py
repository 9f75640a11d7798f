"""Property-based fuzzing of the CouchDB routes (Hypothesis).

Generated document ids, revisions, bodies, attachments and query strings go to every route a
replicator uses: document PUT/GET/DELETE, ``_bulk_docs`` (both ``new_edits`` modes),
``_bulk_get``, ``_revs_diff``, ``_all_docs``, ``_changes``, ``_local`` and standalone
attachments.  For every example:

- the answer is never a 5xx and never hangs (each request has a deadline); an error is
  CouchDB-shaped (``{"error", "reason"}``, rows of a batch too);
- a refused request leaves the database exactly as it was (seq, counts, changes feed), and a
  read never changes it;
- what a write accepts is stored: the revision it names can be read back with the members
  that were sent, and a batch writes only its accepted rows.

The runs are repeatable (``derandomize``, no example database) and bounded (``max_examples``)
so CI stays within its budget.  The database persists across a test's examples, so later
examples meet the documents earlier ones wrote.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.gateway.hostile import (
    Answer,
    assert_error,
    assert_row_error,
    assert_sane,
    db_state,
    encode,
    send,
)

FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies --------------------------------------------------------------------------

TEXT = st.text(max_size=12)
ID_PIECES = st.sampled_from(
    ["a", "doc", "_design/", "_local/", "_", "/", "%2F", "..", ".", "caf\u00e9", "cafe\u0301",
     "\u0000", " ", "?", "#", "+", "&", "\U0001f600", "x" * 600]
)  # fmt: skip
DOC_IDS = st.one_of(
    st.sampled_from(["doc", "a", "b"]),
    TEXT,
    st.lists(ID_PIECES, min_size=1, max_size=3).map("".join),
)
URL_IDS = DOC_IDS.filter(bool)  # "/field/" + "" is the database itself (DELETE drops it)
HASHES = st.text(alphabet="0123456789abcdefXYZ", min_size=1, max_size=6)
VALID_REVS = st.builds(lambda n, h: f"{n}-{h}", st.integers(1, 12), HASHES)
JUNK_REVS = st.one_of(
    TEXT, st.sampled_from(["0-a", "1-", "-a", "1-a b", "01-a", "1-a\n", "1000000000000000-a"])
)
REVS = st.one_of(VALID_REVS, JUNK_REVS)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)
UNDERSCORED = st.sampled_from(["_conflicts", "_junk", "_local_seq", "_revs_info"])
MEMBER_NAMES = st.one_of(TEXT, TEXT, TEXT, UNDERSCORED)  # mostly valid: stored, then checked
BODIES = st.dictionaries(MEMBER_NAMES, JSON, max_size=4)
REVISIONS = st.one_of(
    st.builds(
        lambda start, ids: {"start": start, "ids": ids},
        st.integers(-1, 14),
        st.lists(st.one_of(HASHES, TEXT), max_size=5),
    ),
    JSON,
)
B64 = st.binary(max_size=48).map(lambda data: base64.b64encode(data).decode())
ATTACHMENT = st.one_of(
    st.fixed_dictionaries(
        {"data": B64},
        optional={
            "content_type": st.sampled_from(["text/plain", "", "x\u0000y", "image/png"]),
            "digest": st.sampled_from(["md5-AAAAAAAAAAAAAAAAAAAAAA==", "sha1-x", ""]),
        },
    ),
    st.fixed_dictionaries(
        {"stub": st.just(True)},
        optional={"digest": TEXT, "length": st.integers(-1, 10), "revpos": st.integers(-1, 3)},
    ),
    st.fixed_dictionaries({"data": TEXT}),
    JSON,
)
ATT_NAMES = st.one_of(st.sampled_from(["a.txt", "dir/b.txt", "_bad", "", "caf\u00e9"]), TEXT)
SPECIALS = st.fixed_dictionaries(
    {},
    optional={
        "_id": st.one_of(DOC_IDS, JSON),
        "_rev": st.one_of(REVS, JSON),
        "_revisions": REVISIONS,
        "_deleted": st.one_of(st.booleans(), JSON),
        "_attachments": st.one_of(st.dictionaries(ATT_NAMES, ATTACHMENT, max_size=2), JSON),
    },
)
DOCUMENTS = st.builds(
    lambda body, specials: {**body, **specials}, BODIES, st.one_of(st.just({}), SPECIALS)
)
FLAGS = st.sampled_from(["true", "false", "1", "0", "", "maybe"])
JSON_PARAMS = st.one_of(
    st.sampled_from(['"doc"', '"a"', "[]", '["doc","a"]', "null", "5", "{}", "x", "1e400",
                     '"\\u0000"', '["1-a"]', "all"]),
    JSON.map(lambda v: orjson.dumps(v).decode()),
)  # fmt: skip
INTS = st.sampled_from(["0", "1", "3", "-1", "x", "", "99999999999999999999", "2.5"])


def queries(names: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """A query string of some of ``names`` (``"?a=1&b=x"`` or ``""``)."""
    return st.fixed_dictionaries({}, optional=names).map(
        lambda found: "?" + urlencode(found) if found else ""
    )


def segment(value: str) -> str:
    """``value`` as one path segment (dots escaped: ``..`` is no dot-segment then)."""
    return quote(value, safe="").replace(".", "%2E")


def members(doc: dict[str, Any]) -> dict[str, Any]:
    """The members a document stores (underscore members are the protocol's)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def sent(doc: Any) -> Any:
    """``doc`` as the gateway parses it (orjson: the last of duplicate keys...)."""
    return orjson.loads(encode(doc))


async def field_state(client: Any) -> dict[str, Any]:
    return await db_state(client, "field")


def answered(answer: Answer) -> None:
    """Never a 5xx; a 4xx is CouchDB-shaped.  Counts each status for
    ``--hypothesis-show-statistics`` (how often each path ran)."""
    event(f"status {answer.status}")
    assert_sane(answer)


async def check_refusal_wrote_nothing(client: Any, before: dict[str, Any], answer: Answer) -> None:
    """Never a 5xx; a 4xx is CouchDB-shaped and leaves the database as it was."""
    answered(answer)
    if answer.status >= 400:
        assert await field_state(client) == before, answer.show()


# --- documents ---------------------------------------------------------------------------


@FUZZ
@given(doc_id=URL_IDS, doc=DOCUMENTS, query=queries({"rev": REVS}), new_edits=FLAGS)
async def test_put_doc_stores_what_it_accepts_and_nothing_else(
    client, db, doc_id, doc, query, new_edits
):
    """Any id, body and query: a refusal writes nothing; an accepted PUT can be read back at the
    revision it names with the members sent (new_edits=true), and moves the seq by at most one."""
    before = await field_state(client)
    flag = f"{'&' if query else '?'}new_edits={new_edits}" if new_edits != "true" else ""
    path = f"/field/{segment(doc_id)}{query}{flag}"
    answer = await send(client, "PUT", path, raw=encode(doc), encoded=True)
    await check_refusal_wrote_nothing(client, before, answer)
    if answer.status != 201:
        return
    made = answer.json()
    got = await send(
        client, "GET", f"/field/{segment(made['id'])}?rev={quote(made['rev'])}", encoded=True
    )
    assert got.status == 200, got.show()
    if new_edits not in ("false", "0"):  # (a replicated revision already known is kept as is)
        assert members(got.json()) == members(sent(doc))
    after = await field_state(client)
    assert after["field"]["seq"] - before["field"]["seq"] in (0, 1)


@FUZZ
@given(
    doc_id=URL_IDS,
    query=queries(
        {"rev": REVS, "revs": FLAGS, "revs_info": FLAGS, "open_revs": JSON_PARAMS,
         "latest": FLAGS, "conflicts": FLAGS, "deleted_conflicts": FLAGS, "meta": FLAGS,
         "attachments": FLAGS, "atts_since": JSON_PARAMS, "local_seq": FLAGS}
    ),
    accept=st.sampled_from(["application/json", "multipart/mixed", "*/*"]),
)  # fmt: skip
async def test_get_doc_with_any_query_is_answered_and_reads_only(client, db, doc_id, query, accept):
    """Any id, query and Accept: never a 5xx, and a read never changes the database."""
    await send(client, "PUT", "/field/doc", {"v": 1})
    before = await field_state(client)
    answer = await send(
        client, "GET", f"/field/{segment(doc_id)}{query}", headers={"Accept": accept}, encoded=True
    )
    answered(answer)
    assert await field_state(client) == before


@FUZZ
@given(doc_id=URL_IDS, rev=st.one_of(REVS, st.none()), edits=st.integers(0, 2))
async def test_delete_doc_writes_a_tombstone_or_nothing(client, db, doc_id, rev, edits):
    """Any id and rev: a refused DELETE writes nothing; an accepted one names a tombstone
    revision, and deleting the winner makes the document read as deleted."""
    current = None
    for number in range(edits):  # the document exists (with 1 or 2 revisions) or not
        made = await send(
            client, "PUT", f"/field/{segment(doc_id)}", {"n": number, "_rev": current}
        )
        current = made.json().get("rev") if made.status == 201 else current
    wanted = current if rev is None else rev
    winner = await send(client, "GET", f"/field/{segment(doc_id)}", encoded=True)
    before = await field_state(client)
    query = f"?rev={quote(wanted)}" if wanted else ""
    answer = await send(client, "DELETE", f"/field/{segment(doc_id)}{query}", encoded=True)
    await check_refusal_wrote_nothing(client, before, answer)
    if answer.status != 200:
        return
    # The revision it names is a tombstone: a new one, or (a repeated delete of a superseded
    # revision: deterministic revisions make retries idempotent) the one made first.
    rev = quote(answer.json()["rev"])
    tombstone = await send(client, "GET", f"/field/{segment(doc_id)}?rev={rev}", encoded=True)
    assert tombstone.json().get("_deleted") is True, tombstone.show()
    if winner.status == 200 and winner.json()["_rev"] == wanted:  # the winner was deleted
        gone = await send(client, "GET", f"/field/{segment(doc_id)}", encoded=True)
        assert_error(gone, 404)


# --- _bulk_docs --------------------------------------------------------------------------

BULK_ENTRIES = st.one_of(DOCUMENTS, DOCUMENTS, DOCUMENTS, JSON)


@FUZZ
@given(docs=st.lists(BULK_ENTRIES, max_size=6), new_edits=st.one_of(st.booleans(), JSON))
async def test_bulk_docs_writes_exactly_its_accepted_rows(client, db, docs, new_edits):
    """Any batch in either mode: every row is ok or CouchDB-shaped, every accepted revision is
    readable, and only accepted documents appear in the changes feed."""
    before = await field_state(client)
    body = {"docs": docs} if new_edits is None else {"docs": docs, "new_edits": new_edits}
    answer = await send(client, "POST", "/field/_bulk_docs", body)
    await check_refusal_wrote_nothing(client, before, answer)
    if answer.status != 201:
        return
    rows = answer.json()
    accepted = set()
    for row in rows:
        if "error" in row:
            assert_row_error(row)
        else:
            assert row["ok"] is True and isinstance(row["rev"], str), row
            accepted.add((row["id"], row["rev"]))
    if new_edits is not False:
        assert len(rows) == len(docs)
    else:
        refused = {r.get("id") for r in rows}
        for doc in map(sent, docs):  # a replicated revision that was not refused is stored
            if (
                isinstance(doc, dict)
                and isinstance(doc.get("_id"), str)
                and doc["_id"] not in refused
                and isinstance(doc.get("_rev"), str)
            ):
                accepted.add((doc["_id"], doc["_rev"]))
    for doc_id, rev in accepted:
        got = await send(client, "GET", f"/field/{segment(doc_id)}?rev={quote(rev)}", encoded=True)
        assert got.status == 200, (doc_id, rev, got.show())
    after = await field_state(client)
    changed = {i for i, _ in after["field"]["changes"]} - {i for i, _ in before["field"]["changes"]}
    assert changed <= {doc_id for doc_id, _ in accepted}
    assert after["field"]["seq"] - before["field"]["seq"] <= len(accepted)


# --- reads: _bulk_get, _revs_diff, _all_docs, _changes -----------------------------------

BULK_GET_ITEMS = st.one_of(
    st.fixed_dictionaries(
        {"id": DOC_IDS},
        optional={"rev": REVS, "atts_since": st.one_of(st.lists(REVS, max_size=2), JSON)},
    ),
    JSON,
)


@FUZZ
@given(
    items=st.one_of(st.lists(BULK_GET_ITEMS, max_size=5), JSON),
    query=queries({"revs": FLAGS, "latest": FLAGS, "attachments": FLAGS}),
)
async def test_bulk_get_answers_one_result_per_request_and_reads_only(client, db, items, query):
    """Any _bulk_get: one result per entry (a malformed entry is an error of its own, as in
    CouchDB), each doc entry an ok or an error, and nothing changes."""
    await send(client, "PUT", "/field/doc", {"v": 1})
    before = await field_state(client)
    answer = await send(client, "POST", f"/field/_bulk_get{query}", {"docs": items})
    answered(answer)
    if answer.status == 200:
        results = answer.json()["results"]
        named = [i.get("id") if isinstance(i, dict) else None for i in items]
        assert [r["id"] for r in results] == [n if isinstance(n, str) else None for n in named]
        for result in results:
            for entry in result["docs"]:
                assert set(entry) <= {"ok", "error"} and len(entry) == 1, entry
    assert await field_state(client) == before


@FUZZ
@given(
    wanted=st.one_of(
        st.dictionaries(DOC_IDS, st.one_of(st.lists(REVS, max_size=4), JSON), max_size=4), JSON
    )
)
async def test_revs_diff_reports_only_requested_revisions_and_reads_only(client, db, wanted):
    """Any _revs_diff: only ids and revisions that were asked about are reported missing, and
    nothing changes."""
    await send(client, "PUT", "/field/doc", {"v": 1})
    before = await field_state(client)
    answer = await send(client, "POST", "/field/_revs_diff", wanted)
    answered(answer)
    if answer.status == 200:
        for doc_id, diff in answer.json().items():
            assert set(diff["missing"]) <= set(wanted[doc_id]), (doc_id, diff)
    assert await field_state(client) == before


ALL_DOCS_QUERY = queries(
    {"key": JSON_PARAMS, "keys": JSON_PARAMS, "startkey": JSON_PARAMS, "endkey": JSON_PARAMS,
     "start_key": JSON_PARAMS, "endkey_docid": JSON_PARAMS, "inclusive_end": FLAGS,
     "descending": FLAGS, "skip": INTS, "limit": INTS, "include_docs": FLAGS,
     "conflicts": FLAGS, "update_seq": FLAGS, "attachments": FLAGS}
)  # fmt: skip


@FUZZ
@given(query=ALL_DOCS_QUERY, keys=st.one_of(st.none(), st.lists(DOC_IDS, max_size=4), JSON))
async def test_all_docs_with_any_query_is_answered_and_reads_only(client, db, query, keys):
    """Any _all_docs query (GET and POST keys): a 200 has rows and total_rows, an error is
    CouchDB-shaped, nothing changes."""
    await send(client, "PUT", "/field/doc", {"v": 1})
    before = await field_state(client)
    answers = [await send(client, "GET", f"/field/_all_docs{query}")]
    if keys is not None:
        answers.append(await send(client, "POST", f"/field/_all_docs{query}", {"keys": keys}))
    for answer in answers:
        answered(answer)
        if answer.status == 200:
            body = answer.json()
            assert isinstance(body["rows"], list) and isinstance(body["total_rows"], int)
    assert await field_state(client) == before


CHANGES_QUERY = queries(
    {"feed": st.sampled_from(["normal", "longpoll", "continuous", "eventsource", "x"]),
     "since": st.sampled_from(["0", "now", "-1", "1-x", "abc", "5", "99999999999999999999"]),
     "limit": INTS, "descending": FLAGS, "include_docs": FLAGS, "conflicts": FLAGS,
     "attachments": FLAGS, "style": st.sampled_from(["all_docs", "main_only", "x"]),
     "heartbeat": st.sampled_from(["true", "false", "1", "x", "0"]),
     "seq_interval": INTS, "doc_ids": JSON_PARAMS, "selector": JSON_PARAMS,
     "filter": st.sampled_from(["_doc_ids", "_selector", "_design", "_view", "app/f"])}
)  # fmt: skip


@FUZZ
@given(
    query=CHANGES_QUERY,
    wait=st.sampled_from(["0", "5", "x", "-1"]),
    body=st.one_of(
        st.none(),
        st.fixed_dictionaries({}, optional={"doc_ids": JSON, "selector": JSON, "since": JSON}),
    ),
)
async def test_changes_with_any_query_is_answered_promptly_and_reads_only(
    client, db, query, wait, body
):
    """Every feed gets a short ``timeout`` (waiting feeds end by themselves), so a hang is a
    bug the request deadline catches."""
    await send(client, "PUT", "/field/doc", {"v": 1})
    before = await field_state(client)
    path = f"/field/_changes{query}{'&' if query else '?'}timeout={wait}"
    answer = await send(client, "GET" if body is None else "POST", path, body)
    answered(answer)
    assert await field_state(client) == before


# --- _local and attachments --------------------------------------------------------------


@FUZZ
@given(
    local_id=URL_IDS,
    body=st.one_of(BODIES, DOCUMENTS, JSON),
    rev=st.one_of(
        st.none(),
        st.sampled_from(
            ["0-1", "0-2", "1-a", "x", "0-0", "0-99999999999999999999", "0-\u00b2", "0-2147483648"]
        ),
    ),
)
async def test_local_docs_store_what_they_accept(client, db, local_id, body, rev):
    """Any _local id, body and rev: an accepted checkpoint reads back as sent at the revision
    given and deletes cleanly; no _local write touches the database's seq."""
    path = f"/field/_local/{segment(local_id)}"
    query = f"?rev={quote(rev)}" if rev is not None else ""
    before = await field_state(client)
    answer = await send(client, "PUT", path + query, raw=encode(body), encoded=True)
    answered(answer)
    assert await field_state(client) == before  # checkpoints are not documents: no seq
    if answer.status == 201:
        got = await send(client, "GET", path, encoded=True)
        assert got.status == 200, got.show()
        assert members(got.json()) == members(sent(body))
        assert got.json()["_rev"] == answer.json()["rev"]
        deleted = await send(client, "DELETE", f"{path}?rev={answer.json()['rev']}", encoded=True)
        assert deleted.status == 200, deleted.show()
        assert_error(await send(client, "GET", path, encoded=True), 404)


@FUZZ
@given(
    doc_id=URL_IDS,
    name=ATT_NAMES,
    data=st.binary(max_size=256),
    content_type=st.sampled_from(["text/plain", "application/octet-stream", "image/png; q=1", "x"]),
    with_rev=st.booleans(),
)
async def test_standalone_attachments_store_the_exact_bytes(
    client, db, doc_id, name, data, content_type, with_rev
):
    """Any document, attachment name, bytes and type: an accepted attachment is readable byte for
    byte at the revision it names, and deleting it from the winner removes it."""
    query = ""
    if with_rev:
        made = await send(client, "PUT", f"/field/{segment(doc_id)}", {"v": 1}, encoded=True)
        current = await send(client, "GET", f"/field/{segment(doc_id)}", encoded=True)
        if made.status == 201 or current.status == 200:
            query = f"?rev={quote(current.json()['_rev'])}"
    path = f"/field/{segment(doc_id)}/{segment(name)}"
    before = await field_state(client)
    answer = await send(client, "PUT", path + query, raw=data, ctype=content_type, encoded=True)
    await check_refusal_wrote_nothing(client, before, answer)
    if answer.status != 201:
        return
    # The revision it names holds the bytes (a repeated edit names the revision it made first,
    # which later edits may have superseded: deterministic revisions make retries idempotent).
    rev = quote(answer.json()["rev"])
    got = await send(client, "GET", f"{path}?rev={rev}", encoded=True)
    assert got.status == 200 and got.raw == data, got.show()
    winner = await send(client, "GET", f"/field/{segment(doc_id)}", encoded=True)
    if winner.status == 200 and winner.json()["_rev"] == answer.json()["rev"]:
        removed = await send(client, "DELETE", f"{path}?rev={rev}", encoded=True)
        assert removed.status == 200, removed.show()
        assert_error(await send(client, "GET", path, encoded=True), 404)
