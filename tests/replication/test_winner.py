"""The winning revision and conflicts: the rule every replica must apply identically."""

import pytest

from replication import (
    Leaf,
    RevNode,
    collect_conflicts,
    collect_deleted_conflicts,
    leaf_infos,
    live_leaf_count,
    winning_rev,
)

N = RevNode


def test_a_single_revision_wins():
    assert winning_rev({"1-a": N(None)}) == Leaf("1-a", deleted=False)


def test_a_live_leaf_beats_a_deleted_leaf_of_a_higher_generation():
    #      1-a
    #     /   \
    #   2-b   2-c
    #          |
    #         3-d (deleted)
    tree = {"1-a": N(None), "2-b": N("1-a"), "2-c": N("1-a"), "3-d": N("2-c", deleted=True)}
    assert winning_rev(tree) == Leaf("2-b", deleted=False)


def test_the_higher_generation_wins_whatever_the_hash():
    #     1-a
    #    /   \
    #  2-z   2-b
    #         |
    #        3-a
    tree = {"1-a": N(None), "2-z": N("1-a"), "2-b": N("1-a"), "3-a": N("2-b")}
    assert winning_rev(tree).rev == "3-a"


def test_generations_compare_as_numbers_not_strings():
    # 9-z (stemmed)    10-a (stemmed)
    tree = {"9-z": N(None), "10-a": N(None)}
    assert winning_rev(tree).rev == "10-a"


def test_a_tie_in_generation_is_broken_by_the_larger_hash():
    #     1-a
    #    /   \
    #  2-b   2-c
    tree = {"1-a": N(None), "2-b": N("1-a"), "2-c": N("1-a")}
    assert winning_rev(tree).rev == "2-c"


def test_when_every_leaf_is_deleted_the_best_tombstone_wins():
    #     1-a
    #    /   \
    #  2-b   2-c      (both deleted)
    tree = {"1-a": N(None), "2-b": N("1-a", deleted=True), "2-c": N("1-a", deleted=True)}
    assert winning_rev(tree) == Leaf("2-c", deleted=True)


def test_pouchdb_winning_rev_returns_the_longest_leaf():
    #              1-bfe7...
    #             /         \
    #      2-44d7...       2-56e6...
    #                          |
    #                      3-93c3...
    tree = {
        "1-bfe70372c90ded1087239e5191984f76": N(None),
        "2-44d71a718b90e4696c06a90e08912c8f": N("1-bfe70372c90ded1087239e5191984f76"),
        "2-56e657612d55ab1a402dcb281c874f2a": N("1-bfe70372c90ded1087239e5191984f76"),
        "3-93c3db16462f656f7172ccabd3cf6cd6": N("2-56e657612d55ab1a402dcb281c874f2a"),
    }
    assert winning_rev(tree).rev == "3-93c3db16462f656f7172ccabd3cf6cd6"


def test_pouchdb_winning_rev_returns_the_longest_leaf_again_issue_293():
    #  1-203d...              1-c6d5...
    #     |                  /         \
    #  2-bf5e...       2-1b8d...     2-59ed...
    #     |                              |
    #  3-28cd...                     3-64a9...
    tree = {
        "1-203db1a1810a838895d561f67b224b5d": N(None),
        "2-bf5e08a4f9fa6d33a53f4a00ae3ea399": N("1-203db1a1810a838895d561f67b224b5d"),
        "3-28cd77a3ca30f79e1cfffcd6a41ca308": N("2-bf5e08a4f9fa6d33a53f4a00ae3ea399"),
        "1-c6d5cce35bcfbef90b20f140d723cbdb": N(None),
        "2-1b8dfbb1267e213328920bae43f2f597": N("1-c6d5cce35bcfbef90b20f140d723cbdb"),
        "2-59ed830b84b276ab776c3c51aaf93a16": N("1-c6d5cce35bcfbef90b20f140d723cbdb"),
        "3-64a9842c6aea50bf24660378e496e853": N("2-59ed830b84b276ab776c3c51aaf93a16"),
    }
    assert winning_rev(tree).rev == "3-64a9842c6aea50bf24660378e496e853"


#          1-a
#       /   |   \
#    2-b   2-c   2-d (deleted)
#     |     |
#    3-e   3-f (deleted)
CONFLICTED = {
    "1-a": N(None),
    "2-b": N("1-a"),
    "2-c": N("1-a"),
    "2-d": N("1-a", deleted=True),
    "3-e": N("2-b"),
    "3-f": N("2-c", deleted=True),
}


def test_conflicts_are_the_live_leaves_that_lost():
    assert winning_rev(CONFLICTED).rev == "3-e"
    assert collect_conflicts(CONFLICTED) == []
    tree = {**CONFLICTED, "4-g": N("3-e"), "2-h": N("1-a")}
    assert collect_conflicts(tree) == ["2-h"]


def test_conflicts_are_listed_best_first():
    tree = {"1-a": N(None), "2-b": N("1-a"), "2-c": N("1-a"), "3-d": N("2-b"), "2-e": N("1-a")}
    assert winning_rev(tree).rev == "3-d"
    assert collect_conflicts(tree) == ["2-e", "2-c"]


def test_deleted_conflicts_are_the_tombstones_that_lost():
    assert collect_deleted_conflicts(CONFLICTED) == ["3-f", "2-d"]


def test_a_deleted_winner_is_neither_a_conflict_nor_a_deleted_conflict():
    tree = {"1-a": N(None), "2-b": N("1-a", deleted=True)}
    assert collect_conflicts(tree) == []
    assert collect_deleted_conflicts(tree) == []


def test_leaf_infos_put_the_winner_first():
    assert leaf_infos(CONFLICTED) == [
        Leaf("3-e", deleted=False),
        Leaf("3-f", deleted=True),
        Leaf("2-d", deleted=True),
    ]


@pytest.mark.parametrize(
    ("tree", "count"),
    [
        pytest.param({}, 0, id="empty"),
        pytest.param({"1-a": N(None)}, 1, id="one revision"),
        pytest.param({"1-a": N(None, deleted=True)}, 0, id="deleted document"),
        pytest.param(CONFLICTED, 1, id="one live leaf among tombstones"),
        pytest.param({**CONFLICTED, "2-h": N("1-a")}, 2, id="in conflict"),
    ],
)
def test_live_leaf_count_counts_the_non_deleted_leaves(tree, count):
    assert live_leaf_count(tree) == count
