async def test_welcome_needs_no_auth(anon):
    body = await anon.get("/")
    assert body["couchdb"] == "Welcome"


async def test_put_get_update_delete_doc(alice, db):
    r = await alice.put(f"/{db}/doc1", {"title": "a"})
    assert r["ok"] and r["rev"].startswith("1-")
    doc = await alice.get(f"/{db}/doc1")
    assert doc == {"_id": "doc1", "_rev": r["rev"], "title": "a"}
    r2 = await alice.put(f"/{db}/doc1", {"title": "b", "_rev": r["rev"]})
    assert r2["rev"].startswith("2-")
    await alice.put(f"/{db}/doc1", {"title": "c", "_rev": r["rev"]}, expected_status=409)
    await alice.delete(f"/{db}/doc1?rev={r2['rev']}")
    await alice.get(f"/{db}/doc1", expected_status=404)
    changes = await alice.get(f"/{db}/_changes?style=all_docs")
    assert changes["results"][0]["deleted"] is True
    assert changes["last_seq"] == 3


async def test_a_nul_in_basic_credentials_is_a_clean_401(client, db):
    import base64

    token = base64.b64encode(b"ad\x00min:pw").decode()
    resp = await client.get(f"/{db}", headers={"Authorization": f"Basic {token}"})
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"


async def test_head_on_the_welcome_route_needs_no_auth(anon):
    async with anon.client.head("/") as resp:
        assert resp.status == 200


async def test_a_refused_new_document_row_carries_no_null_rev(alice, db):
    rows = await alice.post(
        f"/{db}/_bulk_docs",
        {"docs": [{"_id": "x", "_rev": "1-abc"}, {"_id": "_bad"}]},
        expected_status=201,
    )
    assert rows[0] == {
        "id": "x",
        "error": "conflict",
        "reason": "Document update conflict.",
        "rev": "1-abc",
    }
    assert "rev" not in rows[1] and rows[1]["error"] == "bad_request"
