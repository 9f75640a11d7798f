"""A field app's REST sync queue: ``POST /api/v1/sync/batch`` with an ``Idempotency-Key``,
retried with the same key and body until it gets an answer, whatever happens to the gateway
in between (connection refused or cut by a kill, 503, ``409 request_in_progress``, 429).

Each batch creates inspections (without an id, so a second application would make a second
document, and one with a client-chosen id), updates some earlier ones at the version the
client last saw and deletes one, so a batch applied twice shows: an extra document, or a
stale ``version`` (409 and a ConflictRecord).  The client keeps a ledger of what the gateway
acknowledged (``expected``) and every answer it acted on (``answers``, by key), which the
test compares with the database and with replays of every key at the end.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from tests.helpers import basic

BATCH_PATH = "/api/v1/sync/batch"
RETRY_SECONDS = 0.1
KEY_DEADLINE = 60.0  # one key must get its answer within this (a blocked key fails the test)
EXPECTED_OUTCOME = {
    "create": (201, "created"),
    "update": (200, "updated"),
    "delete": (200, "deleted"),
}


@dataclass(slots=True)
class Inspection:
    """What the client believes one inspection is, from the answers it got."""

    title: str
    responses: dict[str, Any]
    version: int
    deleted: bool = False


@dataclass(slots=True)
class Answer:
    key: str
    body: dict[str, Any]  # the request
    raw: bytes  # the 207 answer acted on
    attempts: int
    waited: float  # seconds from the first attempt to the answer


@dataclass
class RestSyncClient:
    """Sends batches until ``stop`` is set; ``in_flight`` is set while a request is out."""

    url: str
    user: str
    rng: random.Random
    prefix: str
    expected: dict[str, Inspection] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    refused: int = 0  # attempts refused: the gateway was down
    interrupted: int = 0  # requests cut off mid-way: the gateway died with them
    sent: int = 0  # requests sent (each attempt counts)
    in_progress: int = 0  # 409 request_in_progress answers (a claim still held)
    unavailable: int = 0  # 503 / 429 answers
    in_flight: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": basic(self.user),
            "Content-Type": "application/json",
            "X-Device-Id": f"{self.prefix}-device",
        }

    def next_batch(self, number: int) -> dict[str, Any]:
        """Three creates without an id, one with an id, up to three updates, a delete."""
        ops: list[dict[str, Any]] = []
        for j in range(3):
            ops.append({"op": "create", "data": self._data(f"{self.prefix}-b{number}-c{j}", {})})
        ops.append(
            {
                "op": "create",
                "id": str(uuid.UUID(int=self.rng.getrandbits(128))),
                "data": self._data(f"{self.prefix}-b{number}-id", {}),
            }
        )
        live = sorted(i for i, x in self.expected.items() if not x.deleted)
        picked = self.rng.sample(live, min(len(live), 4))
        for doc_id in picked[:3]:
            known = self.expected[doc_id]
            responses = {**known.responses, f"edit{known.version}": number}
            ops.append(
                {
                    "op": "update",
                    "id": doc_id,
                    "version": known.version,
                    "data": {"responses": responses},
                }
            )
        if len(picked) == 4 and number % 2 == 1:
            ops.append(
                {"op": "delete", "id": picked[3], "version": self.expected[picked[3]].version}
            )
        return {"operations": ops}

    @staticmethod
    def _data(title: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"template_id": "tpl-crash", "title": title, "site": "crash", "responses": responses}

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Send batches one after the other until ``stop`` is set (the last one finishes)."""
        number = 0
        while not stop.is_set() and not self.failures:
            body = self.next_batch(number)
            key = f"{self.prefix}-batch-{number}"
            answer = await self.send_until_answered(session, key, body)
            if answer is not None:
                self.answers.append(answer)
                self.learn(body, answer)
            number += 1

    async def send_until_answered(
        self, session: aiohttp.ClientSession, key: str, body: dict[str, Any]
    ) -> Answer | None:
        """The batch's 207, retried with the same key and body (bounded by KEY_DEADLINE)."""
        data = orjson.dumps(body)
        started = time.monotonic()
        attempts = 0
        while time.monotonic() - started < KEY_DEADLINE:
            attempts += 1
            self.sent += 1
            self.in_flight.set()
            try:
                async with session.post(
                    self.url + BATCH_PATH,
                    data=data,
                    headers={**self.headers, "Idempotency-Key": key},
                ) as resp:
                    raw = await resp.read()
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
            except aiohttp.ClientConnectorError:
                self.refused += 1
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except (aiohttp.ClientError, OSError):
                self.interrupted += 1
                await asyncio.sleep(RETRY_SECONDS)
                continue
            finally:
                self.in_flight.clear()
            if status == 207:
                return Answer(key, body, raw, attempts, time.monotonic() - started)
            if status == 409 and orjson.loads(raw).get("error") == "request_in_progress":
                self.in_progress += 1
            elif status in (429, 503):
                self.unavailable += 1
            else:
                self.failures.append(f"{key}: unexpected {status} {raw[:300]!r}")
                return None
            await asyncio.sleep(min(float(retry_after or RETRY_SECONDS), 0.5))
        self.failures.append(f"{key}: no answer within {KEY_DEADLINE}s ({attempts} attempts)")
        return None

    def learn(self, body: dict[str, Any], answer: Answer) -> None:
        """Update the ledger from a 207; an operation that did not do what it asked is a
        failure (a batch applied twice would find its own writes: stale versions)."""
        results = orjson.loads(answer.raw)["results"]
        ops = body["operations"]
        if len(results) != len(ops):
            self.failures.append(f"{answer.key}: {len(results)} results for {len(ops)} ops")
            return
        for op, result in zip(ops, results, strict=True):
            status, outcome = EXPECTED_OUTCOME[op["op"]]
            if (result["status"], result["outcome"]) != (status, outcome):
                self.failures.append(f"{answer.key}: {op['op']} answered {result}")
                continue
            doc_id = result["id"]
            if op["op"] == "create":
                data = op["data"]
                if result["version"] != 1 or doc_id in self.expected:
                    self.failures.append(f"{answer.key}: created {doc_id} at {result['version']}")
                self.expected[doc_id] = Inspection(data["title"], data["responses"], 1)
            elif op["op"] == "update":
                known = self.expected[doc_id]
                if result["version"] != known.version + 1:
                    self.failures.append(f"{answer.key}: {doc_id} went to {result['version']}")
                known.responses = op["data"]["responses"]
                known.version = result["version"]
            else:
                self.expected[doc_id].deleted = True
