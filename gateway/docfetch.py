"""Fetching documents for GET, ``open_revs`` and ``_bulk_get``: a fixed number of queries.

For any number of requested (id, rev) pairs: one query for document rows, one for the
stored revisions, one for attachment bytes when they are wanted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson

from gateway.docjson import RenderOptions, render_revision
from replication import descendant_leaves, rev_path
from schema.engine import is_sqlite
from schema.rawpg import Runner
from schema.reads import (
    DocRow,
    RevisionRow,
    get_attachment_data,
    get_doc_rows,
    get_docs_with_revisions,
    get_revisions,
)


# not frozen: built for every row read, and a frozen dataclass costs about five times as
# much to build (its __init__ goes through object.__setattr__); never changed after it is built
@dataclass(slots=True)
class FetchRequest:
    """One wanted document: a revision, a list of revisions, ``"all"`` leaves, or the winner."""

    doc_id: str
    revs: Sequence[str] | str | None = None  # None: winner; "all": every leaf
    atts_since: tuple[str, ...] = ()


# not frozen: built for every row read, and a frozen dataclass costs about five times as
# much to build (its __init__ goes through object.__setattr__); never changed after it is built
@dataclass(slots=True)
class Fetched:
    """One answer: rendered document bytes, or a missing revision, or an error."""

    doc_id: str
    rev: str | None
    doc: bytes | None = None
    missing: bool = False
    error: str | None = None
    reason: str | None = None

    def open_revs_json(self) -> bytes:
        if self.doc is not None:
            return b'{"ok":' + self.doc + b"}"
        return orjson.dumps({"missing": self.rev})

    def bulk_get_json(self) -> bytes:
        if self.doc is not None:
            return b'{"ok":' + self.doc + b"}"
        return orjson.dumps(
            {
                "error": {
                    "id": self.doc_id,
                    "rev": self.rev or "undefined",
                    "error": self.error or "not_found",
                    "reason": self.reason or "missing",
                }
            }
        )


def _wanted_revs(row: DocRow, wanted: Sequence[str] | str | None, latest: bool) -> list[str]:
    if wanted is None:
        return [row.winning_rev]
    if wanted == "all":
        return [leaf[0] for leaf in row.leaves]
    revs = list(wanted)
    if not latest:
        return revs
    leaves = {leaf[0] for leaf in row.leaves}
    if all(rev in leaves for rev in revs):  # a leaf is its own latest: no tree to parse
        return list(dict.fromkeys(revs))
    tree = row.tree()
    resolved: list[str] = []
    for rev in revs:
        found = descendant_leaves(tree, rev) or [rev]
        resolved.extend(r for r in found if r not in resolved)
    return resolved


async def fetch_docs(
    conn: Runner,
    db_id: int,
    requests: Sequence[FetchRequest],
    *,
    owner: int | None,
    options: RenderOptions,
    latest: bool = False,
    revs_limit: int = 1000,
) -> list[list[Fetched]]:
    """Resolve and render every request; one inner list per request."""
    rows, stored = await _prefetch(conn, db_id, requests, owner, options)
    plan: list[list[tuple[str, str | None]]] = []
    keys: list[tuple[str, str]] = []
    for req in requests:
        row = rows.get(req.doc_id)
        if row is None:
            wanted = [] if req.revs in (None, "all") else list(req.revs)  # type: ignore[arg-type]
            plan.append([(req.doc_id, rev) for rev in wanted] or [(req.doc_id, None)])
            continue
        revs = _wanted_revs(row, req.revs, latest)
        plan.append([(req.doc_id, rev) for rev in revs])
        keys.extend((req.doc_id, rev) for rev in revs)
        if options.revs_info:  # which ancestors still have a body: "available" or "missing"
            tree = row.tree()
            keys.extend((req.doc_id, anc) for rev in revs for anc in rev_path(tree, rev)[1:])
    missing = [key for key in keys if key not in stored]
    if missing:
        stored.update(await get_revisions(conn, db_id, missing))
    att_data = None
    if options.attachments or any(r.atts_since for r in requests):
        digests = [
            att["digest"]
            for rev in stored.values()
            if rev.attachments
            for att in rev.attachments.values()
        ]
        att_data = await get_attachment_data(conn, db_id, digests) if digests else {}
    need_tree = (
        options.revs
        or options.revs_info
        or bool(options.atts_since)
        or any(r.atts_since for r in requests)
    )
    trees = {doc_id: row.tree() for doc_id, row in rows.items()} if need_tree else {}
    out: list[list[Fetched]] = []
    for req, pairs in zip(requests, plan, strict=True):
        row = rows.get(req.doc_id)
        answers: list[Fetched] = []
        req_options = (  # an entry with atts_since wants the newer attachments' data
            replace(options, atts_since=req.atts_since, attachments=True)
            if req.atts_since
            else options
        )
        for doc_id, rev in pairs:
            found = stored.get((doc_id, rev)) if rev is not None else None
            if row is None or found is None:
                answers.append(Fetched(doc_id, rev, missing=True))
                continue
            answers.append(
                Fetched(
                    doc_id,
                    rev,
                    _render(doc_id, found, row, trees, req_options, att_data, revs_limit, stored),
                )
            )
        out.append(answers)
    return out


async def _prefetch(
    conn: Runner,
    db_id: int,
    requests: Sequence[FetchRequest],
    owner: int | None,
    options: RenderOptions,
) -> tuple[dict[str, DocRow], dict[tuple[str, str], RevisionRow]]:
    """Load document rows, and on PostgreSQL the wanted revisions too, in one round trip."""
    simple = not options.revs_info and all(r.revs != "all" for r in requests)
    if simple and not is_sqlite(conn):
        pairs = [
            (r.doc_id, rev)
            for r in requests
            for rev in (r.revs if r.revs is not None else [None])  # type: ignore[union-attr]
        ]
        return await get_docs_with_revisions(conn, db_id, pairs, owner)
    ids = [r.doc_id for r in requests]
    return await get_doc_rows(conn, db_id, ids, owner), {}


def _render(
    doc_id: str,
    found: RevisionRow,
    row: DocRow,
    trees: dict,
    options: RenderOptions,
    att_data: dict[str, bytes] | None,
    revs_limit: int,
    stored: dict[tuple[str, str], RevisionRow],
) -> bytes:
    tree = trees.get(doc_id)
    available = None
    if tree is not None and options.revs_info:
        available = {rev for (d, rev) in stored if d == doc_id}
    return render_revision(
        doc_id,
        found,
        tree=tree,
        row=row,
        options=options,
        att_data=att_data,
        revs_limit=revs_limit,
        available=available,
    )
