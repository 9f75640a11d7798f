"""What a database's stored state must satisfy whatever happened to the processes writing it
(crashes, restarts, concurrent writers): the checks a reliability test runs at the end.

    violations = await store_violations(engine, "field")      # one CouchDB database
    violations += await idempotency_violations(engine)         # the Idempotency-Key rows
    assert not violations, "\\n".join(violations)

Both read the tables directly with SQLAlchemy Core (any engine on the gateway's database,
SQLite or PostgreSQL; the gateway may keep running) and return one human-readable line per
violation, an empty list when everything holds.  Call them when no write is in flight: a
claim of a request that is still running is reported as a blocked key.

``store_violations`` checks, for one database:

* every revision tree is whole: each revision's parent is in the tree, one generation
  lower; a root above generation 1 only where ``revs_limit`` stemmed the history (with
  ``full_history=True``, for clients that always send their whole history, as PouchDB does);
* the document row agrees with its tree: ``winning_rev``, ``deleted`` and ``leaves`` (winner
  first) are what the tree says; every leaf has its stored revision (with the leaf's deleted
  flag) and its attachments; no revision row lies outside its document's tree;
* one row per document id, seqs unique and within ``1..update_seq``, the newest document at
  ``update_seq`` exactly (unless tombstones were purged), ``doc_count``/``doc_del_count``
  equal to the rows' deleted flags;
* the changes feed (``schema.changes.read_changes``, what ``_changes`` streams) returns
  every document exactly once, at its row's seq and winner, in increasing seq order;
* ConflictRecords: every live losing leaf has exactly one open record, pairing it with the
  winner; no open record follows something that is not a live losing leaf;
* for the ``inspections`` database, the REST index has one row per document at the
  document's seq, deleted flag and owner.

``idempotency_violations`` checks every stored ``Idempotency-Key`` row: a claim without an
answer that is still within its lease (it makes every retry wait), a stored answer with a
5xx status or without a body.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from replication import leaf_infos, tree_from_data
from replication.revs import rev_pos
from replication.revtree import RevTree
from schema.changes import read_changes
from schema.tables import (
    attachments,
    conflicts,
    databases,
    documents,
    idempotency_keys,
    inspection_index,
    revisions,
)

INSPECTIONS = "inspections"


async def store_violations(
    engine: AsyncEngine, db_name: str, *, full_history: bool = False
) -> list[str]:
    """Every way the stored state of database ``db_name`` breaks the invariants above."""
    async with engine.connect() as conn:
        db = (
            await conn.execute(
                select(
                    databases.c.id,
                    databases.c.update_seq,
                    databases.c.doc_count,
                    databases.c.doc_del_count,
                    databases.c.purge_seq,
                    databases.c.revs_limit,
                ).where(databases.c.name == db_name)
            )
        ).first()
        if db is None:
            return [f"{db_name}: no such database"]
        db_id, update_seq, doc_count, del_count, purge_seq, revs_limit = db
        docs, found = await _documents(conn, db_id)
        trees: dict[str, RevTree] = {}
        for doc_id, row in docs.items():
            tree = tree_from_data(orjson.loads(row["rev_tree"]))
            trees[doc_id] = tree
            found += _tree_violations(doc_id, tree, revs_limit, full_history)
            found += _row_violations(doc_id, row, tree)
        found += await _revision_violations(conn, db_id, trees)
        found += _seq_violations(docs, update_seq, doc_count, del_count, purge_seq)
        found += await _changes_violations(conn, db_id, update_seq, docs)
        found += await _conflict_violations(conn, db_id, trees)
        if db_name == INSPECTIONS:
            found += await _index_violations(conn, db_id, docs)
    return [f"{db_name}: {line}" for line in found]


async def idempotency_violations(engine: AsyncEngine) -> list[str]:
    """Stored ``Idempotency-Key`` rows that would block or mislead a retry."""
    t = idempotency_keys.c
    now = datetime.now(UTC)
    found: list[str] = []
    async with engine.connect() as conn:
        blocking = await conn.execute(
            select(t.user_id, t.key, t.expires_at).where(t.status.is_(None), t.expires_at > now)
        )
        for user_id, key, expires_at in blocking:
            found.append(
                f"idempotency key {key!r} of user {user_id}: a claim without an answer makes "
                f"every retry wait until {expires_at}"
            )
        stored = await conn.execute(
            select(t.user_id, t.key, t.status).where(
                t.status.is_not(None), (t.status >= 500) | t.body.is_(None)
            )
        )
        for user_id, key, status in stored:
            found.append(
                f"idempotency key {key!r} of user {user_id}: stored answer {status} "
                "is a 5xx or has no body"
            )
    return found


async def _documents(
    conn: AsyncConnection, db_id: int
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The document rows by id, and a violation for every id held by more than one row."""
    c = documents.c
    rows = (
        await conn.execute(
            select(
                c.doc_id, c.seq, c.winning_rev, c.deleted, c.leaves, c.rev_tree, c.owner_id
            ).where(c.db_id == db_id)
        )
    ).all()
    held = Counter(row.doc_id for row in rows)
    twice = [f"{doc_id}: {n} document rows" for doc_id, n in held.items() if n > 1]
    return {row.doc_id: dict(row._mapping) for row in rows}, twice


def _tree_violations(doc_id: str, tree: RevTree, revs_limit: int, full_history: bool) -> list[str]:
    if not tree:
        return [f"{doc_id}: empty revision tree"]
    found = []
    depth_below: dict[str, int] = {}  # revisions on the longest path from a leaf down to here
    parents = {node.parent for node in tree.values()}
    for leaf in (rev for rev in tree if rev not in parents):
        current: str | None = leaf
        for distance in itertools.count(1):
            if current is None or current not in tree or distance > len(tree):
                break
            depth_below[current] = max(depth_below.get(current, 0), distance)
            current = tree[current].parent
    for rev, node in tree.items():
        try:
            generation = rev_pos(rev)
        except Exception:
            found.append(f"{doc_id}: malformed revision id {rev!r}")
            continue
        if node.parent is not None:
            if node.parent not in tree:
                found.append(f"{doc_id}: {rev}'s parent {node.parent} is missing from the tree")
            elif rev_pos(node.parent) != generation - 1:
                found.append(f"{doc_id}: {rev}'s parent {node.parent} is not one generation lower")
        elif full_history and generation > 1 and depth_below.get(rev, 0) < revs_limit:
            found.append(
                f"{doc_id}: root {rev} above generation 1 although no path is {revs_limit} "
                "revisions long (history lost, not stemmed)"
            )
        if rev not in depth_below:
            found.append(f"{doc_id}: {rev} is not reachable from any leaf (a cycle)")
    return found


def _row_violations(doc_id: str, row: dict[str, Any], tree: RevTree) -> list[str]:
    if not tree:
        return []
    infos = leaf_infos(tree)
    expected_leaves = [[leaf.rev, leaf.deleted] for leaf in infos]
    stored_leaves = [[rev, bool(deleted)] for rev, deleted in orjson.loads(row["leaves"])]
    found = []
    if row["winning_rev"] != infos[0].rev or bool(row["deleted"]) != infos[0].deleted:
        found.append(
            f"{doc_id}: row says winner {row['winning_rev']} deleted={row['deleted']}, "
            f"the tree says {infos[0].rev} deleted={infos[0].deleted}"
        )
    if stored_leaves != expected_leaves:
        found.append(f"{doc_id}: row leaves {stored_leaves} != tree leaves {expected_leaves}")
    return found


async def _revision_violations(
    conn: AsyncConnection, db_id: int, trees: dict[str, RevTree]
) -> list[str]:
    r = revisions.c
    stored: dict[str, dict[str, tuple[bool, bytes | None]]] = {}
    rows = await conn.execute(
        select(r.doc_id, r.rev, r.deleted, r.attachments).where(r.db_id == db_id)
    )
    for doc_id, rev, deleted, atts in rows:
        stored.setdefault(doc_id, {})[rev] = (bool(deleted), atts)
    digests = {
        d
        for (d,) in await conn.execute(
            select(attachments.c.digest).where(attachments.c.db_id == db_id)
        )
    }
    found = []
    for doc_id in sorted(stored.keys() - trees.keys()):
        found.append(f"{doc_id}: revision rows without a document row")
    for doc_id, tree in trees.items():
        mine = stored.get(doc_id, {})
        for rev in sorted(mine.keys() - tree.keys()):
            found.append(f"{doc_id}: stored revision {rev} is not in the revision tree")
        for leaf in leaf_infos(tree):
            if leaf.rev not in mine:
                found.append(f"{doc_id}: leaf {leaf.rev} has no stored revision (body lost)")
                continue
            deleted, atts = mine[leaf.rev]
            if deleted != leaf.deleted:
                found.append(f"{doc_id}: leaf {leaf.rev} stored deleted={deleted}, tree says not")
            for name, meta in (orjson.loads(atts) if atts else {}).items():
                if meta.get("digest") not in digests:
                    found.append(f"{doc_id}: leaf {leaf.rev} attachment {name!r} has no data")
    return found


def _seq_violations(
    docs: dict[str, dict[str, Any]],
    update_seq: int,
    doc_count: int,
    del_count: int,
    purge_seq: int,
) -> list[str]:
    found = []
    seqs = Counter(row["seq"] for row in docs.values())
    for seq, times in seqs.items():
        if times > 1:
            found.append(f"seq {seq} is held by {times} documents")
        if not 0 < seq <= update_seq:
            found.append(f"seq {seq} is outside 1..update_seq ({update_seq}): invisible to feeds")
    if docs and purge_seq == 0 and max(seqs) != update_seq:
        found.append(f"the newest document is at seq {max(seqs)}, update_seq is {update_seq}")
    deleted = sum(1 for row in docs.values() if row["deleted"])
    if (doc_count, del_count) != (len(docs) - deleted, deleted):
        found.append(
            f"doc_count/doc_del_count say {doc_count}/{del_count}, the rows "
            f"{len(docs) - deleted}/{deleted}"
        )
    return found


async def _changes_violations(
    conn: AsyncConnection, db_id: int, update_seq: int, docs: dict[str, dict[str, Any]]
) -> list[str]:
    rows = await read_changes(conn, db_id, since=0, upto=update_seq, limit=len(docs) + 1)
    found = []
    seqs = [row.seq for row in rows]
    if any(a >= b for a, b in itertools.pairwise(seqs)):
        found.append("the changes feed is not in strictly increasing seq order")
    fed = Counter(row.doc_id for row in rows)
    for doc_id, times in fed.items():
        if times > 1:
            found.append(f"{doc_id}: {times} entries in the changes feed")
    for doc_id in sorted(docs.keys() - fed.keys()):
        found.append(f"{doc_id}: missing from the changes feed (a gap)")
    for row in rows:
        doc = docs.get(row.doc_id)
        if doc is None:
            found.append(f"{row.doc_id}: in the changes feed without a document row")
        elif (row.seq, row.winning_rev, bool(row.deleted)) != (
            doc["seq"],
            doc["winning_rev"],
            bool(doc["deleted"]),
        ):
            found.append(f"{row.doc_id}: the changes feed disagrees with the document row")
    return found


async def _conflict_violations(
    conn: AsyncConnection, db_id: int, trees: dict[str, RevTree]
) -> list[str]:
    c = conflicts.c
    rows = await conn.execute(
        select(c.id, c.doc_id, c.leaf_rev, c.mine_rev, c.theirs_rev).where(
            c.db_id == db_id, c.status == "open", c.leaf_rev.is_not(None)
        )
    )
    open_by_doc: dict[str, list[tuple[int, str, str | None, str]]] = {}
    for rid, doc_id, leaf, mine, theirs in rows:
        open_by_doc.setdefault(doc_id, []).append((rid, leaf, mine, theirs))
    found = []
    for doc_id in sorted(open_by_doc.keys() - trees.keys()):
        found.append(f"{doc_id}: open ConflictRecords without a document")
    for doc_id, tree in trees.items():
        live = [leaf.rev for leaf in leaf_infos(tree) if not leaf.deleted]
        winner, losing = (live[0], set(live[1:])) if live else (None, set())
        records = open_by_doc.get(doc_id, [])
        followed = Counter(leaf for _, leaf, _, _ in records)
        for leaf in sorted(losing):
            if followed[leaf] != 1:
                found.append(f"{doc_id}: live losing leaf {leaf} has {followed[leaf]} open records")
        for rid, leaf, mine, theirs in records:
            if leaf not in losing:
                found.append(f"{doc_id}: open record {rid} follows {leaf}, not a live losing leaf")
            elif {mine, theirs} != {leaf, winner}:
                found.append(
                    f"{doc_id}: open record {rid} pairs {mine} with {theirs}, "
                    f"not its leaf {leaf} with the winner {winner}"
                )
    return found


async def _index_violations(
    conn: AsyncConnection, db_id: int, docs: dict[str, dict[str, Any]]
) -> list[str]:
    i = inspection_index.c
    rows = await conn.execute(
        select(i.doc_id, i.seq, i.deleted, i.owner_id).where(i.db_id == db_id)
    )
    indexed = {doc_id: (seq, bool(deleted), owner) for doc_id, seq, deleted, owner in rows}
    found = []
    for doc_id, doc in docs.items():
        expected = (doc["seq"], bool(doc["deleted"]), doc["owner_id"])
        if indexed.get(doc_id) != expected:
            found.append(f"{doc_id}: index row {indexed.get(doc_id)} != document {expected}")
    for doc_id in sorted(indexed.keys() - docs.keys()):
        found.append(f"{doc_id}: index row without a document")
    return found
