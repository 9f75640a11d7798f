"""Rendering stored revisions as CouchDB JSON documents, splicing stored body bytes.

A revision body is stored as the orjson bytes of its non-underscore members, so rendering
writes the ``_id``/``_rev``/... head and appends the stored members without re-parsing:

    head {"_id":"a","_rev":"2-b","_revisions":{...}}  +  body {"title":"x"}
      -> {"_id":"a","_rev":"2-b","_revisions":{...},"title":"x"}
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from replication import RevTree, path_to_revisions, rev_path, rev_pos
from schema.reads import DocRow, RevisionRow


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What to add to a rendered document (query parameters of GET, _bulk_get, _changes)."""

    revs: bool = False
    revs_info: bool = False
    conflicts: bool = False
    deleted_conflicts: bool = False
    attachments: bool = False
    atts_since: tuple[str, ...] = ()
    local_seq: bool = False


def splice(head: Mapping[str, Any], body: bytes) -> bytes:
    """Join a head object and stored body bytes into one JSON object."""
    encoded = orjson.dumps(head)
    if len(body) <= 2:
        return encoded
    return encoded[:-1] + b"," + body[1:]


def attachment_stubs(
    meta: Mapping[str, Mapping[str, Any]],
    data: Mapping[str, bytes] | None,
    *,
    with_data: bool,
    since_pos: int = 0,
) -> dict[str, Any]:
    """Return the ``_attachments`` object: stubs, or inline base64 where wanted."""
    out: dict[str, Any] = {}
    for name, att in meta.items():
        entry = {
            "content_type": att["content_type"],
            "digest": att["digest"],
            "length": att["length"],
            "revpos": att["revpos"],
        }
        blob = data.get(att["digest"]) if data is not None else None
        if with_data and (att["revpos"] or 0) > since_pos and blob is not None:
            entry["data"] = base64.b64encode(blob).decode("ascii")
        else:
            entry["stub"] = True
        out[name] = entry
    return out


def render_revision(
    doc_id: str,
    rev: RevisionRow,
    *,
    tree: RevTree | None = None,
    row: DocRow | None = None,
    options: RenderOptions = RenderOptions(),
    att_data: Mapping[str, bytes] | None = None,
    revs_limit: int = 1000,
    available: set[str] | None = None,
) -> bytes:
    """Render one stored revision as a JSON document."""
    head: dict[str, Any] = {"_id": doc_id, "_rev": rev.rev}
    if rev.deleted:
        head["_deleted"] = True
    if rev.attachments:
        since = _atts_since_pos(tree, rev.rev, options.atts_since)
        head["_attachments"] = attachment_stubs(
            rev.attachments, att_data, with_data=options.attachments, since_pos=since
        )
    if tree is not None and (options.revs or options.revs_info):
        path = rev_path(tree, rev.rev, revs_limit)
        if options.revs:
            head["_revisions"] = path_to_revisions(path)
        if options.revs_info:
            head["_revs_info"] = [{"rev": r, "status": _status(r, tree, available)} for r in path]
    if row is not None:
        if options.conflicts and row.conflicts():
            head["_conflicts"] = row.conflicts()
        if options.deleted_conflicts and row.deleted_conflicts():
            head["_deleted_conflicts"] = row.deleted_conflicts()
        if options.local_seq:
            head["_local_seq"] = row.seq
    return splice(head, rev.body)


def _atts_since_pos(tree: RevTree | None, rev: str, atts_since: tuple[str, ...]) -> int:
    """The generation up to which the client already has this revision's attachments: the
    newest ``atts_since`` revision on the path of ``rev`` (itself included), as CouchDB's
    ``find_ancestor_rev_pos``.  A listed revision on another branch says nothing about this
    one; without the tree, nothing is assumed (all data inline, never a stub the client
    cannot resolve)."""
    if not atts_since or tree is None:
        return 0
    path = set(rev_path(tree, rev))
    return max((rev_pos(r) for r in atts_since if r in path), default=0)


def _status(rev: str, tree: RevTree, available: set[str] | None) -> str:
    if available is not None and rev not in available:
        return "missing"
    return "deleted" if tree[rev].deleted else "available"
