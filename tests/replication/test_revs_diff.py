"""``_revs_diff``: missing revisions and possible ancestors (couch_key_tree find_missing)."""

from replication import RevNode, RevsDiff, revs_diff

N = RevNode

#     1-1
#    /   \
# 2-1a   2-1b
TWO_CHILD_SIBS = {"1-1": N(None), "2-1a": N("1-1"), "2-1b": N("1-1")}


def test_nothing_is_missing_when_every_revision_is_known():
    assert revs_diff(TWO_CHILD_SIBS, ["1-1", "2-1a"]) is None


def test_inner_revisions_count_as_known():
    assert revs_diff(TWO_CHILD_SIBS, ["1-1"]) is None


def test_unknown_revisions_are_missing_in_request_order():
    diff = revs_diff(TWO_CHILD_SIBS, ["1-1", "1-10", "2-1a", "101-x"])
    assert diff is not None
    assert diff.missing == ("1-10", "101-x")


def test_a_stemmed_tree_misses_the_revisions_it_dropped():
    # (1-1 stemmed)  2-1a > 3-1aa
    stemmed1 = {"2-1a": N(None), "3-1aa": N("2-1a")}
    # (1-1, 2-1a stemmed)  3-1aa
    stemmed2 = {"3-1aa": N(None)}
    assert revs_diff(stemmed1, ["1-1", "2-1a", "101-x"]).missing == ("1-1", "101-x")
    assert revs_diff(stemmed2, ["1-1", "2-1a", "101-x"]).missing == ("1-1", "2-1a", "101-x")


def test_an_unknown_document_misses_everything_and_has_no_ancestors():
    assert revs_diff(None, ["2-b", "1-a"]) == RevsDiff(("2-b", "1-a"), ())
    assert revs_diff({}, ["1-a"]) == RevsDiff(("1-a",), ())
    assert revs_diff(None, []) is None  # nothing asked, nothing missing


def test_a_revision_asked_for_twice_is_missing_once():
    assert revs_diff(None, ["1-a", "1-a", "2-b", "1-a"]).missing == ("1-a", "2-b")


def test_possible_ancestors_are_leaves_below_the_newest_missing_generation():
    #     1-a
    #    /   \
    #  2-b   2-c
    #         |
    #        3-d
    tree = {"1-a": N(None), "2-b": N("1-a"), "2-c": N("1-a"), "3-d": N("2-c")}
    assert revs_diff(tree, ["4-e", "2-b"]) == RevsDiff(("4-e",), ("3-d", "2-b"))
    assert revs_diff(tree, ["3-x"]) == RevsDiff(("3-x",), ("2-b",))
    assert revs_diff(tree, ["2-x"]) == RevsDiff(("2-x",), ())


def test_to_json_omits_possible_ancestors_when_there_are_none():
    assert RevsDiff(("1-a",), ()).to_json() == {"missing": ["1-a"]}
    assert RevsDiff(("3-c",), ("2-b",)).to_json() == {
        "missing": ["3-c"],
        "possible_ancestors": ["2-b"],
    }
