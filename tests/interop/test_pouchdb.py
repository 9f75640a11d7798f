"""Real PouchDB (Node.js, in-memory adapter) replicating against a live gateway.

Each test runs one script from ``js/`` and asserts on data: what the replicas hold, the
replication statistics, and what the gateway serves over HTTP afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import PASSWORD
from tests.interop.conftest import LiveGateway

pytestmark = pytest.mark.interop


def md5_digest(data: bytes) -> str:
    return "md5-" + base64.b64encode(hashlib.md5(data).digest()).decode()


def assert_clean(stats: dict[str, Any]) -> None:
    assert stats["ok"] is True, stats
    assert stats["doc_write_failures"] == 0, stats
    assert stats["errors"] == [], stats


def without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


def expected_doc(i: int) -> dict[str, Any]:
    """The body ``push_pull.js`` generates for document ``i``."""
    return {
        "_id": f"doc{i:05d}",
        "n": i,
        "text": "x" * 100,
        "nested": {"even": i % 2 == 0, "list": [i, i * 2, str(i)], "unicode": f"Grüße ☃ {i}"},
        "nothing": None,
    }


async def test_push_then_pull_1000_docs(live_gateway: LiveGateway) -> None:
    n = 1000
    result = await live_gateway.run_node("push_pull.js", str(n))

    assert_clean(result["push"])
    assert_clean(result["pull"])
    assert result["push"]["docs_read"] == n
    assert result["push"]["docs_written"] == n
    assert result["pull"]["docs_read"] == n
    assert result["pull"]["docs_written"] == n
    assert result["a_count"] == result["b_count"] == n
    assert result["identical"] is True
    assert result["a_digest"] == result["b_digest"]
    assert [without(d, "_rev") for d in result["b_docs"]] == [expected_doc(i) for i in range(n)]

    alice = live_gateway.couch("alice")
    info = await alice.get(f"/{live_gateway.db}")
    assert info["doc_count"] == n
    assert info["doc_del_count"] == 0
    rows = (await alice.get(f"/{live_gateway.db}/_all_docs?include_docs=true"))["rows"]
    assert [row["id"] for row in rows] == [f"doc{i:05d}" for i in range(n)]
    for i, row in enumerate(rows):
        assert row["value"]["rev"] == result["revs"][row["id"]]
        assert row["doc"] == {**expected_doc(i), "_rev": result["revs"][row["id"]]}


async def test_concurrent_edits_make_a_conflict_both_replicas_agree_on(
    live_gateway: LiveGateway,
) -> None:
    result = await live_gateway.run_node("conflict.js")
    for key in ("seed", "seed_pull", "push_a", "push_b", "pull_a", "pull_b"):
        assert_clean(result[key])
    assert result["push_a"]["docs_written"] == 1
    assert result["push_b"]["docs_written"] == 1

    server = await live_gateway.couch("alice").get(f"/{live_gateway.db}/shared?conflicts=true")
    assert len(server["_conflicts"]) == 1
    server_revs = {server["_rev"], *server["_conflicts"]}
    assert all(rev.startswith("2-") for rev in server_revs)

    a, b = result["a"], result["b"]
    for replica in (a, b):
        assert replica["winner"]["_rev"] == server["_rev"]
        assert replica["winner"]["_conflicts"] == server["_conflicts"]
        assert replica["winner"] == server
    # Both branches, with their own content, are on both replicas.
    assert a["branches"] == b["branches"]
    assert set(a["branches"]) == server_revs
    titles = {branch["title"] for branch in a["branches"].values()}
    assert titles == {"edited on A", "edited on B"}
    for rev, branch in a["branches"].items():
        served = await live_gateway.couch("bob").get(f"/{live_gateway.db}/shared?rev={quote(rev)}")
        assert served == branch


async def test_delete_replicates_as_tombstone(live_gateway: LiveGateway) -> None:
    result = await live_gateway.run_node("delete.js")
    for key in ("push1", "pull1", "push2", "pull2"):
        assert_clean(result[key])
    assert result["before_b"]["v"] == 1
    assert result["push2"]["docs_written"] == 1
    assert result["pull2"]["docs_written"] == 1
    assert result["after_status"] == 404
    assert result["b_ids"] == ["keep"]
    assert result["tombstone"]["_deleted"] is True
    assert result["tombstone"]["_rev"] == result["deleted_rev"]

    alice = live_gateway.couch("alice")
    changes = await alice.get(f"/{live_gateway.db}/_changes?style=all_docs")
    by_id = {row["id"]: row for row in changes["results"]}
    assert by_id["doomed"]["deleted"] is True
    assert by_id["doomed"]["changes"] == [{"rev": result["deleted_rev"]}]
    assert not by_id["keep"].get("deleted", False)
    await alice.get(f"/{live_gateway.db}/doomed", expected_status=404)
    info = await alice.get(f"/{live_gateway.db}")
    assert (info["doc_count"], info["doc_del_count"]) == (1, 1)


async def test_second_replication_resumes_from_checkpoint(live_gateway: LiveGateway) -> None:
    n = 50
    result = await live_gateway.run_node("checkpoint.js", str(n))
    for key in ("push1", "push2", "pull1", "pull2"):
        assert_clean(result[key])
    assert (result["push1"]["docs_read"], result["push1"]["docs_written"]) == (n, n)
    assert (result["pull1"]["docs_read"], result["pull1"]["docs_written"]) == (n, n)
    assert (result["push2"]["docs_read"], result["push2"]["docs_written"]) == (0, 0)
    assert (result["pull2"]["docs_read"], result["pull2"]["docs_written"]) == (0, 0)

    assert len(result["push_local_ids"]) == 1
    assert len(result["pull_local_ids"]) == 1
    assert result["push_local_ids"] != result["pull_local_ids"]

    alice, bob = live_gateway.couch("alice"), live_gateway.couch("bob")
    checkpoints = {}
    for rep_id in result["push_local_ids"] + result["pull_local_ids"]:
        path = f"/{live_gateway.db}/_local/{quote(rep_id, safe='')}"
        doc = await alice.get(path)
        assert doc["_id"] == f"_local/{rep_id}"
        assert "last_seq" in doc and doc["session_id"]
        checkpoints[rep_id] = doc
        # Private to the user that replicated.
        await bob.get(path, expected_status=404)

    pull_cp = checkpoints[result["pull_local_ids"][0]]
    assert pull_cp["last_seq"] == result["local_checkpoint"]["last_seq"]
    # The second pull asked for changes since the checkpoint, not from the beginning ...
    assert result["pull2_changes_since"], result["pull2_requests"]
    assert result["pull2_changes_since"][0] == str(pull_cp["last_seq"])
    # ... and fetched no documents.
    fetched = [r for r in result["pull2_requests"] if "_bulk_get" in r["url"]]
    assert fetched == []

    # A replication id that starts with "_" is a valid checkpoint id.
    assert result["underscore_put"]["ok"] is True
    assert result["underscore_get"]["last_seq"] == 7
    await alice.get(f"/{live_gateway.db}/_local/{quote('_qeEqLVmaO54VsU1aNQQGg==', safe='')}")


async def test_live_replication_delivers_new_writes(live_gateway: LiveGateway) -> None:
    node = await live_gateway.start_node("live.js", "from-http")
    ready = await node.read_json_line()
    assert ready == {"ready": True, "initial": []}

    put = await live_gateway.couch("bob").put(
        f"/{live_gateway.db}/from-http", {"source": "python", "n": 1}
    )
    result = await node.result()

    assert result["from_http"] == {
        "_id": "from-http",
        "_rev": put["rev"],
        "source": "python",
        "n": 1,
    }
    assert result["from_writer"]["source"] == "second remote handle"
    assert result["from_writer"]["_rev"] == result["writer_rev"]
    assert result["complete_status"] == "cancelled"
    assert result["errors"] == []


async def test_attachments_round_trip(live_gateway: LiveGateway) -> None:
    text = "hello, attachments ✓\n" * 3
    binary = random.Random(1234).randbytes(4096)
    result = await live_gateway.run_node(
        "attachments.js",
        env={"ATT_TEXT": text, "ATT_BIN_B64": base64.b64encode(binary).decode()},
    )
    for key in ("push1", "pull1", "push2", "pull2"):
        assert_clean(result[key])
    assert result["push2"]["docs_written"] == 1
    assert result["pull2"]["docs_written"] == 1

    expected = {"note.txt": text.encode(), "blob.bin": binary}
    for name, data in expected.items():
        b64 = base64.b64encode(data).decode()
        for side in ("a", "b1", "b2"):
            att = result[side][name]
            assert att["b64"] == b64, (side, name)
            assert att["digest"] == att["md5"] == md5_digest(data), (side, name)
    assert result["b_note_b64"] == base64.b64encode(expected["note.txt"]).decode()

    # The edit kept the attachments as stubs, and so did the replicated revision.  (B's own
    # revpos is PouchDB's business: it re-saves pulled attachments at the pulled revision.)
    assert result["b_doc2"]["_rev"] == result["edit_rev"]
    assert result["b_doc2"]["title"] == "edited after the attachment"
    for name, data in expected.items():
        assert result["stubs_sent"][name]["stub"] is True
        assert result["stubs_sent"][name]["revpos"] == 1
        stub = result["b_doc2"]["_attachments"][name]
        assert stub["stub"] is True
        assert stub["digest"] == md5_digest(data)

    # The gateway serves the same bytes, digests and stubs.
    alice = live_gateway.couch("alice")
    doc = await alice.get(f"/{live_gateway.db}/withatt")
    assert doc["_rev"] == result["edit_rev"]
    for name, data in expected.items():
        stub = doc["_attachments"][name]
        assert stub["stub"] is True
        assert stub["digest"] == md5_digest(data)
        assert stub["length"] == len(data)
        assert stub["revpos"] == 1
        served = await alice.get(f"/{live_gateway.db}/withatt/{name}", headers={"Accept": "*/*"})
        assert served == data
    inline = await alice.get(f"/{live_gateway.db}/withatt?attachments=true")
    for name, data in expected.items():
        assert base64.b64decode(inline["_attachments"][name]["data"]) == data


async def test_design_doc_replicates(live_gateway: LiveGateway) -> None:
    result = await live_gateway.run_node("design.js")
    for key in ("push1", "pull1", "push2", "pull2"):
        assert_clean(result[key])
    assert result["push1"]["docs_written"] == 2
    assert result["pull1"]["docs_written"] == 2
    assert result["on_b"] == result["original"]
    assert result["on_b"]["views"]["count"]["reduce"] == "_count"
    assert result["on_a"]["_rev"] == result["edited_rev"]
    assert "extra" in result["on_a"]["views"]

    alice = live_gateway.couch("alice")
    served = await alice.get(f"/{live_gateway.db}/_design/app")
    assert served == result["on_a"]
    changes = await alice.get(f"/{live_gateway.db}/_changes")
    assert "_design/app" in {row["id"] for row in changes["results"]}


async def test_checkpoints_are_private_per_user(live_gateway: LiveGateway) -> None:
    result = await live_gateway.run_node("two_users.js", "bob", user="alice")
    a, b = result["first"], result["second"]
    assert_clean(a["push"])
    assert_clean(b["push"])
    assert (a["push"]["docs_read"], a["push"]["docs_written"]) == (10, 10)
    assert b["push"]["docs_written"] == 5
    # Bob's replicator found no checkpoint of its own, so it started from the beginning and
    # asked about all 15 documents (had it seen Alice's, it would have resumed after her 10).
    assert a["first_checkpoint_read_status"] == 404
    assert b["first_checkpoint_read_status"] == 404
    first_ids = [f"first-{i}" for i in range(10)]
    second_ids = [f"second-{i}" for i in range(5)]
    assert a["revs_diff_ids"] == sorted(first_ids)
    assert b["revs_diff_ids"] == sorted(first_ids + second_ids)
    # Same replication id for both users ...
    assert len(a["local_ids"]) == 1
    assert a["local_ids"] == b["local_ids"]
    path = f"/{live_gateway.db}/_local/{quote(a['local_ids'][0], safe='')}"
    # ... but each sees only their own checkpoint.
    as_alice = await live_gateway.couch("alice").get(path)
    as_bob = await live_gateway.couch("bob").get(path)
    assert as_alice == a["checkpoint"]
    assert as_bob == b["checkpoint"]
    assert as_alice["session_id"] != as_bob["session_id"]
    assert (as_alice["last_seq"], as_bob["last_seq"]) == (10, 15)
    await live_gateway.couch("manager").get(path, expected_status=404)

    info = await live_gateway.couch("admin").get(f"/{live_gateway.db}")
    assert info["doc_count"] == 15


async def test_bidirectional_sync_converges(live_gateway: LiveGateway) -> None:
    result = await live_gateway.run_node("sync.js", "20240611")
    for round_ in result["rounds"]:
        assert_clean(round_["push"])
        assert_clean(round_["pull"])
    assert result["a"] == result["b"]
    assert result["a_digest"] == result["b_digest"]
    # The seeded edits overlap, so the replicas converged on documents with conflicts too.
    assert any(row["doc"].get("_conflicts") for row in result["a"]), result["ops"]

    # The gateway holds the same winners, bodies and conflicts.
    rows = (
        await live_gateway.couch("alice").get(
            f"/{live_gateway.db}/_all_docs?include_docs=true&conflicts=true"
        )
    )["rows"]
    assert [(row["id"], row["value"]["rev"]) for row in rows] == [
        (row["id"], row["rev"]) for row in result["a"]
    ]
    for served, replica in zip(rows, result["a"], strict=True):
        assert without(served["doc"], "_conflicts") == without(replica["doc"], "_conflicts")
        assert set(served["doc"].get("_conflicts", [])) == set(replica["doc"].get("_conflicts", []))


async def test_pouchdb_replicates_with_a_bearer_access_token(live_gateway: LiveGateway) -> None:
    tokens = await live_gateway.couch("alice").post(
        "/api/v1/auth/login", {"username": "alice", "password": PASSWORD}
    )
    result = await live_gateway.run_node(
        "bearer.js", "20", env={"GATEWAY_TOKEN": tokens["access_token"]}
    )
    assert_clean(result["push"])
    assert_clean(result["pull"])
    assert result["push"]["docs_written"] == 20 and result["pull"]["docs_written"] == 20
    assert sorted(result["ids"]) == sorted(f"bearer-{i}" for i in range(20))
    assert 401 not in result["statuses"]


async def test_pouchdb_replicates_with_the_session_cookie(live_gateway: LiveGateway) -> None:
    result = await live_gateway.run_node("cookie.js")
    assert result["login_status"] == 200 and result["cookie_name"] == "AuthSession"
    assert_clean(result["push"])
    assert_clean(result["pull"])
    assert result["push"]["docs_written"] == 2 and result["pull"]["docs_written"] == 2
    assert sorted(result["ids"]) == ["c1", "c2"]
    assert 401 not in result["statuses"]
