"""Three-way, field-level merge of document bodies (SPEC §5, strategy and policy ``merge``).

Hand-written cases first, then Hypothesis properties over small random JSON documents where
"mine" and "theirs" are usually edits of the ancestor (so clean merges are common).
"""

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication import (
    BodyMergeResult,
    Conflict,
    GatewayError,
    MergeConflict,
    escape_pointer_token,
    json_equal,
    merge3,
    merge_or_raise,
)

FAST = settings(max_examples=200, deadline=None)


def clean(body: dict[str, Any]) -> BodyMergeResult:
    return BodyMergeResult(body=body, conflicts=())


def conflicted(*paths: str) -> BodyMergeResult:
    return BodyMergeResult(body=None, conflicts=paths)


def canon(value: Any) -> str:
    """JSON text: unlike ``==``, it tells ``1``, ``1.0`` and ``true`` apart."""
    return json.dumps(value, sort_keys=True, allow_nan=False)


# --- hand-written cases ------------------------------------------------------------------


def test_disjoint_edits_are_both_kept():
    ancestor = {"title": "a", "done": False, "n": 1}
    mine = {"title": "b", "done": False, "n": 1}
    theirs = {"title": "a", "done": True, "n": 1, "tag": "x"}
    assert merge3(ancestor, mine, theirs) == clean({"title": "b", "done": True, "n": 1, "tag": "x"})


def test_the_same_edit_on_both_sides_is_not_a_conflict():
    ancestor = {"title": "a"}
    both = {"title": "b", "new": [1, 2]}
    assert merge3(ancestor, both, dict(both)) == clean(both)


def test_different_edits_to_one_field_conflict():
    result = merge3({"title": "a"}, {"title": "b"}, {"title": "c"})
    assert result == conflicted("/title")
    assert not result.clean


def test_the_same_key_added_differently_on_both_sides_conflicts():
    assert merge3({}, {"k": 1}, {"k": 2}) == conflicted("/k")


def test_nested_objects_merge_field_by_field():
    ancestor = {"responses": {"q1": "yes", "q2": "no"}, "meta": {"v": 1}}
    mine = {"responses": {"q1": "maybe", "q2": "no"}, "meta": {"v": 1}}
    theirs = {"responses": {"q1": "yes", "q2": "no", "q3": "ok"}, "meta": {"v": 1}}
    assert merge3(ancestor, mine, theirs) == clean(
        {"responses": {"q1": "maybe", "q2": "no", "q3": "ok"}, "meta": {"v": 1}}
    )


def test_a_nested_conflict_is_reported_with_its_full_path():
    ancestor = {"responses": {"q1": "yes", "q2": "no"}}
    mine = {"responses": {"q1": "maybe", "q2": "x"}}
    theirs = {"responses": {"q1": "never", "q2": "x"}}
    assert merge3(ancestor, mine, theirs) == conflicted("/responses/q1")


def test_every_conflict_is_reported_sorted():
    ancestor = {"b": 0, "a": {"z": 0, "y": 0}}
    mine = {"b": 1, "a": {"z": 1, "y": 1}}
    theirs = {"b": 2, "a": {"z": 2, "y": 2}}
    assert merge3(ancestor, mine, theirs).conflicts == ("/a/y", "/a/z", "/b")


def test_lists_are_opaque_values():
    ancestor = {"items": [1, 2]}
    # One side changed the list: it wins whole.
    assert merge3(ancestor, {"items": [1, 2, 3]}, ancestor) == clean({"items": [1, 2, 3]})
    # Both sides appended different elements: no element-wise merge, a conflict.
    assert merge3(ancestor, {"items": [1, 2, 3]}, {"items": [0, 1, 2]}) == conflicted("/items")
    # The same new list on both sides is fine.
    assert merge3(ancestor, {"items": [3]}, {"items": [3]}) == clean({"items": [3]})


def test_objects_inside_lists_are_not_merged():
    ancestor = {"rows": [{"a": 1, "b": 1}]}
    mine = {"rows": [{"a": 2, "b": 1}]}
    theirs = {"rows": [{"a": 1, "b": 2}]}
    assert merge3(ancestor, mine, theirs) == conflicted("/rows")


def test_a_deletion_on_one_side_is_kept():
    ancestor = {"a": 1, "b": {"c": 1}}
    assert merge3(ancestor, {"b": {"c": 1}}, ancestor) == clean({"b": {"c": 1}})
    assert merge3(ancestor, ancestor, {"a": 1}) == clean({"a": 1})
    assert merge3(ancestor, {"a": 1, "b": {}}, {"a": 2, "b": {"c": 1}}) == clean({"a": 2, "b": {}})


def test_a_deletion_on_both_sides_is_kept():
    assert merge3({"a": 1, "b": 2}, {"b": 2}, {"b": 3}) == clean({"b": 3})


def test_delete_versus_modify_conflicts_either_way():
    ancestor = {"a": 1, "b": {"c": 1}}
    assert merge3(ancestor, {"b": {"c": 1}}, {"a": 2, "b": {"c": 1}}) == conflicted("/a")
    assert merge3(ancestor, {"a": 2, "b": {"c": 1}}, {"b": {"c": 1}}) == conflicted("/a")
    # Deleting a whole object while the other side edits inside it.
    assert merge3(ancestor, {"a": 1}, {"a": 1, "b": {"c": 2}}) == conflicted("/b")


def test_null_is_a_value_not_an_absence():
    ancestor = {"a": None}
    assert merge3(ancestor, {}, ancestor) == clean({})
    assert merge3(ancestor, {}, {"a": 1}) == conflicted("/a")
    assert merge3({}, {"a": None}, {}) == clean({"a": None})


def test_type_changes_are_changes():
    ancestor = {"a": "1", "b": [1], "c": {"d": 1}}
    mine = {"a": 1, "b": [1], "c": {"d": 1}}
    theirs = {"a": "1", "b": {"0": 1}, "c": {"d": 1}}
    assert merge3(ancestor, mine, theirs) == clean({"a": 1, "b": {"0": 1}, "c": {"d": 1}})
    # An object replaced by a scalar while the other side edits inside it.
    assert merge3(ancestor, {**ancestor, "c": "gone"}, {**ancestor, "c": {"d": 2}}) == (
        conflicted("/c")
    )


def test_both_sides_turning_a_scalar_into_objects_merge_against_an_empty_ancestor():
    ancestor = {"c": 5}
    assert merge3(ancestor, {"c": {"x": 1}}, {"c": {"y": 2}}) == clean({"c": {"x": 1, "y": 2}})
    assert merge3(ancestor, {"c": {"x": 1}}, {"c": {"x": 2}}) == conflicted("/c/x")


def test_bool_int_and_float_are_distinct_json_values():
    # Python says 1 == 1.0 == True; JSON does not.
    assert merge3({"n": 1}, {"n": True}, {"n": 1}) == clean({"n": True})
    assert merge3({"n": 1}, {"n": 1}, {"n": 1.0}) == clean({"n": 1.0})
    assert merge3({"n": 0}, {"n": False}, {"n": 0.0}) == conflicted("/n")
    assert merge3({}, {"n": 1}, {"n": True}) == conflicted("/n")
    assert merge3({}, {"n": [1]}, {"n": [True]}) == conflicted("/n")
    result = merge3({"n": 1}, {"n": True}, {"n": 1})
    assert result.body is not None and result.body["n"] is True


def test_json_equal_checks_types_all_the_way_down():
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})
    assert not json_equal(1, True)
    assert not json_equal(1, 1.0)
    assert not json_equal(0, False)
    assert not json_equal({"a": [1]}, {"a": [1.0]})
    assert not json_equal({"a": 1}, {"a": 1, "b": 1})
    assert not json_equal([1], [1, 1])
    assert json_equal(float("nan"), float("nan"))


def test_underscore_keys_are_not_merged_and_left_out():
    ancestor = {"_id": "doc", "_rev": "1-a", "a": 1}
    mine = {"_id": "doc", "_rev": "2-b", "_attachments": {"f": {"stub": True}}, "a": 2}
    theirs = {"_id": "doc", "_rev": "2-c", "_deleted": True, "_conflicts": ["2-b"], "a": 1}
    assert merge3(ancestor, mine, theirs) == clean({"a": 2})


def test_only_top_level_underscore_keys_are_metadata():
    ancestor = {"data": {"_x": 1}}
    assert merge3(ancestor, {"data": {"_x": 2}}, ancestor) == clean({"data": {"_x": 2}})
    assert merge3(ancestor, {"data": {"_x": 2}}, {"data": {"_x": 3}}) == conflicted("/data/_x")


def test_a_missing_ancestor_keeps_identical_and_one_sided_keys_only():
    mine = {"same": [1], "mine_only": 1, "both": "m", "obj": {"x": 1, "y": 1}}
    theirs = {"same": [1], "theirs_only": 2, "both": "t", "obj": {"x": 1, "y": 2, "z": 3}}
    assert merge3(None, mine, theirs) == conflicted("/both", "/obj/y")
    # Without an ancestor, a key only one side has is an addition, never a deletion.
    mine.pop("both")
    mine["obj"]["y"] = 2
    assert merge3(None, mine, theirs) == clean(
        {
            "same": [1],
            "mine_only": 1,
            "theirs_only": 2,
            "both": "t",
            "obj": {"x": 1, "y": 2, "z": 3},
        }
    )


def test_a_missing_ancestor_is_the_same_as_an_empty_one():
    mine, theirs = {"a": 1, "b": {"c": 1}}, {"a": 2, "b": {"d": 1}}
    assert merge3(None, mine, theirs) == merge3({}, mine, theirs)
    assert merge3(None, mine, theirs) == merge3({"_id": "x", "_rev": "1-a"}, mine, theirs)


def test_conflict_paths_escape_slash_and_tilde_per_rfc_6901():
    ancestor = {"a/b": 0, "m~n": 0, "~/": {"~1": 0}}
    mine = {"a/b": 1, "m~n": 1, "~/": {"~1": 1}}
    theirs = {"a/b": 2, "m~n": 2, "~/": {"~1": 2}}
    assert merge3(ancestor, mine, theirs).conflicts == ("/a~1b", "/m~0n", "/~0~1/~01")
    assert escape_pointer_token("~1") == "~01"
    assert escape_pointer_token("/~") == "~1~0"
    assert escape_pointer_token("") == ""


def test_unicode_and_empty_keys():
    ancestor = {"réponse": {"é": 1, "": 0}, "名前": "a"}
    mine = {"réponse": {"é": 2, "": 0}, "名前": "a"}
    theirs = {"réponse": {"é": 1, "": 0}, "名前": "b", "🙂": True}
    assert merge3(ancestor, mine, theirs) == clean(
        {"réponse": {"é": 2, "": 0}, "名前": "b", "🙂": True}
    )
    assert merge3({"": {"ü": 0}}, {"": {"ü": 1}}, {"": {"ü": 2}}) == conflicted("//ü")


def test_the_merged_body_shares_nothing_with_the_inputs():
    ancestor = {"a": {"x": [1]}, "b": [{"c": 1}]}
    mine = {"a": {"x": [1], "y": {"z": []}}, "b": [{"c": 1}]}
    theirs = copy.deepcopy(ancestor)
    body = merge_or_raise(ancestor, mine, theirs)
    assert body == mine
    body["a"]["y"]["z"].append(1)
    body["a"]["x"].append(2)
    body["b"][0]["c"] = 2
    assert mine == {"a": {"x": [1], "y": {"z": []}}, "b": [{"c": 1}]}
    assert theirs == ancestor == {"a": {"x": [1]}, "b": [{"c": 1}]}


def test_merge_or_raise_returns_the_body_when_clean():
    assert merge_or_raise({"a": 1}, {"a": 1, "b": 1}, {"a": 2}) == {"a": 2, "b": 1}


def test_merge_or_raise_raises_a_409_conflict_with_the_paths():
    with pytest.raises(MergeConflict) as info:
        merge_or_raise({"a": 1, "b": {"c": 1}}, {"a": 2, "b": {"c": 2}}, {"a": 3, "b": {"c": 3}})
    error = info.value
    assert isinstance(error, Conflict) and isinstance(error, GatewayError)
    assert error.paths == ("/a", "/b/c")
    assert error.to_json() == {"error": "conflict", "reason": error.reason}
    assert "/a" in error.reason and "/b/c" in error.reason


def test_a_merge_conflict_maps_to_409_like_every_conflict():
    gateway_errors = pytest.importorskip("gateway.errors")
    assert gateway_errors.status_of(MergeConflict(["/a"])) == 409


def test_a_merge_conflict_reason_stays_short():
    error = MergeConflict([f"/k{i:02}" for i in range(25)])
    assert len(error.paths) == 25
    assert "/k09" in error.reason and "/k10" not in error.reason
    assert error.reason.endswith("and 15 more.")
    assert MergeConflict().reason == MergeConflict.default_reason
    assert MergeConflict(["/a"], "custom").reason == "custom"


def test_the_result_is_a_frozen_dataclass():
    result = merge3({}, {"a": 1}, {})
    with pytest.raises(AttributeError):
        result.body = {}  # type: ignore[misc]
    assert result.clean


# --- properties --------------------------------------------------------------------------

ABSENT = object()
# A small key space so the three documents share keys; includes metadata and escapable keys.
KEYS = st.sampled_from(["a", "b", "c", "_id", "_rev", "x/y", "~t", "é", ""])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.sampled_from([0.0, 1.0, -1.5, 1e300])
    | st.text(alphabet="ab~/é", max_size=2)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=8,
)
DOCS = st.dictionaries(KEYS, VALUES, max_size=4)


@st.composite
def edits(draw, doc: dict[str, Any]) -> dict[str, Any]:
    """Return an edited copy of ``doc``: keys kept, deleted, replaced, edited inside or added."""
    edited: dict[str, Any] = {}
    for key, value in doc.items():
        action = draw(st.sampled_from(["keep", "keep", "delete", "replace", "recurse"]))
        if action == "keep":
            edited[key] = copy.deepcopy(value)
        elif action == "replace":
            edited[key] = draw(VALUES)
        elif action == "recurse":
            edited[key] = draw(edits(value)) if isinstance(value, dict) else draw(VALUES)
    for key in draw(st.lists(KEYS, max_size=2)):
        edited[key] = draw(VALUES)
    return edited


@st.composite
def triples(draw) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """Return (ancestor, mine, theirs), the sides mostly edits of the ancestor."""
    ancestor = draw(DOCS)
    mine = draw(edits(ancestor)) if draw(st.integers(0, 5)) else draw(DOCS)
    theirs = draw(edits(ancestor)) if draw(st.integers(0, 5)) else draw(DOCS)
    if not draw(st.integers(0, 9)):
        return None, mine, theirs
    return ancestor, mine, theirs


def strip(doc: dict[str, Any] | None) -> dict[str, Any]:
    return {key: value for key, value in (doc or {}).items() if not key.startswith("_")}


def body_of(result: BodyMergeResult) -> dict[str, Any]:
    assert result.body is not None, result.conflicts
    return result.body


def dict_paths(doc: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every key path reached by descending through objects only."""
    found: set[tuple[str, ...]] = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.add((*prefix, key))
            found |= dict_paths(value, (*prefix, key))
    return found


def value_at(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return ABSENT
        doc = doc[key]
    return doc


def same(left: Any, right: Any) -> bool:
    if left is ABSENT or right is ABSENT:
        return left is right
    return canon(left) == canon(right)


def decode_pointer(pointer: str) -> tuple[str, ...]:
    assert pointer.startswith("/")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/"))


def containers(value: Any) -> list[Any]:
    """Every dict and list inside ``value`` (itself included)."""
    if isinstance(value, dict):
        return [value, *(found for child in value.values() for found in containers(child))]
    if isinstance(value, list):
        return [value, *(found for child in value for found in containers(child))]
    return []


@FAST
@given(DOCS, st.data())
def test_merging_a_side_with_the_unchanged_ancestor_gives_that_side(ancestor, data):
    side = data.draw(edits(ancestor) | DOCS)
    assert canon(body_of(merge3(ancestor, side, ancestor))) == canon(strip(side))
    assert canon(body_of(merge3(ancestor, ancestor, side))) == canon(strip(side))


@FAST
@given(triples())
def test_merge_is_symmetric(triple):
    ancestor, mine, theirs = triple
    forward, backward = merge3(ancestor, mine, theirs), merge3(ancestor, theirs, mine)
    assert forward.conflicts == backward.conflicts
    assert canon(forward.body) == canon(backward.body)


@FAST
@given(st.one_of(st.none(), DOCS), DOCS)
def test_merging_a_side_with_itself_gives_that_side(ancestor, side):
    assert canon(body_of(merge3(ancestor, side, copy.deepcopy(side)))) == canon(strip(side))


@FAST
@given(triples())
def test_inputs_are_never_mutated(triple):
    before = copy.deepcopy(triple)
    result = merge3(*triple)
    if result.body is not None:  # and later changes to the result do not leak back
        for container in containers(result.body):
            if isinstance(container, dict):
                container["_poison"] = 1
            else:
                container.append("poison")
    assert canon(triple) == canon(before)


@FAST
@given(triples())
def test_the_result_shares_no_container_with_the_inputs(triple):
    result = merge3(*triple)
    inputs = {id(container) for doc in triple for container in containers(doc)}
    assert not inputs & {id(container) for container in containers(result.body)}


@FAST
@given(triples())
def test_the_result_is_json_built_from_the_inputs_keys(triple):
    ancestor, mine, theirs = triple
    result = merge3(ancestor, mine, theirs)
    assert list(result.conflicts) == sorted(set(result.conflicts))
    assert (result.body is None) == bool(result.conflicts)
    if result.body is None:
        return
    json.loads(json.dumps(result.body, allow_nan=False))
    assert not any(key.startswith("_") for key in result.body)
    for path in dict_paths(result.body):
        parent = path[:-1]
        owners = [value_at(doc, parent) for doc in (ancestor or {}, mine, theirs)]
        assert any(isinstance(owner, dict) and path[-1] in owner for owner in owners), path


@FAST
@given(triples())
def test_a_field_changed_on_one_side_only_keeps_that_sides_value(triple):
    ancestor, mine, theirs = triple
    base, mine, theirs = strip(ancestor), strip(mine), strip(theirs)
    result = merge3(ancestor, mine, theirs)
    if result.body is None:
        return
    for path in dict_paths(base) | dict_paths(mine) | dict_paths(theirs):
        was, m, t = value_at(base, path), value_at(mine, path), value_at(theirs, path)
        if not same(m, was) and same(t, was):
            assert same(value_at(result.body, path), m), path
        if not same(t, was) and same(m, was):
            assert same(value_at(result.body, path), t), path


@FAST
@given(triples())
def test_every_conflict_path_names_a_field_both_sides_changed_differently(triple):
    ancestor, mine, theirs = triple
    base = strip(ancestor)
    for pointer in merge3(ancestor, mine, theirs).conflicts:
        path = decode_pointer(pointer)
        was, m, t = value_at(base, path), value_at(mine, path), value_at(theirs, path)
        assert not same(m, t) and not same(m, was) and not same(t, was), pointer
        assert not (isinstance(m, dict) and isinstance(t, dict)), pointer
