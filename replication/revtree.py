"""The revision tree of one document, as a flat map from revision to parent.

CouchDB stores a document's history as a key tree (``couch_key_tree``); a stemmed tree is a
forest whose roots start above generation 1.  We keep the same information flat, which makes
merging a plain union of edges (so the order in which branches arrive cannot matter):

         1-a                 {"1-a": RevNode(parent=None,  deleted=False),
        /    \\               "2-b": RevNode(parent="1-a", deleted=False),
     2-b      2-c    <=>      "2-c": RevNode(parent="1-a", deleted=False),
      |                       "3-d": RevNode(parent="2-b", deleted=True)}
     3-d (deleted)

A node whose parent was stemmed away (or never sent) has ``parent=None``.  The ``deleted``
flag matters for leaves only.  See protocol.rst, "Revision tree" and couch_key_tree.erl.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, NamedTuple

from replication.errors import BadRequest
from replication.revs import rev_pos


class RevNode(NamedTuple):
    """One revision: its parent revision (None at a root) and whether it is a tombstone."""

    parent: str | None
    deleted: bool = False


RevTree = Mapping[str, RevNode]
"""A document's revision tree; never mutated in place (functions return new maps)."""

EMPTY_TREE: RevTree = {}


class MergeOutcome(Enum):
    """What merging a path did, in couch_key_tree's words."""

    NEW_LEAF = "new_leaf"  # the path's leaf is new and extends a leaf (or the tree was empty)
    NEW_BRANCH = "new_branch"  # the path's leaf is new and forks an inner node or a new root
    INTERNAL_NODE = "internal_node"  # the path's leaf was already known


class MergeResult(NamedTuple):
    tree: RevTree
    outcome: MergeOutcome


def validate_path(path: Iterable[str]) -> tuple[str, ...]:
    """Check that a path (leaf first) descends one generation per step."""
    revs = tuple(path)
    if not revs:
        raise BadRequest("A revision path may not be empty")
    for child, parent in itertools.pairwise(revs):
        if rev_pos(child) != rev_pos(parent) + 1:
            raise BadRequest("Revision path generations must be consecutive")
    return revs


def merge(tree: RevTree, path: Iterable[str], deleted: bool = False) -> MergeResult:
    """Merge a revision path (leaf first, as in ``_revisions``) into ``tree``."""
    revs = validate_path(path)
    if not tree:  # a new document: the path is the whole tree
        last = len(revs) - 1
        new_tree = {
            rev: RevNode(revs[index + 1] if index < last else None, deleted and index == 0)
            for index, rev in enumerate(revs)
        }
        return MergeResult(new_tree, MergeOutcome.NEW_LEAF)
    leaf = revs[0]
    if leaf in tree:
        # Known leaf: only graft ancestors that a stemmed tree had lost.
        grafted = _graft(tree, revs)
        node = grafted[leaf]
        if deleted and not node.deleted and not is_leaf(grafted, leaf):
            # Learned first as an ancestor, which carries no flag: record the tombstone now,
            # as couch_key_tree's value_pref replaces ?REV_MISSING, so order cannot matter.
            grafted = {**grafted, leaf: RevNode(node.parent, True)}
        return MergeResult(grafted, MergeOutcome.INTERNAL_NODE)
    attach = next((rev for rev in revs[1:] if rev in tree), None)
    new = dict(tree)
    for index, rev in enumerate(revs):
        parent = revs[index + 1] if index + 1 < len(revs) else None
        known = new.get(rev)
        if known is None:
            new[rev] = RevNode(parent, deleted if index == 0 else False)
        elif known.parent is None and parent is not None:
            new[rev] = RevNode(parent, known.deleted)
    # couch_key_tree: extending a leaf is a new leaf; forking anywhere else is a new branch.
    extends_leaf = not tree or (attach is not None and is_leaf(tree, attach))
    outcome = MergeOutcome.NEW_LEAF if extends_leaf else MergeOutcome.NEW_BRANCH
    return MergeResult(new, outcome)


def _graft(tree: RevTree, revs: tuple[str, ...]) -> RevTree:
    changed: dict[str, RevNode] | None = None
    for index, rev in enumerate(revs[:-1]):
        node = (changed or tree).get(rev)
        parent = revs[index + 1]
        if node is not None and node.parent is None:
            changed = changed if changed is not None else dict(tree)
            changed[rev] = RevNode(parent, node.deleted)
            if parent not in changed:
                changed[parent] = RevNode(None, False)
        elif node is None:
            break
    return changed if changed is not None else tree


def leaves(tree: RevTree) -> list[str]:
    """Return the revisions nobody descends from, highest generation first."""
    if len(tree) == 1:  # a new document: its only revision is its only leaf
        return list(tree)
    parents = {node.parent for node in tree.values()}
    found = [rev for rev in tree if rev not in parents]
    if len(found) > 1:
        found.sort(key=_rev_sort_key, reverse=True)
    return found


def _rev_sort_key(rev: str) -> tuple[int, str]:
    pos, _, hash_ = rev.partition("-")
    return int(pos), hash_


def is_leaf(tree: RevTree, rev: str) -> bool:
    """Tell whether ``rev`` is a leaf of ``tree``."""
    return rev in tree and all(node.parent != rev for node in tree.values())


def rev_path(tree: RevTree, rev: str, limit: int | None = None) -> list[str]:
    """Return ``rev`` and its known ancestors, newest first (what ``_revisions`` lists)."""
    path: list[str] = []
    current: str | None = rev
    seen: set[str] = set()
    while current is not None and current in tree and current not in seen:
        if limit is not None and len(path) >= limit:
            break
        path.append(current)
        seen.add(current)
        current = tree[current].parent
    return path


def descendant_leaves(tree: RevTree, rev: str) -> list[str]:
    """Return the leaves at or below ``rev`` (what ``latest=true`` resolves a revision to)."""
    if rev not in tree:
        return []
    children: dict[str, list[str]] = {}
    for child, node in tree.items():
        if node.parent is not None:
            children.setdefault(node.parent, []).append(child)
    found: list[str] = []
    stack = [rev]
    while stack:
        current = stack.pop()
        kids = children.get(current)
        if kids:
            stack.extend(kids)
        else:
            found.append(current)
    found.sort(key=_rev_sort_key, reverse=True)
    return found


def stem(tree: RevTree, limit: int) -> tuple[RevTree, frozenset[str]]:
    """Keep the newest ``limit`` revisions of every leaf; return the tree and the dropped revs."""
    if limit < 1:
        raise BadRequest("revs_limit must be at least 1")
    if len(tree) <= limit:  # no path can be longer than the whole tree
        return tree, frozenset()
    # depth[rev]: distance to the nearest leaf below.  couch_key_tree:stem merges every leaf's
    # newest ``limit`` revisions back into a tree, so an edge survives only if one such path
    # holds both its ends: a node kept for one branch does not re-attach a cut ancestor.
    depth: dict[str, int] = {}
    for leaf in leaves(tree):
        current: str | None = leaf
        distance = 0
        while current is not None and distance < limit and current in tree:
            if depth.get(current, limit) <= distance:
                break  # reached before from a closer leaf, and so were its ancestors
            depth[current] = distance
            current = tree[current].parent
            distance += 1
    stemmed = {
        rev: node if node.parent is None or depth[rev] + 1 < limit else RevNode(None, node.deleted)
        for rev, node in tree.items()
        if rev in depth
    }
    if stemmed == tree:
        return tree, frozenset()
    return stemmed, frozenset(set(tree) - set(depth))


def tree_to_data(tree: RevTree) -> dict[str, list[Any]]:
    """Serialize: ``{"2-b": ["1-a", 0], "1-a": [null, 0]}``."""
    return {rev: [node.parent, 1 if node.deleted else 0] for rev, node in tree.items()}


def tree_from_data(data: Mapping[str, Any]) -> RevTree:
    """Inverse of ``tree_to_data``."""
    return {rev: RevNode(value[0], bool(value[1])) for rev, value in data.items()}
