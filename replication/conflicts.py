"""ConflictRecords, in the abstract: which records a write opens, moves or closes, and the
edits that resolve one.

A record pairs two live branches of one document: ``mine`` (the revision that arrived) and
``theirs`` (the server's).  The invariant kept after every write is that each live losing
leaf of a document is covered by exactly one open record:

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
    """An open record as stored: its id and the two leaves it pairs."""

    id: int
    mine_rev: str | None
    theirs_rev: str


@dataclass(frozen=True, slots=True)
class RecordPlan:
    """What one write does to a document's records."""

    create: tuple[tuple[str, str], ...] = ()  # (mine_rev, theirs_rev)
    move: tuple[tuple[int, str, str], ...] = ()  # (id, mine_rev, theirs_rev)
    close: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.create or self.move or self.close)


def live_leaves(tree: RevTree) -> list[str]:
    """The non-deleted leaves, winner first."""
    return [leaf.rev for leaf in leaf_infos(tree) if not leaf.deleted]


def needs_records(before: RevTree | None, after: RevTree) -> bool:
    """Whether a write from ``before`` to ``after`` can open, move or close a record."""
    return len(live_leaves(after)) > 1 or (before is not None and len(live_leaves(before)) > 1)


def _live_descendant(tree: RevTree, rev: str, live: Sequence[str]) -> str | None:
    """The best live leaf at or below ``rev`` (None: the branch is gone or stemmed away)."""
    below = set(descendant_leaves(tree, rev))
    for leaf in live:  # winner first
        if leaf in below:
            return leaf
    return None


def plan_records(
    after: RevTree, records: Sequence[OpenRecord], incoming: Collection[str]
) -> RecordPlan:
    """Reconcile a document's open records with its tree after a write.

    ``incoming`` holds the revisions the write added; a record opened by it has the incoming
    leaf as ``mine`` and the other one as ``theirs``.
    """
    live = live_leaves(after)
    covered: set[str] = set()
    moves: list[tuple[int, str, str]] = []
    closes: list[int] = []
    for record in records:
        if record.mine_rev is None:
            continue
        mine = _live_descendant(after, record.mine_rev, live)
        theirs = _live_descendant(after, record.theirs_rev, live)
        if mine is None or theirs is None or mine == theirs or {mine, theirs} & covered:
            closes.append(record.id)
            continue
        covered.update((mine, theirs))
        if (mine, theirs) != (record.mine_rev, record.theirs_rev):
            moves.append((record.id, mine, theirs))
    creates: list[tuple[str, str]] = []
    if live:
        winner = live[0]
        for leaf in live[1:]:
            if leaf in covered:
                continue
            if leaf not in incoming and winner in incoming:
                creates.append((winner, leaf))  # the arriving revision won
            else:
                creates.append((leaf, winner))
            covered.update((leaf, winner))
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
