"""Hypothesis properties of the revision tree, in the spirit of couch_key_tree_prop_tests.erl.

A *history* is a random forest of edits: every revision has a parent one generation lower (or
none, for a document created independently on two devices) and an intrinsic tombstone flag.
A *replica* sees some of it as paths, leaf first, the way ``_revisions`` sends them:

    history           1-a            paths seen      [3-d, 2-b, 1-a]  (3-d deleted)
                     /   \\                          [2-c, 1-a]
                  2-b     2-c                        [2-b, 1-a]       (an older state)
                   |
                  3-d (deleted)
"""

import copy
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from replication import (
    DocEdit,
    RevNode,
    apply_edit,
    collect_conflicts,
    collect_deleted_conflicts,
    leaves,
    merge,
    rev_path,
    rev_pos,
    revs_diff,
    stem,
    tree_from_data,
    tree_to_data,
    winning_rev,
)

FAST = settings(max_examples=60, deadline=None)


@st.composite
def histories(draw, max_size=14):
    """Return ``{rev: (parent, deleted)}`` grown one edit at a time."""
    nodes: dict[str, tuple[str | None, bool]] = {}
    for index in range(draw(st.integers(1, max_size))):
        parent = None
        if nodes and draw(st.integers(0, 9)):
            parent = draw(st.sampled_from(sorted(nodes)))
        generation = rev_pos(parent) + 1 if parent else 1
        # A random leading hex digit decides hash ties; the index keeps ids unique.
        rev = f"{generation}-{draw(st.sampled_from('0123456789abcdef'))}{index}"
        nodes[rev] = (parent, draw(st.booleans()))
    return nodes


def full_path(nodes, rev):
    """Return ``rev`` and all its ancestors in ``nodes``, newest first."""
    path = []
    while rev is not None:
        path.append(rev)
        rev = nodes[rev][0]
    return path


def history_leaves(nodes):
    parents = {parent for parent, _ in nodes.values()}
    return [rev for rev in nodes if rev not in parents]


@st.composite
def replicas(draw):
    """Return a history and the paths a replica received: every leaf, plus older states."""
    nodes = draw(histories())
    tips = history_leaves(nodes) + draw(st.lists(st.sampled_from(sorted(nodes)), max_size=6))
    paths = [(tuple(full_path(nodes, tip)), nodes[tip][1]) for tip in tips]
    return nodes, paths


def merge_all(paths, tree=None):
    tree = {} if tree is None else tree
    for path, deleted in paths:
        tree = merge(tree, path, deleted).tree
    return dict(tree)


def expected_tree(nodes, paths):
    """What merging ``paths`` must give: their revisions, each tombstone where a path said so."""
    heads = {path[0] for path, _ in paths}
    revs = {rev for path, _ in paths for rev in path}
    return {rev: RevNode(nodes[rev][0], nodes[rev][1] and rev in heads) for rev in revs}


def assert_well_formed(tree):
    for rev, node in tree.items():
        assert node.parent is None or node.parent in tree
        assert node.parent is None or rev_pos(node.parent) == rev_pos(rev) - 1


@FAST
@given(replicas())
def test_merging_every_path_loses_no_revision(replica):
    nodes, paths = replica
    tree = merge_all(paths)
    assert_well_formed(tree)
    assert tree == expected_tree(nodes, paths)
    assert revs_diff(tree, [rev for path, _ in paths for rev in path]) is None


@FAST
@given(replicas(), st.data())
def test_merge_order_changes_neither_the_tree_nor_the_winner(replica, data):
    _, paths = replica
    reference = merge_all(paths)
    shuffled = merge_all(data.draw(st.permutations(paths)))
    assert shuffled == reference
    assert winning_rev(shuffled) == winning_rev(reference)


@FAST
@given(replicas(), st.data())
def test_every_replica_picks_the_same_winner_and_conflicts(replica, data):
    # Each replica merges in its own order, some paths twice (a retried replication batch).
    _, paths = replica
    outcomes = set()
    for _ in range(3):
        repeats = data.draw(st.lists(st.sampled_from(paths), max_size=4))
        order = data.draw(st.permutations(paths + repeats))
        tree = merge_all(order)
        outcomes.add(
            (
                winning_rev(tree),
                tuple(collect_conflicts(tree)),
                tuple(collect_deleted_conflicts(tree)),
            )
        )
    assert len(outcomes) == 1


@FAST
@given(replicas(), st.data())
def test_merge_order_does_not_matter_for_stemmed_paths_either(replica, data):
    # Truncated paths (what a replica with a small revs_limit sends) graft onto one another.
    _, paths = replica
    truncated = [(path[: data.draw(st.integers(1, len(path)))], deleted) for path, deleted in paths]
    reference = merge_all(truncated)
    assert_well_formed(reference)
    assert merge_all(data.draw(st.permutations(truncated))) == reference


@FAST
@given(replicas())
def test_the_winner_is_the_best_leaf(replica):
    _, paths = replica
    tree = merge_all(paths)
    winner = winning_rev(tree)
    assert winner.rev in leaves(tree)
    live = [rev for rev in leaves(tree) if not tree[rev].deleted]
    assert winner.deleted == (not live)
    for rev in live:
        assert (rev_pos(rev), rev.partition("-")[2]) <= (
            rev_pos(winner.rev),
            winner.rev.partition("-")[2],
        )
    assert set(collect_conflicts(tree)) == set(live) - {winner.rev}


@FAST
@given(replicas(), st.integers(1, 6))
def test_stem_keeps_every_leaf_and_the_newest_revisions_of_each(replica, limit):
    _, paths = replica
    tree = merge_all(paths)
    stemmed, dropped = stem(tree, limit)
    assert_well_formed(stemmed)
    assert leaves(stemmed) == leaves(tree)
    assert all(stemmed[leaf].deleted == tree[leaf].deleted for leaf in leaves(tree))
    # Exactly the newest ``limit`` revisions of some leaf survive; nothing else does.
    newest = {rev for leaf in leaves(tree) for rev in rev_path(tree, leaf, limit)}
    assert set(stemmed) == newest
    assert dropped == set(tree) - newest
    for leaf in leaves(tree):
        assert rev_path(stemmed, leaf)[:limit] == rev_path(tree, leaf, limit)
    for rev, node in stemmed.items():
        assert node.parent in (None, tree[rev].parent)
    assert stem(stemmed, limit) == (stemmed, frozenset())


@FAST
@given(replicas(), st.integers(1, 6))
def test_stem_is_couchdbs_merge_of_each_leafs_truncated_path(replica, limit):
    _, paths = replica
    tree = merge_all(paths)
    stemmed, _ = stem(tree, limit)
    rebuilt = merge_all(
        [(rev_path(tree, leaf, limit), tree[leaf].deleted) for leaf in leaves(tree)]
    )
    assert {rev: node.parent for rev, node in stemmed.items()} == {
        rev: node.parent for rev, node in rebuilt.items()
    }


@FAST
@given(histories(max_size=10), st.integers(1, 6))
def test_no_path_of_a_linear_history_outgrows_the_limit(nodes, limit):
    # Branches aside (an ancestor kept for a closer leaf stays attached, as in CouchDB),
    # a single line of edits is cut to exactly ``limit`` revisions.
    line = full_path(nodes, max(nodes, key=rev_pos))
    stemmed, _ = stem(merge_all([(tuple(line), False)]), limit)
    assert len(rev_path(stemmed, line[0])) == min(limit, len(line))
    assert len(stemmed) == min(limit, len(line))


@FAST
@given(replicas())
def test_tree_data_round_trips_through_json(replica):
    _, paths = replica
    tree = merge_all(paths)
    assert tree_from_data(json.loads(json.dumps(tree_to_data(tree)))) == tree


bodies = st.dictionaries(
    st.text(max_size=3),
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    max_size=3,
)


@FAST
@given(replicas(), st.data())
def test_apply_edit_never_mutates_its_input_tree(replica, data):
    _, paths = replica
    tree = merge_all(data.draw(st.lists(st.sampled_from(paths), min_size=1)))
    before = copy.deepcopy(tree)
    new_edits = data.draw(st.booleans())
    rev = data.draw(st.none() | st.sampled_from(sorted(tree)) | st.just("1-unknown"))
    path = data.draw(st.sampled_from([(), *(path for path, _ in paths)]))
    edit = DocEdit(
        "doc",
        rev=rev if new_edits or not path else path[0],
        path=() if new_edits else path,
        deleted=data.draw(st.booleans()),
        body=data.draw(bodies),
    )
    result = apply_edit(tree, edit, new_edits=new_edits, revs_limit=data.draw(st.integers(1, 5)))
    assert tree == before
    assert_well_formed(result.tree)
    if result.error is None:
        # A known revision may itself fall to a revs_limit lowered since it was stored.
        assert result.rev in result.tree or result.rev in result.dropped
    else:
        assert result.tree == before
