"""ConflictRecords, in the abstract: which records a write opens, moves or closes, and the
edits that resolve one.

A record is about one losing leaf of a document and pairs it with the winner: ``mine``
(the revision that arrived) and ``theirs`` (the server's).  The invariant kept after every
write is that each live losing leaf is followed by exactly one open record:

* a write that makes a new live leaf beside another opens a record for it;
* a write that extends a recorded branch moves the record to the branch's new leaf (the
  conflict is still the same one: "one open record per document and losing branch");
* a write that removes a recorded branch (a client deleted the losing revision, the way
  CouchDB clients resolve conflicts) closes the record.

Records of refused REST updates (``mine_rev`` None: the edit exists only in the record) are
not tied to the tree and are left alone.

Resolving writes one new revision on the kept branch and a tombstone on every other live
leaf, so every replica's winner is that new revision after its next pull.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from replication.docs import Attachment, DocEdit
from replication.revtree import RevTree, descendant_leaves
from replication.winner import leaf_infos

STRATEGIES = ("keep_mine", "keep_theirs", "merge")
POLICIES = ("manual", "merge", "server_wins", "client_wins")
POLICY_STRATEGY = {"server_wins": "keep_theirs", "client_wins": "keep_mine", "merge": "merge"}


@dataclass(frozen=True, slots=True)
class OpenRecord:
    """An open record as stored: its id, the losing leaf it is about, and the pair."""

    id: int
    leaf_rev: str | None  # None: a refused REST update, not tied to the tree
    mine_rev: str | None
    theirs_rev: str


@dataclass(frozen=True, slots=True)
class RecordPlan:
    """What one write does to a document's records (``(leaf, mine, theirs)`` triples)."""

    create: tuple[tuple[str, str, str], ...] = ()
    move: tuple[tuple[int, str, str, str], ...] = ()  # (id, leaf, mine, theirs)
    close: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.create or self.move or self.close)


def live_leaves(tree: RevTree) -> list[str]:
    """The non-deleted leaves, winner first."""
    return [leaf.rev for leaf in leaf_infos(tree) if not leaf.deleted]


def _several_live_leaves(tree: RevTree) -> bool:
    """Whether ``tree`` has more than one non-deleted leaf (no sorting: every write asks)."""
    if len(tree) < 2:
        return False
    parents = {node.parent for node in tree.values()}
    live = 0
    for rev, node in tree.items():
        if not node.deleted and rev not in parents:
            live += 1
            if live > 1:
                return True
    return False


def needs_records(before: RevTree | None, after: RevTree) -> bool:
    """Whether a write from ``before`` to ``after`` can open, move or close a record."""
    return _several_live_leaves(after) or (before is not None and _several_live_leaves(before))


def _live_descendant(tree: RevTree, rev: str, live: Sequence[str]) -> str | None:
    """The best live leaf at or below ``rev`` (None: the branch is gone or stemmed away)."""
    below = set(descendant_leaves(tree, rev))
    for leaf in live:  # winner first
        if leaf in below:
            return leaf
    return None


def _pair(leaf: str, winner: str, leaf_is_mine: bool) -> tuple[str, str, str]:
    return (leaf, leaf, winner) if leaf_is_mine else (leaf, winner, leaf)


def plan_records(
    after: RevTree, records: Sequence[OpenRecord], incoming: Collection[str]
) -> RecordPlan:
    """Reconcile a document's open records with its tree after a write.

    Each record is about one losing leaf and pairs it with the current winner.  A record
    follows its branch: when the branch grows, the record moves to its new leaf; when the
    branch overtakes the winner, the record moves to the branch that now loses; when its
    branch is gone (deleted, or merged into one already recorded), it closes.  Every live
    losing leaf no record follows gets a new record: ``mine`` is the revision that
    arrived with this write (``incoming``), ``theirs`` the one the server had.
    """
    live = live_leaves(after)
    if not live:
        return RecordPlan(close=tuple(r.id for r in records if r.leaf_rev is not None))
    winner = live[0]
    claimed: set[str] = set()
    moves: list[tuple[int, str, str, str]] = []
    closes: list[int] = []
    for record in records:
        if record.leaf_rev is None:
            continue
        leaf = _live_descendant(after, record.leaf_rev, live)
        leaf_is_mine = record.mine_rev == record.leaf_rev
        if leaf == winner:  # the branch overtook: the old winner's branch is the loser now
            other = record.theirs_rev if leaf_is_mine else record.mine_rev
            leaf = _live_descendant(after, other, live) if other is not None else None
            leaf_is_mine = not leaf_is_mine
        if leaf is None or leaf == winner or leaf in claimed:
            closes.append(record.id)
            continue
        claimed.add(leaf)
        triple = _pair(leaf, winner, leaf_is_mine)
        if triple != (record.leaf_rev, record.mine_rev, record.theirs_rev):
            moves.append((record.id, *triple))
    creates = [
        _pair(leaf, winner, leaf in incoming or winner not in incoming)
        for leaf in live[1:]
        if leaf not in claimed
    ]
    return RecordPlan(tuple(creates), tuple(moves), tuple(closes))


def resolution_edits(
    tree: RevTree,
    doc_id: str,
    keep_rev: str,
    body: Mapping[str, Any],
    attachments: Sequence[Attachment] = (),
) -> list[DocEdit]:
    """The edits that resolve every conflict of a document at once.

    One new revision with ``body`` on the branch of ``keep_rev`` (a live leaf), and a
    tombstone on every other live leaf.  Applied with ``new_edits=true``, in one write.
    """
    content = {k: v for k, v in body.items() if not k.startswith("_")}
    edits = [DocEdit(doc_id, keep_rev, body=content, attachments=tuple(attachments))]
    edits.extend(
        DocEdit(doc_id, leaf, deleted=True) for leaf in live_leaves(tree) if leaf != keep_rev
    )
    return edits
