"""Parsing ``_changes`` parameters (query string, plus ``doc_ids``/``selector`` bodies)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from gateway.jsonio import query_bool, query_int, query_json, read_json_object
from gateway.settings import Settings
from replication import BadRequest, Seq, parse_feed, parse_since, parse_style
from replication.selector import Selector, compile_selector


@dataclass(frozen=True, slots=True)
class ChangesParams:
    feed: str
    since: Seq | Literal["now"]
    limit: int | None
    descending: bool
    include_docs: bool
    conflicts: bool
    attachments: bool
    style: str
    heartbeat_ms: int | None
    timeout_ms: int
    doc_ids: tuple[str, ...] | None
    selector: Selector | None
    design_only: bool
    seq_interval: int | None


async def parse_changes_params(request: web.Request, settings: Settings) -> ChangesParams:
    """Validate every ``_changes`` parameter; ``BadRequest`` on anything malformed."""
    body: dict[str, Any] = {}
    if request.method == "POST" and request.can_read_body:
        body = await read_json_object(request)
    feed = parse_feed(request.query.get("feed"))
    raw_since = request.query.get("since", body.get("since") and str(body["since"]))
    last_event_id = request.headers.get("Last-Event-ID")
    if feed == "eventsource" and last_event_id:
        # a browser's EventSource reconnecting says where it stopped: it wins over the URL's
        # since (as in CouchDB), so a reconnect neither replays nor skips changes
        raw_since = last_event_id
    since = parse_since(raw_since)
    limit = query_int(request, "limit")
    heartbeat_raw = request.query.get("heartbeat")
    heartbeat: int | None = None
    if heartbeat_raw == "true":
        heartbeat = settings.default_heartbeat_ms
    elif heartbeat_raw not in (None, "false"):
        heartbeat = query_int(request, "heartbeat", minimum=1)
    timeout = query_int(request, "timeout", minimum=0)
    if timeout is None:
        timeout = settings.max_feed_timeout_ms if heartbeat else 60_000
    timeout = min(timeout, settings.max_feed_timeout_ms)
    filter_name = request.query.get("filter")
    doc_ids = selector = None
    design_only = False
    if filter_name == "_doc_ids":
        raw_ids = body.get("doc_ids", query_json(request, "doc_ids"))
        if not isinstance(raw_ids, list) or not all(isinstance(i, str) for i in raw_ids):
            raise BadRequest("filter=_doc_ids needs `doc_ids`, a JSON list of strings")
        doc_ids = tuple(raw_ids)
    elif filter_name == "_selector":
        raw_selector = body.get("selector", query_json(request, "selector"))
        if raw_selector is None:
            raise BadRequest("filter=_selector needs a `selector` object")
        selector = compile_selector(raw_selector)
    elif filter_name == "_design":
        design_only = True
    elif filter_name is not None:
        raise BadRequest(
            f"Unsupported filter {filter_name!r}: the gateway runs no server-side JavaScript; "
            "use _doc_ids, _selector or _design"
        )
    return ChangesParams(
        feed=feed,
        since=since,
        limit=limit,
        descending=query_bool(request, "descending"),
        include_docs=query_bool(request, "include_docs"),
        conflicts=query_bool(request, "conflicts"),
        attachments=query_bool(request, "attachments"),
        style=parse_style(request.query.get("style")),
        heartbeat_ms=heartbeat,
        timeout_ms=timeout,
        doc_ids=doc_ids,
        selector=selector,
        design_only=design_only,
        seq_interval=query_int(request, "seq_interval", minimum=1),
    )
