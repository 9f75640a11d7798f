"""Scanning the changes feed in batches and rendering its rows.

A scan reads ``documents`` in seq order, ``batch`` rows per query, up to a snapshot of the
database's ``update_seq`` taken first.  Writers commit in seq order (they hold the database
row lock while they take seqs), so every change at or below that snapshot is already
visible: ``last_seq`` may be the snapshot even when a filter matched nothing.

A scan that reads document bodies (``include_docs``, a selector) sizes its queries by bytes
too: it starts with ``FIRST_BODY_QUERY_ROWS`` rows, then picks each next row count from the
bodies seen so that about ``BODY_BYTES_PER_QUERY`` come back, so what a feed holds while its
client is slow stays bounded whatever the documents weigh.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.changes_params import ChangesParams
from gateway.dbctx import DbAccess
from gateway.docjson import RenderOptions, render_revision
from schema.changes import ChangeRow, read_changes
from schema.databases import get_database
from schema.engine import raw_read, read_transaction
from schema.rawpg import Runner
from schema.reads import DocRow, RevisionRow, get_attachment_data

BODY_BYTES_PER_QUERY = 1024 * 1024
FIRST_BODY_QUERY_ROWS = 10


@dataclass(slots=True)
class ScanState:
    since: int  # highest seq examined so far
    matched: int = 0  # rows emitted so far (counts toward ``limit``)
    row_index: int = 0


async def current_seq(engine: AsyncEngine, name: str) -> int:
    """Return the database's committed ``update_seq``."""
    async with read_transaction(engine) as conn:
        return (await get_database(conn, name)).update_seq


async def scan(
    engine: AsyncEngine,
    access: DbAccess,
    params: ChangesParams,
    state: ScanState,
    *,
    batch: int,
    upto: int | None = None,
) -> AsyncIterator[list[tuple[int, bytes]]]:
    """Yield ``(seq, rendered row)`` after ``state.since``, one list per query, updating ``state``.

    ``upto`` is a committed ``update_seq`` to scan to (read now when not given).
    """
    if upto is None:
        upto = await current_seq(engine, access.db.name)
    if upto <= state.since and not params.descending:
        return
    need_bodies = params.include_docs or params.selector is not None
    # Without a row filter every row read is a row sent: read no more than the limit needs.
    exact = params.selector is None and not params.design_only
    before = upto + 1
    rows_per_query = min(batch, FIRST_BODY_QUERY_ROWS) if need_bodies else batch
    while params.limit is None or state.matched < params.limit:
        size = rows_per_query
        if exact and params.limit is not None:
            size = max(1, min(size, params.limit - state.matched))
        async with raw_read(engine) as conn:
            rows = await read_changes(
                conn,
                access.db.id,
                since=0 if params.descending else state.since,
                upto=before if params.descending else upto,
                limit=size,
                descending=params.descending,
                include_bodies=need_bodies,
                owner_id=access.owner,
                doc_ids=params.doc_ids,
            )
            att_data = await _attachment_data(conn, access, rows, params)
        out: list[tuple[int, bytes]] = []
        for row in rows:
            if params.limit is not None and state.matched >= params.limit:
                break
            before = state.since = row.seq
            rendered = render_change(row, params, access, att_data)
            if rendered is not None:
                state.matched += 1
                out.append((row.seq, rendered))
        read = len(rows)
        if need_bodies and rows:
            body_bytes = sum(len(row.body or b"") for row in rows) or 1
            rows_per_query = max(1, min(batch, BODY_BYTES_PER_QUERY * read // body_bytes))
        del rows  # not kept while the caller sends (and maybe waits for a slow client)
        if out:
            yield out
        if read < size:
            if not params.descending and (params.limit is None or state.matched < params.limit):
                state.since = max(state.since, upto)
            return


async def _attachment_data(
    conn: Runner, access: DbAccess, rows: list[ChangeRow], params: ChangesParams
) -> dict[str, bytes] | None:
    """With ``include_docs`` and ``attachments``: the bytes of the rows' attachments (one
    query), to send inline as base64 as CouchDB does; else None (stubs)."""
    if not (params.include_docs and params.attachments):
        return None
    digests = [
        att["digest"]
        for row in rows
        if row.attachments and row.body is not None
        for att in orjson.loads(row.attachments).values()
    ]
    return await get_attachment_data(conn, access.db.id, digests) if digests else {}


def render_change(
    row: ChangeRow,
    params: ChangesParams,
    access: DbAccess,
    att_data: dict[str, bytes] | None = None,
) -> bytes | None:
    """Render one change row, or None when a filter rejects it (``att_data``: attachment
    bytes to inline, with ``attachments=true``)."""
    if params.design_only and not row.doc_id.startswith("_design/"):
        return None
    doc_bytes: bytes | None = None
    if params.include_docs or params.selector is not None:
        doc_bytes = _render_doc(row, params, access, att_data)
        if params.selector is not None:
            if doc_bytes is None or not params.selector.matches(orjson.loads(doc_bytes)):
                return None
    if params.style == "all_docs":
        changes = [{"rev": rev} for rev, _ in row.leaves]
    else:
        changes = [{"rev": row.winning_rev}]
    head: dict[str, Any] = {"seq": row.seq, "id": row.doc_id, "changes": changes}
    if row.deleted:
        head["deleted"] = True
    encoded = orjson.dumps(head)
    if params.include_docs:
        return encoded[:-1] + b',"doc":' + (doc_bytes or b"null") + b"}"
    return encoded


def _render_doc(
    row: ChangeRow, params: ChangesParams, access: DbAccess, att_data: dict[str, bytes] | None
) -> bytes | None:
    if row.body is None:
        return None
    revision = RevisionRow(
        row.winning_rev,
        row.deleted,
        row.body,
        orjson.loads(row.attachments) if row.attachments else None,
    )
    doc_row = DocRow(row.doc_id, row.seq, row.winning_rev, row.deleted, row.leaves, b"", None)
    return render_revision(
        row.doc_id,
        revision,
        row=doc_row,
        options=RenderOptions(conflicts=params.conflicts, attachments=att_data is not None),
        att_data=att_data,
        revs_limit=access.db.revs_limit,
    )
