"""``apply_edit`` under CouchDB's ``new_edits`` rules."""

from types import MappingProxyType

import pytest

from replication import (
    EMPTY_TREE,
    Attachment,
    BadRequest,
    Conflict,
    DocEdit,
    Leaf,
    RevNode,
    apply_edit,
    collect_conflicts,
    live_leaf_count,
    new_child_rev,
    rev_path,
    rev_pos,
    winning_rev,
)

N = RevNode
LIMIT = 1000


def write(tree, edit, revs_limit=LIMIT):
    """Apply an interactive edit to a read-only view (a mutation would raise)."""
    return apply_edit(
        MappingProxyType(dict(tree or {})), edit, new_edits=True, revs_limit=revs_limit
    )


def replicate(tree, edit, revs_limit=LIMIT):
    """Apply a replicated edit (``new_edits=false``) to a read-only view."""
    return apply_edit(
        MappingProxyType(dict(tree or {})), edit, new_edits=False, revs_limit=revs_limit
    )


def created(body=None):
    """Return the tree and revision of a freshly created document."""
    result = write(None, DocEdit("doc", body=body or {"v": 1}))
    return dict(result.tree), result.rev


# --- new_edits=true --------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, EMPTY_TREE])
def test_creating_a_document_mints_generation_one(empty):
    edit = DocEdit("doc", body={"v": 1})
    result = apply_edit(empty, edit, new_edits=True, revs_limit=LIMIT)
    assert result.error is None
    assert result.stored
    assert result.rev == new_child_rev(None, edit)
    assert rev_pos(result.rev) == 1
    assert result.tree == {result.rev: N(None)}
    assert result.dropped == frozenset()


def test_updating_the_winning_leaf_adds_a_child():
    tree, rev1 = created()
    result = write(tree, DocEdit("doc", rev=rev1, body={"v": 2}))
    assert result.error is None
    assert result.stored
    assert rev_pos(result.rev) == 2
    assert result.tree[result.rev] == N(rev1)
    assert winning_rev(result.tree).rev == result.rev


def test_updating_a_stale_revision_is_a_conflict():
    tree, rev1 = created()
    tree = dict(write(tree, DocEdit("doc", rev=rev1, body={"v": 2})).tree)
    result = write(tree, DocEdit("doc", rev=rev1, body={"v": 3}))
    assert isinstance(result.error, Conflict)
    assert (result.rev, result.stored) == (None, False)
    assert result.tree == tree


def test_creating_a_document_that_exists_without_rev_is_a_conflict():
    tree, _ = created({"v": 1})
    result = write(tree, DocEdit("doc", body={"v": "other"}))
    assert isinstance(result.error, Conflict)
    assert result.tree == tree


def test_updating_a_document_that_does_not_exist_with_a_rev_is_a_conflict():
    result = write(None, DocEdit("doc", rev="1-abc", body={"v": 1}))
    assert isinstance(result.error, Conflict)
    assert result.tree == {}


def test_updating_an_unknown_revision_of_an_existing_document_is_a_conflict():
    tree, _ = created()
    result = write(tree, DocEdit("doc", rev="1-unknown", body={"v": 2}))
    assert isinstance(result.error, Conflict)


def test_deleting_the_winner_leaves_a_tombstone():
    tree, rev1 = created()
    result = write(tree, DocEdit("doc", rev=rev1, deleted=True))
    assert result.error is None
    assert result.tree[result.rev] == N(rev1, deleted=True)
    assert winning_rev(result.tree).deleted


def test_recreating_a_deleted_document_without_rev_extends_the_tombstone():
    #  1-x > 2-y (deleted) > 3-z
    tree, rev1 = created()
    deletion = write(tree, DocEdit("doc", rev=rev1, deleted=True))
    result = write(deletion.tree, DocEdit("doc", body={"v": "again"}))
    assert result.error is None
    assert result.stored
    assert result.tree[result.rev] == N(deletion.rev)
    assert rev_path(result.tree, result.rev) == [result.rev, deletion.rev, rev1]
    assert winning_rev(result.tree) == Leaf(result.rev, deleted=False)


def test_the_same_edit_twice_is_idempotent_and_stores_nothing_the_second_time():
    tree, rev1 = created()
    edit = DocEdit("doc", rev=rev1, body={"v": 2})
    first = write(tree, edit)
    second = write(first.tree, edit)
    assert (second.error, second.rev, second.stored) == (None, first.rev, False)
    assert second.tree == first.tree


def test_the_same_edit_made_on_two_devices_is_one_revision():
    tree, rev1 = created()
    device_a = write(tree, DocEdit("doc", rev=rev1, body={"b": 2, "a": 1}))
    device_b = write(tree, DocEdit("doc", rev=rev1, body={"a": 1, "b": 2}))
    assert device_a.rev == device_b.rev


def test_the_same_edit_repeated_after_a_later_edit_returns_its_revision():
    # A retried request whose first attempt was stored and then built upon.
    tree, rev1 = created()
    edit = DocEdit("doc", rev=rev1, body={"v": 2})
    second = write(tree, edit)
    third = write(second.tree, DocEdit("doc", rev=second.rev, body={"v": 3}))
    retried = write(third.tree, edit)
    assert (retried.error, retried.rev, retried.stored) == (None, second.rev, False)


def test_editing_an_inner_revision_with_a_new_body_is_a_conflict():
    tree, rev1 = created()
    second = write(tree, DocEdit("doc", rev=rev1, body={"v": 2}))
    result = write(second.tree, DocEdit("doc", rev=rev1, body={"v": "fork"}))
    assert isinstance(result.error, Conflict)


def test_an_edit_beyond_revs_limit_stems_and_reports_what_it_dropped():
    tree, rev1 = created()
    rev2 = write(tree, DocEdit("doc", rev=rev1, body={"v": 2}), revs_limit=2)
    assert rev2.dropped == frozenset()
    rev3 = write(rev2.tree, DocEdit("doc", rev=rev2.rev, body={"v": 3}), revs_limit=2)
    assert rev3.stored
    assert rev3.dropped == {rev1}
    assert rev3.tree == {rev2.rev: N(None), rev3.rev: N(rev2.rev)}


def test_an_attachment_digest_takes_part_in_the_revision():
    _, rev1 = created()
    plain = DocEdit("doc", rev=rev1, body={"v": 2})
    with_photo = DocEdit(
        "doc", rev=rev1, body={"v": 2}, attachments=(Attachment("p.jpg", digest="md5-x"),)
    )
    assert new_child_rev(rev1, plain) != new_child_rev(rev1, with_photo)


# --- new_edits=false -------------------------------------------------------------------------

#  1-a
#   |
#  2-b
LINEAR = {"1-a": N(None), "2-b": N("1-a")}


def test_a_replicated_branch_creates_a_conflict():
    #     1-a
    #    /   \
    #  2-b   2-c
    result = replicate(LINEAR, DocEdit("doc", path=("2-c", "1-a"), body={"v": "c"}))
    assert (result.error, result.rev, result.stored) == (None, "2-c", True)
    assert live_leaf_count(result.tree) == 2
    assert winning_rev(result.tree).rev == "2-c"
    assert collect_conflicts(result.tree) == ["2-b"]


def test_a_replicated_known_leaf_is_a_no_op():
    result = replicate(LINEAR, DocEdit("doc", rev="2-b", path=("2-b", "1-a")))
    assert (result.error, result.rev, result.stored) == (None, "2-b", False)
    assert result.tree == LINEAR


def test_a_replicated_descendant_extends_the_leaf():
    result = replicate(LINEAR, DocEdit("doc", path=("4-d", "3-c", "2-b", "1-a")))
    assert result.stored
    assert rev_path(result.tree, "4-d") == ["4-d", "3-c", "2-b", "1-a"]
    assert live_leaf_count(result.tree) == 1


def test_a_replicated_tombstone_on_a_branch_keeps_the_live_winner():
    result = replicate(LINEAR, DocEdit("doc", path=("3-x", "2-c", "1-a"), deleted=True))
    assert result.tree["3-x"] == N("2-c", deleted=True)
    assert winning_rev(result.tree).rev == "2-b"
    assert live_leaf_count(result.tree) == 1


def test_a_replicated_rev_without_revisions_is_merged_as_a_one_revision_path():
    result = replicate(None, DocEdit("doc", rev="3-x"))
    assert (result.error, result.rev, result.stored) == (None, "3-x", True)
    assert result.tree == {"3-x": N(None)}


def test_a_replicated_document_without_rev_is_an_error_returned_not_raised():
    result = replicate(LINEAR, DocEdit("doc", body={"v": 1}))
    assert isinstance(result.error, BadRequest)
    assert (result.rev, result.stored) == (None, False)
    assert result.tree == LINEAR


def test_a_replicated_path_with_a_gap_is_an_error_returned_not_raised():
    result = replicate(LINEAR, DocEdit("doc", path=("4-d", "2-b")))
    assert isinstance(result.error, BadRequest)
    assert result.tree == LINEAR


def test_a_replicated_path_longer_than_revs_limit_is_stemmed():
    result = replicate(None, DocEdit("doc", path=("4-d", "3-c", "2-b", "1-a")), revs_limit=2)
    assert result.tree == {"3-c": N(None), "4-d": N("3-c")}
    assert result.dropped == {"2-b", "1-a"}
    assert result.stored


def test_retrying_an_identical_create_returns_the_same_revision_not_a_conflict():
    edit = DocEdit("doc", body={"title": "same on two devices"})
    first = apply_edit({}, edit, new_edits=True, revs_limit=LIMIT)
    again = apply_edit(first.tree, edit, new_edits=True, revs_limit=LIMIT)
    assert again.error is None and again.rev == first.rev and not again.stored
    other = apply_edit(
        first.tree, DocEdit("doc", body={"title": "x"}), new_edits=True, revs_limit=LIMIT
    )
    assert other.error is not None
