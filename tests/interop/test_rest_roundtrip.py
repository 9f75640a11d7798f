"""A REST write is visible to a PouchDB pull and the reverse, with ``version`` equal to the
revision generation."""

from __future__ import annotations

from tests.interop.conftest import LiveGateway


async def test_rest_and_pouchdb_edit_the_same_inspection(live_gateway: LiveGateway) -> None:
    alice = live_gateway.couch("alice")
    made = await alice.post(
        "/api/v1/inspections", {"title": "Roof", "site": "North", "responses": {"q1": "ok"}},
        expected_status=201,
    )  # fmt: skip
    v2 = await alice.request(
        "PATCH", f"/api/v1/inspections/{made['id']}", {"version": 1, "site": "North wing"}
    )
    node = await live_gateway.start_node(
        "rest_roundtrip.js", made["id"], env={"GATEWAY_DB_URL": live_gateway.db_url("inspections")}
    )
    pulled = (await node.read_json_line())["doc"]  # what REST wrote, as PouchDB sees it
    assert pulled["_rev"] == v2["rev"] and int(pulled["_rev"].split("-")[0]) == v2["version"]
    assert (pulled["title"], pulled["site"], pulled["inspector"]) == ("Roof", "North wing",
                                                                     "alice")  # fmt: skip
    result = await node.result()
    assert result["push"]["ok"] is True and result["push"]["docs_written"] == 1
    local_doc = result["doc"]
    assert local_doc["_rev"].startswith("3-") and local_doc["title"] == "edited offline"

    now = await alice.get(f"/api/v1/inspections/{made['id']}")
    assert now["version"] == 3 and now["rev"] == local_doc["_rev"]
    assert (now["title"], now["site"], now["status"]) == ("edited offline", "North wing",
                                                         "submitted")  # fmt: skip
    assert now["responses"] == {"q1": "ok"} and v2["version"] == 2
    listed = await alice.get("/api/v1/inspections", params={"status": "submitted"})
    assert [i["id"] for i in listed["results"]] == [made["id"]]
