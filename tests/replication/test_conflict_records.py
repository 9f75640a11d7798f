"""``plan_records``: every live losing leaf is followed by exactly one open record."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from replication.conflicts import OpenRecord, live_leaves, needs_records, plan_records
from replication.revtree import RevNode, RevTree

A, B, C = "1-" + "a" * 32, "1-" + "b" * 32, "1-" + "c" * 32


def tree(*nodes: tuple[str, str | None, bool]) -> RevTree:
    return {rev: RevNode(parent, deleted) for rev, parent, deleted in nodes}


def apply(plan, records: list[OpenRecord], ids: itertools.count) -> list[OpenRecord]:
    kept = {r.id: r for r in records if r.id not in plan.close}
    for rid, leaf, mine, theirs in plan.move:
        kept[rid] = OpenRecord(rid, leaf, mine, theirs)
    for leaf, mine, theirs in plan.create:
        rid = next(ids)
        kept[rid] = OpenRecord(rid, leaf, mine, theirs)
    return list(kept.values())


def check_invariant(t: RevTree, records: list[OpenRecord]) -> None:
    live = live_leaves(t)
    losers = live[1:]
    assert sorted(r.leaf_rev for r in records) == sorted(losers)
    for r in records:
        assert {r.mine_rev, r.theirs_rev} == {r.leaf_rev, live[0]}


def test_a_second_root_opens_one_record_with_the_arrival_as_mine() -> None:
    t = tree((C, None, False), (B, None, False))
    plan = plan_records(t, [], incoming={B})
    assert plan.create == ((B, B, C),) and not plan.move and not plan.close


def test_an_arrival_that_wins_is_mine_and_the_old_winner_is_the_leaf() -> None:
    t = tree((B, None, False), (C, None, False))
    plan = plan_records(t, [], incoming={C})
    assert plan.create == ((B, C, B),)


def test_the_reported_crash_three_roots_then_a_branch_grows() -> None:
    """1-c, 1-b, 1-a pushed as roots, then 2-z extends 1-b: records stay one per loser."""
    ids = itertools.count(1)
    t: RevTree = {}
    records: list[OpenRecord] = []
    for rev in (C, B, A):
        t = {**t, rev: RevNode(None, False)}
        records = apply(plan_records(t, records, incoming={rev}), records, ids)
        check_invariant(t, records)
    z = "2-" + "z" * 32
    t = {**t, z: RevNode(B, False)}
    records = apply(plan_records(t, records, incoming={z}), records, ids)
    check_invariant(t, records)
    assert live_leaves(t)[0] == z


def test_deleting_the_losing_leaf_closes_its_record() -> None:
    t = tree((C, None, False), (B, None, False))
    [rec] = apply(plan_records(t, [], {B}), [], itertools.count(1))
    gone = {**t, "2-" + "d" * 32: RevNode(B, True)}
    plan = plan_records(gone, [rec], incoming={"2-" + "d" * 32})
    assert plan.close == (rec.id,) and not plan.create


def test_refused_rest_updates_are_left_alone() -> None:
    t = tree((C, None, False))
    plan = plan_records(t, [OpenRecord(9, None, None, C)], incoming=set())
    assert not plan


LETTERS = "abcdefgh"


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, str | None, bool]]:
    """A sequence of writes: new roots, children of existing revs, deletions."""
    steps: list[tuple[str, str | None, bool]] = []
    revs: list[str] = []
    for i in range(draw(st.integers(1, 12))):
        if revs and draw(st.booleans()):
            parent = draw(st.sampled_from(revs))
            pos = int(parent.split("-")[0]) + 1
            rev = f"{pos}-{draw(st.sampled_from(LETTERS))}{i:031d}"
            steps.append((rev, parent, draw(st.booleans()) and draw(st.booleans())))
        else:
            rev = f"1-{draw(st.sampled_from(LETTERS))}{i:031d}"
            steps.append((rev, None, False))
        revs.append(rev)
    return steps


@settings(max_examples=400, deadline=None)
@given(histories())
def test_after_any_history_every_loser_has_exactly_one_record(
    steps: list[tuple[str, str | None, bool]],
) -> None:
    ids = itertools.count(1)
    t: RevTree = {}
    records: list[OpenRecord] = []
    for rev, parent, deleted in steps:
        t = {**t, rev: RevNode(parent, deleted)}
        if not live_leaves(t):
            records = apply(plan_records(t, records, {rev}), records, ids)
            assert records == []
            continue
        records = apply(plan_records(t, records, {rev}), records, ids)
        check_invariant(t, records)


@settings(max_examples=300, deadline=None)
@given(histories(), histories())
def test_needs_records_is_true_exactly_when_either_side_has_two_live_leaves(
    before_steps: list[tuple[str, str | None, bool]],
    after_steps: list[tuple[str, str | None, bool]],
) -> None:
    """The write path's quick test agrees with the definition on any pair of trees."""
    before, after = tree(*before_steps), tree(*after_steps)
    expected = len(live_leaves(after)) > 1 or len(live_leaves(before)) > 1
    assert needs_records(before, after) is expected
    assert needs_records(None, after) is (len(live_leaves(after)) > 1)
