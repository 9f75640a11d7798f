"""Winning revision and conflicts, the rule every replica applies identically.

    winner    = max(leaves, key=(not deleted, generation, hash))
    conflicts = the other non-deleted leaves            (``_conflicts``)
    deleted_conflicts = the other deleted leaves        (``_deleted_conflicts``)

Ported from pouchdb-merge ``winningRev.js`` / ``collectConflicts.js`` and couch_doc.erl.
"""

from __future__ import annotations

from typing import NamedTuple

from replication.revtree import RevTree, leaves


class Leaf(NamedTuple):
    rev: str
    deleted: bool


def leaf_infos(tree: RevTree) -> list[Leaf]:
    """Return every leaf with its deleted flag, winner first."""
    found = [Leaf(rev, tree[rev].deleted) for rev in leaves(tree)]
    if len(found) > 1:
        found.sort(key=_winner_key, reverse=True)
    return found


def _winner_key(leaf: Leaf) -> tuple[bool, int, str]:
    pos, _, hash_ = leaf.rev.partition("-")
    return (not leaf.deleted, int(pos), hash_)


def winning_rev(tree: RevTree) -> Leaf:
    """Return the winning leaf of a non-empty tree."""
    return max((Leaf(rev, tree[rev].deleted) for rev in leaves(tree)), key=_winner_key)


def collect_conflicts(tree: RevTree) -> list[str]:
    """Return the non-deleted leaves that lost (``_conflicts``), best first."""
    infos = leaf_infos(tree)
    return [leaf.rev for leaf in infos[1:] if not leaf.deleted]


def collect_deleted_conflicts(tree: RevTree) -> list[str]:
    """Return the deleted leaves that lost (``_deleted_conflicts``)."""
    infos = leaf_infos(tree)
    return [leaf.rev for leaf in infos[1:] if leaf.deleted]


def live_leaf_count(tree: RevTree) -> int:
    """Count the non-deleted leaves: two or more means the document is in conflict."""
    return sum(1 for rev in leaves(tree) if not tree[rev].deleted)
