"""Apply one edit to a revision tree, with CouchDB's ``new_edits`` rules.

``new_edits=true`` (an ordinary write): the edit must name a current leaf in ``_rev`` (or
none, to create a document or revive a deleted one); the server mints the child revision.
Because revision hashes are deterministic, repeating an edit that is already stored is an
idempotent success instead of a conflict.

``new_edits=false`` (a replicator): the client's revision path is merged as is; a leaf that
is already known is a no-op.  See protocol.rst, "Upload Batch of Changed Documents".
"""

from __future__ import annotations

from typing import NamedTuple

from replication.docs import DocEdit
from replication.errors import BadRequest, Conflict, GatewayError
from replication.revs import new_rev_hash, rev_pos
from replication.revtree import EMPTY_TREE, MergeOutcome, RevNode, RevTree, is_leaf, merge, stem
from replication.winner import winning_rev


class EditResult(NamedTuple):
    """The tree after the edit, the revision it produced, and whether its body is new."""

    tree: RevTree
    rev: str | None
    stored: bool = False
    error: GatewayError | None = None
    dropped: frozenset[str] = frozenset()


def edit_digests(edit: DocEdit) -> list[str]:
    """Return the attachment identities that enter the revision hash."""
    return [f"{att.name}:{att.digest}" for att in edit.attachments]


def parent_for_new_edit(tree: RevTree, edit: DocEdit) -> str | None:
    """Return the revision a ``new_edits=true`` edit extends, or raise ``Conflict``."""
    if not tree:
        if edit.rev is not None:
            raise Conflict()
        return None
    if edit.rev is None:
        winner = winning_rev(tree)
        if winner.deleted:
            return winner.rev
        raise Conflict()
    return edit.rev


def new_child_rev(parent: str | None, edit: DocEdit) -> str:
    """Return the deterministic revision an edit of ``parent`` produces."""
    pos = rev_pos(parent) + 1 if parent else 1
    return f"{pos}-{new_rev_hash(parent, edit.deleted, edit.body, edit_digests(edit))}"


def apply_edit(
    tree: RevTree | None, edit: DocEdit, *, new_edits: bool, revs_limit: int
) -> EditResult:
    """Apply ``edit`` to ``tree``; never raises for per-document problems, returns them."""
    current = tree or EMPTY_TREE
    try:
        if new_edits:
            return _apply_new_edit(current, edit, revs_limit)
        return _apply_replicated(current, edit, revs_limit)
    except GatewayError as exc:
        return EditResult(current, None, error=exc)


def _apply_new_edit(tree: RevTree, edit: DocEdit, revs_limit: int) -> EditResult:
    try:
        parent = parent_for_new_edit(tree, edit)
    except Conflict:
        return _idempotent_or_conflict(tree, edit)
    child = new_child_rev(parent, edit)
    if child in tree:
        return EditResult(tree, child)
    if parent is not None and not is_leaf(tree, parent):
        return EditResult(tree, None, error=Conflict())
    new = dict(tree)
    new[child] = RevNode(parent, edit.deleted)
    stemmed, dropped = stem(new, revs_limit)
    return EditResult(stemmed, child, stored=True, dropped=dropped)


def _idempotent_or_conflict(tree: RevTree, edit: DocEdit) -> EditResult:
    # The same edit, already applied (a retried request or a twin device): same revision.
    if edit.rev is None or edit.rev in tree:
        child = new_child_rev(edit.rev, edit)
        if child in tree:
            return EditResult(tree, child)
    return EditResult(tree, None, error=Conflict())


def _apply_replicated(tree: RevTree, edit: DocEdit, revs_limit: int) -> EditResult:
    path = edit.path or ((edit.rev,) if edit.rev else ())
    if not path:
        raise BadRequest("A document sent with new_edits=false needs _rev or _revisions")
    result = merge(tree, path, edit.deleted)
    if result.outcome is MergeOutcome.INTERNAL_NODE:
        stemmed, dropped = stem(result.tree, revs_limit)
        return EditResult(stemmed, path[0], dropped=dropped)
    stemmed, dropped = stem(result.tree, revs_limit)
    stored = path[0] in stemmed
    return EditResult(stemmed, path[0], stored=stored, dropped=dropped)
