"""Helpers shared by the hostile-input tests: bounded requests, the CouchDB error shape, and
a snapshot of everything a refused request must leave untouched.

Every request here has a deadline (``REQUEST_TIMEOUT``): a hang fails the test instead of
stalling the suite.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import orjson
from yarl import URL

from tests.helpers import basic

REQUEST_TIMEOUT = 60.0  # seconds; far above any answer here, only there to catch hangs


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    content_type: str
    raw: bytes

    def json(self) -> Any:
        return orjson.loads(self.raw)

    def show(self) -> str:
        return f"{self.status} {self.raw[:300]!r}"


def encode(body: Any) -> bytes:
    """JSON bytes of ``body``; integers beyond 64 bits too (orjson refuses those)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


async def send(
    client: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    user: str | None = "admin",
    ctype: str = "application/json",
    headers: dict[str, str] | None = None,
    encoded: bool = False,
) -> Answer:
    """One request as ``user`` (HTTP Basic), answered within ``REQUEST_TIMEOUT``.

    ``encoded=True`` sends ``path`` byte for byte (no normalisation of ``..`` or of escapes).
    """
    data = raw if raw is not None else (encode(body) if body is not None else None)
    sent = {"Content-Type": ctype, "Accept": "application/json", **(headers or {})}
    if user is not None:
        sent["Authorization"] = basic(user)
    target: str | URL = URL(path, encoded=True) if encoded else path

    async def run() -> Answer:
        async with client.request(method, target, data=data, headers=sent) as resp:
            return Answer(resp.status, resp.content_type, await resp.read())

    return await asyncio.wait_for(run(), REQUEST_TIMEOUT)


def assert_error(
    answer: Answer, status: int | None = None, error: str | None = None, case: object = ""
) -> None:
    """A 4xx (``status`` if given) with a CouchDB-shaped body: ``error`` and ``reason``
    strings (REST answers may add members, e.g. ``conflict_id``).  ``case`` names the input
    in the failure message."""
    shown = f"{case!r}: {answer.show()}"
    assert 400 <= answer.status < 500, shown
    if status is not None:
        assert answer.status == status, shown
    assert answer.content_type == "application/json", shown
    body = answer.json()
    assert isinstance(body, dict), shown
    assert isinstance(body.get("error"), str) and isinstance(body.get("reason"), str), shown
    if error is not None:
        assert body["error"] == error, shown


def assert_sane(answer: Answer, case: object = "") -> None:
    """Never a 5xx; a 4xx has the CouchDB error shape."""
    assert answer.status < 500, f"{case!r}: {answer.show()}"
    if answer.status >= 400:
        assert_error(answer, case=case)


def assert_row_error(row: Any, error: str | None = None) -> None:
    """A refused row of a batch: ``{"error", "reason", ...}`` with strings."""
    assert isinstance(row, dict), row
    assert isinstance(row.get("error"), str) and isinstance(row.get("reason"), str), row
    if error is not None:
        assert row["error"] == error, row


async def db_state(client: Any, *names: str) -> dict[str, Any]:
    """What any write would change: each database's seq, counts and open conflicts, and the
    ids and revisions of its changes feed."""
    out: dict[str, Any] = {}
    for name in names:
        info = (await send(client, "GET", f"/{name}")).json()
        feed = (await send(client, "GET", f"/{name}/_changes?style=all_docs")).json()
        out[name] = {
            "seq": info["update_seq"],
            "counts": (info["doc_count"], info["doc_del_count"], info.get("open_conflicts")),
            "changes": [(r["id"], [c["rev"] for c in r["changes"]]) for r in feed["results"]],
        }
    return out


DBS = ("field", "inspections")  # the shared test database and the REST one
INSPECTION = "5f0c2f4e-8a7b-4c1d-9e2f-3a4b5c6d7e8f"  # an inspection id nobody created


async def seed(admin: Any) -> dict[str, Any]:
    """One document and one checkpoint in ``field`` (which must exist); the state of every
    database in ``DBS`` afterwards."""
    await admin.put("/field/doc", {"v": 1})
    await admin.put("/field/_local/cp", {"seq": 1})
    return await db_state(admin.client, *DBS)


async def unchanged(client: Any, before: dict[str, Any], case: object = "") -> None:
    """Every database in ``before`` is exactly as it was."""
    assert await db_state(client, *before) == before, f"{case!r} wrote something"


async def refused(
    client: Any,
    before: dict[str, Any],
    answer: Answer,
    status: int | None = None,
    case: object = "",
) -> None:
    """``answer`` is a CouchDB-shaped 4xx and nothing was written."""
    assert_error(answer, status, case=case)
    await unchanged(client, before, case)
