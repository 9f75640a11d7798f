"""Revision ids: parse/format, ``_revisions`` paths, deterministic hashes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replication import (
    BadRequest,
    Rev,
    new_rev_hash,
    path_to_revisions,
    rev_hash,
    rev_pos,
    revisions_to_path,
    validate_rev,
)


@pytest.mark.parametrize(
    ("raw", "pos", "hash_"),
    [
        ("1-a", 1, "a"),
        ("3-917fa2381192822767f010b95b45325b", 3, "917fa2381192822767f010b95b45325b"),
        ("999999999999999-Z9", 999999999999999, "Z9"),
        ("12-" + "f" * 128, 12, "f" * 128),
    ],
)
def test_a_well_formed_rev_parses_into_generation_and_hash(raw, pos, hash_):
    rev = Rev.parse(raw)
    assert (rev.pos, rev.hash) == (pos, hash_)
    assert str(rev) == raw
    assert validate_rev(raw) == raw
    assert (rev_pos(raw), rev_hash(raw)) == (pos, hash_)


@pytest.mark.parametrize(
    "raw",
    [
        "0-a",  # generations start at 1
        "-1-a",
        "01-a",  # no leading zeros: "01-a" and "1-a" would be two names for one revision
        "1-",
        "-a",
        "abc",
        "1",
        "",
        "1-a b",
        "1-a-b",
        "1-a\n",  # a trailing newline must not sneak through "$"
        " 1-a",
        "1-é",
        "1000000000000000-a",  # 16 digits: beyond what any store can hold
        "99999999999999999999999-a",
        "1-" + "f" * 129,
        5,
        None,
        1.5,
        ["1-a"],
        {"rev": "1-a"},
        b"1-a",
    ],
)
def test_a_malformed_rev_is_a_bad_request(raw):
    with pytest.raises(BadRequest):
        Rev.parse(raw)
    with pytest.raises(BadRequest):
        validate_rev(raw)


def test_revs_order_by_generation_then_hash():
    revs = [Rev.parse(r) for r in ["2-a", "10-a", "2-b", "1-z"]]
    assert [str(r) for r in sorted(revs)] == ["1-z", "2-a", "2-b", "10-a"]


def test_revisions_become_a_leaf_first_path():
    assert revisions_to_path({"start": 3, "ids": ["c", "b", "a"]}) == ("3-c", "2-b", "1-a")


def test_a_stemmed_revisions_object_starts_above_generation_one():
    assert revisions_to_path({"start": 7, "ids": ["g", "f"]}) == ("7-g", "6-f")


@pytest.mark.parametrize(
    "path",
    [("1-a",), ("3-c", "2-b", "1-a"), ("1000-x", "999-y")],
)
def test_path_and_revisions_round_trip(path):
    revisions = path_to_revisions(path)
    assert revisions_to_path(revisions) == path
    assert path_to_revisions(revisions_to_path(revisions)) == revisions


def test_path_to_revisions_is_what_revs_true_returns():
    assert path_to_revisions(["3-c", "2-b", "1-a"]) == {"start": 3, "ids": ["c", "b", "a"]}


@pytest.mark.parametrize(
    "revisions",
    [
        None,
        [],
        "3-c",
        {},
        {"ids": ["a"]},
        {"start": 1},
        {"start": 0, "ids": ["a"]},
        {"start": -1, "ids": ["a"]},
        {"start": True, "ids": ["a"]},
        {"start": "3", "ids": ["a"]},
        {"start": 1.0, "ids": ["a"]},
        {"start": 10**15, "ids": ["a"]},  # would mint a rev that Rev.parse refuses
        {"start": 2, "ids": []},
        {"start": 2, "ids": "ab"},
        {"start": 1, "ids": ["b", "a"]},  # longer than the generations allow
        {"start": 2, "ids": ["b", 1]},
        {"start": 2, "ids": ["b", ""]},
        {"start": 2, "ids": ["b", "a b"]},
        {"start": 2, "ids": ["b\n", "a"]},
    ],
)
def test_malformed_revisions_are_a_bad_request(revisions):
    with pytest.raises(BadRequest):
        revisions_to_path(revisions)


BODY = {"title": "survey", "n": 1}


def test_the_same_edit_hashes_the_same_on_every_device():
    assert new_rev_hash("1-a", False, BODY, ["p:md5-x"]) == new_rev_hash(
        "1-a", False, dict(BODY), ["p:md5-x"]
    )


def test_the_hash_is_md5_hex_like_couchdb_rev_ids():
    digest = new_rev_hash(None, False, BODY, [])
    assert len(digest) == 32
    assert Rev.parse(f"1-{digest}").hash == digest


def test_body_key_order_does_not_change_the_hash():
    shuffled = {"n": 1, "title": "survey"}
    assert list(shuffled) != list(BODY)
    assert new_rev_hash(None, False, shuffled, []) == new_rev_hash(None, False, BODY, [])


def test_nested_key_order_does_not_change_the_hash():
    one = {"a": {"x": 1, "y": [1, {"p": 1, "q": 2}]}}
    two = {"a": {"y": [1, {"q": 2, "p": 1}], "x": 1}}
    assert new_rev_hash(None, False, one, []) == new_rev_hash(None, False, two, [])


def test_digest_order_does_not_change_the_hash():
    assert new_rev_hash(None, False, BODY, ["a:1", "b:2"]) == new_rev_hash(
        None, False, BODY, ["b:2", "a:1"]
    )


@pytest.mark.parametrize(
    "changed",
    [
        ("1-b", False, BODY, []),
        (None, False, BODY, []),
        ("1-a", True, BODY, []),
        ("1-a", False, {"title": "survey", "n": 2}, []),
        ("1-a", False, {"title": "survey", "n": "1"}, []),
        ("1-a", False, {"title": "survey", "n": True}, []),
        ("1-a", False, {}, []),
        ("1-a", False, BODY, ["p:md5-x"]),
    ],
)
def test_any_change_to_parent_deleted_body_or_digests_changes_the_hash(changed):
    base = new_rev_hash("1-a", False, BODY, [])
    assert new_rev_hash(*changed) != base


@given(st.text(alphabet="0123456789-abcXYZ \n", max_size=20))
def test_validate_rev_agrees_with_parsing_and_returns_the_canonical_form(raw: str) -> None:
    """The fast path (returning the string itself) accepts exactly what Rev.parse accepts,
    and what it returns is the parsed revision formatted back."""
    try:
        expected = str(Rev.parse(raw))
    except BadRequest:
        with pytest.raises(BadRequest):
            validate_rev(raw)
        return
    assert validate_rev(raw) == expected == raw


def test_validate_rev_returns_a_plain_str_for_a_str_subclass() -> None:
    class Tagged(str):
        pass

    out = validate_rev(Tagged("2-b"))
    assert out == "2-b" and type(out) is str
