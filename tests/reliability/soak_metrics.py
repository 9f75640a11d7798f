"""Figures for the soak test: percentiles, a gateway's ``/metrics`` read back, process and
PostgreSQL counters."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

BULK_DOCS = ("POST", "/{db}/_bulk_docs")


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Scrape:
    """What one ``GET /metrics`` said: answers by status class, one route's latency
    histogram (cumulative counts per upper bound), and the pool gauges."""

    statuses: dict[str, float] = field(default_factory=dict)  # "2xx" -> count
    others: dict[str, float] = field(default_factory=dict)  # "404 GET /{db}" -> count, not 2xx
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    pool_checked_out: float = 0.0
    pool_overflow: float = 0.0

    def quantile_bound(self, q: float) -> float | None:
        """The histogram's upper bound (seconds) under which ``q`` of the requests fell."""
        total = self.buckets.get(math.inf, 0.0)
        if not total:
            return None
        for le in sorted(self.buckets):
            if self.buckets[le] >= q * total:
                return le
        return math.inf


async def scrape(
    session: aiohttp.ClientSession, url: str, route: tuple[str, str] = BULK_DOCS
) -> Scrape:
    async with session.get(f"{url}/metrics") as resp:
        assert resp.status == 200, resp.status
        body = await resp.text()
    out = Scrape()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "gateway_http_requests_total":
                kind = labels["status"][0] + "xx"
                out.statuses[kind] = out.statuses.get(kind, 0.0) + sample.value
                if kind != "2xx" and sample.value:
                    what = f"{labels['status']} {labels['method']} {labels['route']}"
                    out.others[what] = out.others.get(what, 0.0) + sample.value
            elif (
                sample.name == "gateway_http_request_duration_seconds_bucket"
                and (labels.get("method"), labels.get("route")) == route
            ):
                out.buckets[float(labels["le"])] = sample.value
            elif sample.name == "gateway_db_pool_checked_out":
                out.pool_checked_out = sample.value
            elif sample.name == "gateway_db_pool_overflow":
                out.pool_overflow = sample.value
    return out


def merged_buckets(scrapes: list[Scrape]) -> Scrape:
    """The instances' histograms summed (as Prometheus would across targets)."""
    out = Scrape()
    for one in scrapes:
        for le, count in one.buckets.items():
            out.buckets[le] = out.buckets.get(le, 0.0) + count
        for kind, count in one.statuses.items():
            out.statuses[kind] = out.statuses.get(kind, 0.0) + count
        for what, count in one.others.items():
            out.others[what] = out.others.get(what, 0.0) + count
    return out


async def deadlocks(engine: AsyncEngine) -> int:
    """PostgreSQL's ``pg_stat_database.deadlocks`` for the engine's database (a fresh
    statistics snapshot)."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        value = (
            await conn.execute(
                text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            )
        ).scalar_one()
    return int(value)


@dataclass
class LogSummary:
    """What one gateway's log says: its lines, those that report a failure (ERROR or above,
    or a request the database could not serve), and each ``POST /{db}/_bulk_docs``'s
    duration from the access lines (the server's own latency, without the client's)."""

    lines: int = 0
    bad: list[str] = field(default_factory=list)
    bulk_docs_ms: list[float] = field(default_factory=list)


def read_log(path: Path) -> LogSummary:
    out = LogSummary()
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        out.lines += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            if line.startswith(("Traceback", "ERROR")):
                out.bad.append(line[:300])
            continue
        if not isinstance(record, dict):
            continue
        msg = str(record.get("msg", ""))
        if record.get("level") in ("ERROR", "CRITICAL") or "unavailable" in msg:
            out.bad.append(f"{record.get('level')} {msg[:300]}")
        if (record.get("method"), record.get("route")) == BULK_DOCS:
            out.bulk_docs_ms.append(float(record["duration_ms"]))
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
