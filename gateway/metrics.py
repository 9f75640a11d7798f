"""Prometheus metrics, one registry per application (several apps in a test never clash).

Series (``GET /metrics``, Prometheus text format 0.0.4):

* ``gateway_http_requests_total{method,route,status}`` and
  ``gateway_http_request_duration_seconds{method,route}``: ``route`` is the matched route
  pattern (``/{db}/_changes``), never the raw path, so label values stay bounded.
* ``gateway_docs_written_total{db}``: successful rows of every document write;
  ``gateway_docs_read_total{db}``: documents served by ``GET /{db}/{docid}``, ``_bulk_get``
  and ``_changes?include_docs=true``.
* ``gateway_conflicts_opened_total{db}``, ``gateway_conflicts_resolved_total{db,strategy}``:
  ConflictRecords opened (or reopened) and closed, by HTTP writes and resolutions
  (``strategy`` is ``keep_mine``, ``keep_theirs``, ``merge`` or ``replicated``).
* ``gateway_feed_listeners{feed}``: open longpoll, continuous and eventsource feeds.
* ``gateway_checkpoint_lag{db}``: the largest lag of a registered checkpoint of each
  database, read from the checkpoint registry when scraped.
* ``gateway_db_pool_size``, ``gateway_db_pool_checked_out``, ``gateway_db_pool_overflow``.

Counters are per process: with several instances, Prometheus sums them across targets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.engine import read_transaction
from schema.tables import databases, local_docs

log = logging.getLogger("gateway.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # "text/plain; version=0.0.4; charset=utf-8"
FEEDS = ("longpoll", "continuous", "eventsource")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "COPY"})
UNMATCHED = "(unmatched)"  # the route label of requests no route matched (404, 405)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """Every series of one application, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests answered, by method, route pattern and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer a request (a feed: how long it stayed open).",
            ["method", "route"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.docs_written = Counter(
            "gateway_docs_written_total", "Document revisions written.", ["db"], registry=r
        )
        self.docs_read = Counter(
            "gateway_docs_read_total", "Documents served to clients.", ["db"], registry=r
        )
        self.conflicts_opened = Counter(
            "gateway_conflicts_opened_total", "ConflictRecords opened.", ["db"], registry=r
        )
        self.conflicts_resolved = Counter(
            "gateway_conflicts_resolved_total",
            "ConflictRecords closed, by strategy.",
            ["db", "strategy"],
            registry=r,
        )
        self.feed_listeners = Gauge(
            "gateway_feed_listeners", "Open waiting changes feeds.", ["feed"], registry=r
        )
        for feed in FEEDS:
            self.feed_listeners.labels(feed)  # every feed type shows, at 0 until used
        self.checkpoint_lag = Gauge(
            "gateway_checkpoint_lag",
            "Largest lag (changes not yet passed) of a replication checkpoint, per database.",
            ["db"],
            registry=r,
        )
        # (method, route, status) -> its two series: ``labels()`` checks and builds its key
        # on every call, a few µs per request; the keys are bounded like the labels
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.pool_size = Gauge("gateway_db_pool_size", "Database pool size.", registry=r)
        self.pool_checked_out = Gauge(
            "gateway_db_pool_checked_out", "Database connections in use.", registry=r
        )
        self.pool_overflow = Gauge(
            "gateway_db_pool_overflow", "Database connections beyond the pool size.", registry=r
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        key = (method, route, status)
        series = self._request_series.get(key)
        if series is None:
            series = (
                self.requests.labels(method, route, str(status)),
                self.duration.labels(method, route),
            )
            self._request_series[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def record_conflicts(self, db: str, opened: int, resolved: dict[str, int]) -> None:
        if opened:
            self.conflicts_opened.labels(db).inc(opened)
        for strategy, count in resolved.items():
            self.conflicts_resolved.labels(db, strategy).inc(count)


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def metrics_of(app: web.Application) -> Metrics | None:
    """The application's metrics (None for an app not built by ``create_app``)."""
    return app.get(METRICS)


def route_label(request: web.Request) -> str:
    """The matched route's pattern (``/{db}/{docid}``), or ``(unmatched)``."""
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def count_docs_written(request: web.Request, db: str, count: int) -> None:
    metrics = metrics_of(request.app)
    if metrics is not None and count:
        metrics.docs_written.labels(db).inc(count)


def count_docs_read(request: web.Request, db: str, count: int) -> None:
    metrics = metrics_of(request.app)
    if metrics is not None and count:
        metrics.docs_read.labels(db).inc(count)


@contextmanager
def feed_listener(request: web.Request, feed: str) -> Iterator[None]:
    """Count an open longpoll/continuous/eventsource feed while the block runs."""
    metrics = metrics_of(request.app)
    if metrics is None or feed not in FEEDS:
        yield
        return
    gauge = metrics.feed_listeners.labels(feed)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


# --- conflicts: what a write transaction opened and closed --------------------------------

# --- scraping -------------------------------------------------------------------------------


def _checkpoint_lag_query() -> Any:
    lag = func.max(databases.c.update_seq - local_docs.c.checkpoint_seq)
    return (
        select(databases.c.name, lag)
        .select_from(local_docs.join(databases, databases.c.id == local_docs.c.db_id))
        .where(local_docs.c.checkpoint_seq.is_not(None))
        .group_by(databases.c.name)
    )


async def _update_checkpoint_lag(metrics: Metrics, engine: AsyncEngine) -> None:
    try:
        async with read_transaction(engine) as conn:
            rows = (await conn.execute(_checkpoint_lag_query())).all()
    except (DBAPIError, OSError) as exc:  # still serve the other series
        log.warning("checkpoint lag unavailable: %s", type(exc).__name__)
        return
    metrics.checkpoint_lag.clear()  # a dropped database's series goes away
    for name, lag in rows:
        metrics.checkpoint_lag.labels(name).set(max(int(lag or 0), 0))


def _update_pool(metrics: Metrics, engine: AsyncEngine) -> None:
    pool: Any = engine.pool
    for gauge, attr in (
        (metrics.pool_size, "size"),
        (metrics.pool_checked_out, "checkedout"),
        (metrics.pool_overflow, "overflow"),
    ):
        read = getattr(pool, attr, None)
        if callable(read):
            gauge.set(max(int(read()), 0))


async def render(metrics: Metrics, engine: AsyncEngine | None) -> bytes:
    """Refresh the scrape-time gauges and return the registry in text format."""
    if engine is not None:
        _update_pool(metrics, engine)
        await _update_checkpoint_lag(metrics, engine)
    return generate_latest(metrics.registry)
