"""``open_revs`` answered as ``multipart/mixed`` for CouchDB's own replicator."""

from __future__ import annotations

import orjson
from aiohttp import MultipartReader

from tests.helpers import Couch, basic


async def test_open_revs_is_multipart_mixed_when_only_multipart_is_accepted(
    alice: Couch, db: str
) -> None:
    first = await alice.put(f"/{db}/doc", {"v": 1})
    headers = {"Authorization": basic("alice"), "Accept": "multipart/mixed"}
    path = f'/{db}/doc?open_revs=["{first["rev"]}","9-missing"]&revs=true'
    async with alice.client.get(path, headers=headers) as resp:
        assert resp.status == 200
        assert resp.content_type == "multipart/mixed"
        reader = MultipartReader.from_response(resp)
        parts = []
        while (part := await reader.next()) is not None:
            assert part.headers["Content-Type"] == "application/json"
            parts.append(orjson.loads(await part.read()))
    assert parts[0]["_id"] == "doc" and parts[0]["v"] == 1 and parts[0]["_revisions"]["start"] == 1
    assert parts[1] == {"missing": "9-missing"}


async def test_open_revs_stays_json_when_json_is_accepted(alice: Couch, db: str) -> None:
    first = await alice.put(f"/{db}/doc", {"v": 1})
    found = await alice.get(
        f'/{db}/doc?open_revs=["{first["rev"]}"]',
        headers={"Accept": "multipart/mixed, application/json"},
    )
    assert found == [{"ok": {"_id": "doc", "_rev": first["rev"], "v": 1}}]
