"""Which revision bodies a document still needs after compaction.

    1-a -- 2-b -- 3-c      (winner)          keep: 3-c, 2-x (leaves)
        \\                                          1-a   (common ancestor of the
         '- 2-x            (conflict)                     conflict, for 3-way merges)

Leaves are always kept (they are the document); for a conflicted document, the common
ancestor of each losing leaf and the winner is kept too, so a three-way merge remains
possible until the conflict is resolved.  Every other body can go (``_compact``).
"""

from __future__ import annotations

from replication.revtree import RevTree, leaves, rev_path
from replication.winner import winning_rev


def common_ancestor(tree: RevTree, a: str, b: str) -> str | None:
    """Return the newest revision that both ``a`` and ``b`` descend from (or are)."""
    seen = set(rev_path(tree, a))
    for rev in rev_path(tree, b):
        if rev in seen:
            return rev
    return None


def revisions_to_keep(tree: RevTree) -> set[str]:
    """Return the revisions whose bodies compaction must keep."""
    keep = set(leaves(tree))
    if len(keep) > 1:
        winner = winning_rev(tree).rev
        for leaf in keep - {winner}:
            ancestor = common_ancestor(tree, winner, leaf)
            if ancestor is not None:
                keep.add(ancestor)
    return keep
