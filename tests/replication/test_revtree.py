"""The revision tree, with the cases of CouchDB's couch_key_tree_tests.erl and PouchDB's
test.merge.js ported onto the flat model.

CouchDB keys become revision ids by prefixing their generation ("1a" at depth 2 is "2-1a");
PouchDB's "2_0" becomes "2-0".  A stemmed root (CouchDB's ``{Pos, Tree}`` with Pos > 1) is a
node whose parent is None.  Fixtures are module constants drawn above their literals; merges
get a read-only view, so a mutating merge fails loudly instead of leaking into the next test
(PouchDB's suite has to rebuild its fixtures in ``beforeEach`` because its merge mutates).
"""

import json
from types import MappingProxyType

import pytest

from replication import (
    EMPTY_TREE,
    BadRequest,
    MergeOutcome,
    RevNode,
    descendant_leaves,
    is_leaf,
    leaves,
    live_leaf_count,
    merge,
    rev_path,
    stem,
    tree_from_data,
    tree_to_data,
)

N = RevNode
NEW_LEAF = MergeOutcome.NEW_LEAF
NEW_BRANCH = MergeOutcome.NEW_BRANCH
INTERNAL_NODE = MergeOutcome.INTERNAL_NODE


def merged(tree, path, deleted=False):
    """Merge into a read-only view: a mutating merge would raise TypeError."""
    result = merge(MappingProxyType(dict(tree)), path, deleted)
    return dict(result.tree), result.outcome


# --- couch_key_tree_tests.erl fixtures -------------------------------------------------------

# 1-1
ONE = {"1-1": N(None)}

# 1-1   1-2            (two unrelated roots)
TWO_SIBS = {"1-1": N(None), "1-2": N(None)}

# 1-1   1-2   1-3
THREE_SIBS = {"1-1": N(None), "1-2": N(None), "1-3": N(None)}

# 1-1
#  |
# 2-1a
ONE_CHILD = {"1-1": N(None), "2-1a": N("1-1")}

# 1-1
#  |
# 2-1a
#  |
# 3-1aa
TWO_CHILD = {"1-1": N(None), "2-1a": N("1-1"), "3-1aa": N("2-1a")}

#     1-1
#    /   \
# 2-1a   2-1b
TWO_CHILD_SIBS = {"1-1": N(None), "2-1a": N("1-1"), "2-1b": N("1-1")}

#     1-1
#    /   \
# 2-1a   2-1b
#  |
# 3-1aa
TWO_CHILD_PLUS_SIBS = {
    "1-1": N(None),
    "2-1a": N("1-1"),
    "2-1b": N("1-1"),
    "3-1aa": N("2-1a"),
}

#     1-1
#    /   \
# 2-1a   2-1b
#          |
#        3-1bb
TWO_CHILD_PLUS_SIBS2 = {
    "1-1": N(None),
    "2-1a": N("1-1"),
    "2-1b": N("1-1"),
    "3-1bb": N("2-1b"),
}

# (1-1 stemmed away)
# 2-1a   2-1b
#          |
#        3-1bb
STEMMED_TWO_CHILD_SIBS2 = {"2-1a": N(None), "2-1b": N(None), "3-1bb": N("2-1b")}

# (1-1 stemmed away)
# 2-1a
#  |
# 3-1aa
STEMMED_1A = {"2-1a": N(None), "3-1aa": N("2-1a")}


def test_merging_a_path_into_an_empty_tree_is_the_path_and_a_new_leaf():
    assert merged(EMPTY_TREE, ["1-1"]) == (ONE, NEW_LEAF)
    assert merged({}, ["3-1aa", "2-1a", "1-1"]) == (TWO_CHILD, NEW_LEAF)


def test_merging_a_tree_with_itself_is_reflexive():
    assert merged(ONE, ["1-1"]) == (ONE, INTERNAL_NODE)
    assert merged(TWO_CHILD, ["3-1aa", "2-1a", "1-1"]) == (TWO_CHILD, INTERNAL_NODE)


def test_merging_a_prefix_of_a_tree_yields_the_tree():
    assert merged(TWO_SIBS, ["1-1"]) == (TWO_SIBS, INTERNAL_NODE)
    assert merged(TWO_CHILD, ["2-1a", "1-1"]) == (TWO_CHILD, INTERNAL_NODE)


def test_merging_an_unrelated_root_is_a_new_branch():
    assert merged(TWO_SIBS, ["1-3"]) == (THREE_SIBS, NEW_BRANCH)


@pytest.mark.parametrize("tree", [TWO_CHILD, TWO_CHILD_SIBS, TWO_CHILD_PLUS_SIBS])
def test_merging_every_leaf_path_of_a_tree_back_into_it_changes_nothing(tree):
    current = dict(tree)
    for leaf in leaves(tree):
        current, outcome = merged(current, rev_path(tree, leaf))
        assert outcome is INTERNAL_NODE
    assert current == tree


def test_merging_a_path_that_extends_a_leaf_is_a_new_leaf():
    # should_merge_tree_of_odd_length: 1-1 > 2-1a > 3-1aa grows the 2-1a leaf.
    assert merged(TWO_CHILD_SIBS, ["3-1aa", "2-1a", "1-1"]) == (TWO_CHILD_PLUS_SIBS, NEW_LEAF)


def test_merging_a_path_that_forks_an_inner_revision_is_a_new_branch():
    # PouchDB's "Merging tree of uneven length at node 2": 2-1b forks 1-1, which has 2-1a.
    expected = {"1-1": N(None), "2-1a": N("1-1"), "3-1aa": N("2-1a"), "2-1b": N("1-1")}
    assert merged(TWO_CHILD, ["2-1b", "1-1"]) == (expected, NEW_BRANCH)


@pytest.mark.parametrize(
    ("tree", "stemmed_path"),
    [
        pytest.param(TWO_CHILD_SIBS, ["2-1a"], id="should_merge_tree_with_stem"),
        pytest.param(TWO_CHILD_PLUS_SIBS2, ["3-1bb"], id="stem_at_deeper_level"),
        pytest.param(STEMMED_TWO_CHILD_SIBS2, ["3-1bb"], id="stem_at_deeper_level_deeper_paths"),
        pytest.param(TWO_CHILD, ["3-1aa"], id="single_tree_with_deeper_stem"),
        pytest.param(TWO_CHILD, ["3-1aa", "2-1a"], id="tree_with_large_stem"),
        pytest.param(STEMMED_1A, ["3-1aa"], id="should_merge_stems"),
    ],
)
def test_merging_a_stemmed_path_the_tree_already_holds_is_an_internal_node(tree, stemmed_path):
    assert merged(tree, stemmed_path) == (tree, INTERNAL_NODE)


def test_merging_a_stem_that_shares_no_revision_is_a_new_branch():
    # should_create_conflicts_on_merge: nothing ties 3-1aa to 2-1a yet.
    #
    # 1-1
    #  |
    # 2-1a    3-1aa
    expected = {"1-1": N(None), "2-1a": N("1-1"), "3-1aa": N(None)}
    tree, outcome = merged(ONE_CHILD, ["3-1aa"])
    assert (tree, outcome) == (expected, NEW_BRANCH)
    assert live_leaf_count(tree) == 2


def test_a_full_path_reconnects_a_stem_induced_conflict():
    # should_create_no_conflicts_on_merge: the full path joins 3-1aa to its parent.
    #
    # 1-1                        1-1
    #  |                          |
    # 2-1a    3-1aa     ==>      2-1a
    #                             |
    #                            3-1aa
    #
    # CouchDB reports new_leaf (its forest only folds the stem in during the final stem pass);
    # here the leaf 3-1aa was already known, so nothing new needs storing: internal_node.
    split = {"1-1": N(None), "2-1a": N("1-1"), "3-1aa": N(None)}
    tree, outcome = merged(split, ["3-1aa", "2-1a", "1-1"])
    assert (tree, outcome) == (TWO_CHILD, INTERNAL_NODE)
    assert live_leaf_count(tree) == 1


def test_couchdb_902_a_path_through_one_branch_leaves_the_other_branch_alone():
    #        1-foo                       1-foo
    #       /     \                     /     \
    #  2-foo2    2-foo3     ==>    2-foo2    2-foo3
    #                                          |
    #                                        3-foo4
    foo = {"1-foo": N(None), "2-foo2": N("1-foo"), "2-foo3": N("1-foo")}
    foobar = {**foo, "3-foo4": N("2-foo3")}
    assert merged(foo, ["3-foo4", "2-foo3", "1-foo"]) == (foobar, NEW_LEAF)


# --- test.merge.js fixtures ------------------------------------------------------------------

# 1-1
#  |
# 2-0
TWO0 = {"1-1": N(None), "2-0": N("1-1")}

# 1-1
#  |
# 2-0
#  |
# 3-0
WITH_NEW_LEAF = {"1-1": N(None), "2-0": N("1-1"), "3-0": N("2-0")}

#    1-1
#   /   \
# 2-0   2-1
NEW_BRANCH_TREE = {"1-1": N(None), "2-0": N("1-1"), "2-1": N("1-1")}

#    1-1
#   /   \
# 2-0   2-1
#  |
# 3-0
NEW_BRANCH_LEAF = {"1-1": N(None), "2-0": N("1-1"), "2-1": N("1-1"), "3-0": N("2-0")}

#       1-1
#      /   \
#    2-0   2-1
#   /   \
# 3-0   3-1
NEW_BRANCH_LEAF_BRANCH = {
    "1-1": N(None),
    "2-0": N("1-1"),
    "2-1": N("1-1"),
    "3-0": N("2-0"),
    "3-1": N("2-0"),
}


def test_merging_a_new_leaf_gives_a_new_leaf():
    assert merged(TWO0, ["3-0", "2-0"]) == (WITH_NEW_LEAF, NEW_LEAF)


def test_merging_a_sibling_path_is_a_new_branch_in_either_order():
    two1 = {"1-1": N(None), "2-1": N("1-1")}
    assert merged(TWO0, ["2-1", "1-1"]) == (NEW_BRANCH_TREE, NEW_BRANCH)
    assert merged(two1, ["2-0", "1-1"]) == (NEW_BRANCH_TREE, NEW_BRANCH)


def test_extending_one_leaf_of_a_branched_tree_is_a_new_leaf_not_a_new_branch():
    assert merged(NEW_BRANCH_TREE, ["3-0", "2-0"]) == (NEW_BRANCH_LEAF, NEW_LEAF)


def test_merging_a_deep_branch_into_a_branched_tree_is_a_new_branch():
    assert merged(NEW_BRANCH_LEAF, ["3-1", "2-0"]) == (NEW_BRANCH_LEAF_BRANCH, NEW_BRANCH)


def test_new_information_reconnects_stemming_induced_conflicts():
    # 1-1    3-0 (stemmed)   +  3-0 > 2-0 > 1-1   ==>   WITH_NEW_LEAF
    #
    # PouchDB reports new_leaf; the leaf 3-0 is already known here, so: internal_node.
    stemmed_conflicts = {"1-1": N(None), "3-0": N(None)}
    tree, outcome = merged(stemmed_conflicts, ["3-0", "2-0", "1-1"])
    assert (tree, outcome) == (WITH_NEW_LEAF, INTERNAL_NODE)


def test_simple_stemming_keeps_the_newest_revisions():
    tree, outcome = merged(TWO0, ["3-0", "2-0"])
    stemmed, dropped = stem(tree, 2)
    assert outcome is NEW_LEAF
    assert stemmed == {"2-0": N(None), "3-0": N("2-0")}
    assert dropped == {"1-1"}


def test_stemming_keeps_up_to_the_limit_on_every_branch():
    #  1-1          2-0 (stemmed)
    #   |          /   \
    #  2-1       3-0   3-1
    stemmed2 = {"1-1": N(None), "2-1": N("1-1"), "2-0": N(None), "3-0": N("2-0"), "3-1": N("2-0")}
    # 2-1   3-0   3-1     (all stemmed)
    stemmed3 = {"2-1": N(None), "3-0": N(None), "3-1": N(None)}
    tree, outcome = merged(NEW_BRANCH_LEAF_BRANCH, ["1-1"])
    assert outcome is INTERNAL_NODE
    assert stem(tree, 2) == (stemmed2, frozenset())  # nothing dropped, one edge cut
    assert stem(tree, 1) == (stemmed3, {"1-1", "2-0"})


def test_merging_a_full_path_into_a_stemmed_tree_recovers_as_much_as_it_can():
    # 2-1   3-0   3-1     +  3-0 > 2-0 > 1-1  ==>   1-1    2-1    3-1
    #                                                |
    #                                               2-0
    #                                                |
    #                                               3-0
    # Nothing says 2-1 or 3-1 descend from 1-1 / 2-0, so they stay separate roots.
    stemmed3 = {"2-1": N(None), "3-0": N(None), "3-1": N(None)}
    partial_recover = {
        "1-1": N(None),
        "2-0": N("1-1"),
        "3-0": N("2-0"),
        "2-1": N(None),
        "3-1": N(None),
    }
    assert merged(stemmed3, ["3-0", "2-0", "1-1"]) == (partial_recover, INTERNAL_NODE)


# --- stemming (couch_key_tree_tests.erl "Stemming") ------------------------------------------


def test_stemming_more_levels_than_exist_changes_nothing():
    assert stem(TWO_CHILD, 3) == (TWO_CHILD, frozenset())
    assert stem(TWO_CHILD, 1000) == (TWO_CHILD, frozenset())


def test_stemming_to_one_level_keeps_only_the_deepest_node():
    assert stem(TWO_CHILD, 1) == ({"3-1aa": N(None)}, {"1-1", "2-1a"})


def test_stemming_to_two_levels_keeps_the_two_deepest_nodes():
    assert stem(TWO_CHILD, 2) == (STEMMED_1A, {"1-1"})


def test_stemming_keeps_the_tombstone_flag_of_a_leaf():
    deleted = {"1-a": N(None), "2-b": N("1-a"), "3-c": N("2-b", deleted=True)}
    assert stem(deleted, 1) == ({"3-c": N(None, deleted=True)}, {"1-a", "2-b"})


@pytest.mark.parametrize("limit", [0, -1])
def test_a_revs_limit_below_one_is_a_bad_request(limit):
    with pytest.raises(BadRequest):
        stem(TWO_CHILD, limit)


# --- paths and their validation --------------------------------------------------------------


def test_merging_an_empty_path_is_a_bad_request():
    with pytest.raises(BadRequest):
        merge(ONE, [])


@pytest.mark.parametrize("path", [["3-c", "1-a"], ["1-a", "2-b"], ["2-b", "2-a"]])
def test_merging_a_path_with_non_consecutive_generations_is_a_bad_request(path):
    with pytest.raises(BadRequest):
        merge(EMPTY_TREE, path)


def test_a_deleted_path_marks_only_its_leaf_as_a_tombstone():
    tree, outcome = merged(ONE_CHILD, ["3-x", "2-1a"], deleted=True)
    assert outcome is NEW_LEAF
    assert tree["3-x"] == N("2-1a", deleted=True)
    assert tree["2-1a"] == N("1-1", deleted=False)


def test_a_tombstone_learned_after_its_descendant_is_still_recorded():
    # 1-a > 2-d (deleted) > 3-r : the document was deleted, then recreated on top of 2-d.
    # Whichever path arrives first, 2-d ends up a tombstone, as couch_key_tree keeps it.
    recreated = ["3-r", "2-d", "1-a"]
    deletion = ["2-d", "1-a"]
    deleted_first, _ = merged({}, deletion, deleted=True)
    deleted_first, _ = merged(deleted_first, recreated)
    recreated_first, _ = merged({}, recreated)
    recreated_first, outcome = merged(recreated_first, deletion, deleted=True)
    assert outcome is INTERNAL_NODE
    assert deleted_first == recreated_first
    assert recreated_first["2-d"] == N("1-a", deleted=True)


def test_a_known_live_leaf_is_not_turned_into_a_tombstone_by_a_later_claim():
    tree, outcome = merged(ONE_CHILD, ["2-1a", "1-1"], deleted=True)
    assert (tree, outcome) == (ONE_CHILD, INTERNAL_NODE)


# --- leaves, paths, descendants (couch_key_tree_tests.erl "Leaves retrieving") ---------------


def test_leaves_come_highest_generation_first_then_highest_hash():
    assert leaves(TWO_CHILD_PLUS_SIBS) == ["3-1aa", "2-1b"]
    assert leaves(TWO_CHILD_SIBS) == ["2-1b", "2-1a"]
    assert leaves(NEW_BRANCH_LEAF_BRANCH) == ["3-1", "3-0", "2-1"]


@pytest.mark.parametrize(
    ("tree", "count"),
    [
        pytest.param(EMPTY_TREE, 0, id="empty tree"),
        pytest.param(ONE, 1, id="single node"),
        pytest.param(TWO_CHILD_SIBS, 2, id="two children"),
        pytest.param({"3-1bb": N(None)}, 1, id="stemmed tree"),
        pytest.param(STEMMED_TWO_CHILD_SIBS2, 2, id="stemmed forest"),
    ],
)
def test_leaf_counting(tree, count):
    assert len(leaves(tree)) == count


def test_is_leaf_tells_leaves_from_inner_and_unknown_revisions():
    assert is_leaf(TWO_CHILD_SIBS, "2-1a")
    assert not is_leaf(TWO_CHILD_SIBS, "1-1")
    assert not is_leaf(TWO_CHILD_SIBS, "9-zz")
    assert is_leaf(STEMMED_1A, "3-1aa")


def test_rev_path_lists_a_revision_and_its_ancestors_newest_first():
    assert rev_path(TWO_CHILD_SIBS, "1-1") == ["1-1"]
    assert rev_path(TWO_CHILD_SIBS, "2-1a") == ["2-1a", "1-1"]
    assert rev_path(TWO_CHILD, "3-1aa") == ["3-1aa", "2-1a", "1-1"]


def test_rev_path_stops_where_a_stemmed_tree_starts():
    assert rev_path(STEMMED_1A, "3-1aa") == ["3-1aa", "2-1a"]


def test_rev_path_honours_a_limit_and_ignores_unknown_revisions():
    assert rev_path(TWO_CHILD, "3-1aa", limit=2) == ["3-1aa", "2-1a"]
    assert rev_path(TWO_CHILD, "3-1aa", limit=0) == []
    assert rev_path(TWO_CHILD, "9-zz") == []


def test_descendant_leaves_of_an_inner_revision_are_the_leaves_below_it():
    assert descendant_leaves(TWO_CHILD_SIBS, "1-1") == ["2-1b", "2-1a"]
    assert descendant_leaves(NEW_BRANCH_LEAF_BRANCH, "2-0") == ["3-1", "3-0"]
    assert descendant_leaves(TWO_CHILD, "1-1") == ["3-1aa"]


def test_descendant_leaves_of_a_leaf_is_the_leaf_and_of_an_unknown_rev_nothing():
    assert descendant_leaves(TWO_CHILD_SIBS, "2-1a") == ["2-1a"]
    assert descendant_leaves(TWO_CHILD_SIBS, "1-x") == []


# --- serialization ---------------------------------------------------------------------------


def test_tree_to_data_is_a_compact_json_shape():
    deleted = {"1-a": N(None), "2-b": N("1-a", deleted=True)}
    assert tree_to_data(deleted) == {"1-a": [None, 0], "2-b": ["1-a", 1]}


@pytest.mark.parametrize(
    "tree",
    [EMPTY_TREE, ONE, TWO_CHILD_PLUS_SIBS, STEMMED_TWO_CHILD_SIBS2, NEW_BRANCH_LEAF_BRANCH],
)
def test_tree_data_round_trips_through_json(tree):
    assert tree_from_data(json.loads(json.dumps(tree_to_data(tree)))) == tree
