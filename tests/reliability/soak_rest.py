"""REST batch traffic for the soak test: field apps sending ``POST /api/v1/sync/batch``.

Each ``RestWorker`` is one user on one device: until its deadline it sends a batch of
``CREATES`` new inspections (ids chosen by the client) and ``UPDATES`` edits of inspections
it created earlier, at the version the gateway last gave it, each with a fresh
``Idempotency-Key``, through the instances in turn, paced at about one batch per ``pause``
seconds (well under the per-user and per-device write limits).  It keeps a ledger of what
the gateway acknowledged (``acked``: id -> version) and records every answer that was not
the expected success (``failures``) and the latency of each batch.  Nothing is retried: in
a soak without faults, any failure is a finding.
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
CREATES = 15
UPDATES = 5
EXPECTED = {"create": (201, "created"), "update": (200, "updated")}


@dataclass
class RestWorker:
    user: str
    urls: list[str]  # instance base URLs, used in turn
    index: int
    pause: float = 1.5
    acked: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    batches: int = 0

    def _operations(self, rng: random.Random) -> list[dict[str, Any]]:
        ops: list[dict[str, Any]] = [
            {
                "op": "create",
                "id": str(uuid.uuid4()),
                "data": {
                    "template_id": "soak",
                    "title": f"{self.user} batch {self.batches} #{n}",
                    "site": f"site {n}",
                    "responses": {"n": n},
                },
            }
            for n in range(CREATES)
        ]
        for doc_id in rng.sample(sorted(self.acked), min(UPDATES, len(self.acked))):
            ops.append(
                {
                    "op": "update",
                    "id": doc_id,
                    "version": self.acked[doc_id],
                    "data": {"title": f"{self.user} edit in batch {self.batches}"},
                }
            )
        return ops

    async def run(self, session: aiohttp.ClientSession, deadline: float) -> None:
        rng = random.Random(self.index)
        headers = {
            "Authorization": basic(self.user),
            "Content-Type": "application/json",
            "X-Device-Id": f"{self.user}-device",
        }
        while time.monotonic() < deadline:
            ops = self._operations(rng)
            url = self.urls[(self.index + self.batches) % len(self.urls)] + BATCH_PATH
            started = time.monotonic()
            try:
                async with session.post(
                    url,
                    data=orjson.dumps({"operations": ops}),
                    headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
                ) as resp:
                    status, raw = resp.status, await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failures.append(f"{url}: {type(exc).__name__}: {exc}")
                status, raw = 0, b""
            self.latencies_ms.append((time.monotonic() - started) * 1000)
            self.batches += 1
            if status == 207:
                self._record(ops, orjson.loads(raw)["results"])
            elif status:
                self.failures.append(f"{url}: {status} {raw[:300]!r}")
            pause = min(self.pause * rng.uniform(0.5, 1.5), deadline - time.monotonic())
            await asyncio.sleep(max(0.0, pause))

    def _record(self, ops: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
        if len(results) != len(ops):
            self.failures.append(f"{len(ops)} operations, {len(results)} results")
            return
        for op, result in zip(ops, results, strict=True):
            if (result["status"], result["outcome"]) != EXPECTED[op["op"]]:
                self.failures.append(f"{op['op']} {op['id']}: {result}")
                continue
            self.acked[result["id"]] = result["version"]
