"""Mango selectors: CouchDB's documented examples, then every operator, then the errors."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication import BadRequest, Selector, compile_selector
from replication.selector import collate

# --- CouchDB's documented examples (docs.couchdb.org, "Mango Queries" > "Selectors") ---------

MOVIES = [
    {"_id": "dancer", "director": "Lars von Trier", "year": 2000, "imdb": {"rating": 8}},
    {"_id": "dogville", "director": "Lars von Trier", "year": 2003, "imdb": {"rating": 8}},
    {"_id": "nymphomaniac", "director": "Lars von Trier", "year": 2014, "imdb": {"rating": 7}},
    {"_id": "star-wars", "director": "George Lucas", "year": 1977, "genre": ["Action"]},
    {"_id": "close-encounters", "director": "Steven Spielberg", "year": 1977},
    {"_id": "jaws", "director": "Steven Spielberg", "year": 1975},
    {"_id": "total-recall", "title": "Total Recall", "year": 1990},
    {"_id": "1901", "year": 1901},
    {"_id": "trip-to-the-moon", "year": 1902, "genre": ["Short", "Comedy", "Fantasy"]},
    {"_id": "train-robbery", "year": 1903, "genre": ["Short", "Western"]},
    {"_id": "1905", "year": 1905},
    {"_id": "1908", "year": 1908},
    {"_id": "horror", "genre": ["Horror"]},
    {"_id": "horror-comedy", "genre": ["Horror", "Comedy"]},
    {"_id": "paul", "name": "Paul", "location": "Boston"},
    {"_id": "paul-elsewhere", "name": "Paul", "location": "Oslo"},
    {"_id": "apple", "afieldname": "Apple"},
    {"_id": "banana", "afieldname": "banana"},
    {"_id": "active", "type": "user", "status": "active"},
    {"_id": "archived", "type": "user", "status": "archived"},
    {"_id": "no-status", "type": "user"},
]

DOCUMENTED = [
    ({"director": "Lars von Trier"}, ["dancer", "dogville", "nymphomaniac"]),
    ({"director": {"$eq": "Lars von Trier"}}, ["dancer", "dogville", "nymphomaniac"]),
    ({"name": "Paul", "location": "Boston"}, ["paul"]),
    ({"imdb": {"rating": 8}}, ["dancer", "dogville"]),
    ({"imdb.rating": 8}, ["dancer", "dogville"]),
    ({"imdb": {"rating": {"$eq": 8}}}, ["dancer", "dogville"]),
    ({"year": {"$gt": 2010}}, ["nymphomaniac"]),
    ({"director": "Lars von Trier", "year": 2003}, ["dogville"]),
    (
        {"$and": [{"director": {"$eq": "Lars von Trier"}}, {"year": {"$eq": 2003}}]},
        ["dogville"],
    ),
    ({"$and": [{"title": "Total Recall"}, {"year": {"$in": [1984, 1991]}}]}, []),
    ({"$and": [{"title": "Total Recall"}, {"year": {"$in": [1990, 2012]}}]}, ["total-recall"]),
    ({"$and": [{"_id": {"$gt": None}}, {"year": {"$in": [2014, 2015]}}]}, ["nymphomaniac"]),
    (
        {
            "year": 1977,
            "$or": [{"director": "George Lucas"}, {"director": "Steven Spielberg"}],
        },
        ["close-encounters", "star-wars"],
    ),
    (
        {"year": {"$gte": 1900, "$lte": 1903}, "$not": {"year": 1901}},
        ["train-robbery", "trip-to-the-moon"],
    ),
    (
        {
            "year": {"$gte": 1900, "$lte": 1910},
            "$nor": [{"year": 1901}, {"year": 1905}, {"year": 1907}],
        },
        ["1908", "train-robbery", "trip-to-the-moon"],
    ),
    ({"_id": {"$gt": None}, "genre": {"$all": ["Comedy", "Short"]}}, ["trip-to-the-moon"]),
    (
        {"_id": {"$gt": None}, "genre": {"$elemMatch": {"$eq": "Horror"}}},
        ["horror", "horror-comedy"],
    ),
    ({"_id": {"$gt": None}, "genre": {"$allMatch": {"$eq": "Horror"}}}, ["horror"]),
    ({"afieldname": {"$regex": "^A"}}, ["apple"]),
    # The partial-index example: "$ne" needs the field, so "no-status" is not selected.
    ({"status": {"$ne": "archived"}, "type": "user"}, ["active"]),
]


@pytest.mark.parametrize(("selector", "expected"), DOCUMENTED, ids=[str(s) for s, _ in DOCUMENTED])
def test_couchdb_documented_selector_examples(selector, expected):
    compiled = compile_selector(selector)
    assert sorted(doc["_id"] for doc in MOVIES if compiled.matches(doc)) == sorted(expected)


# --- every operator, one row per behaviour ---------------------------------------------------

CASES = [
    # implicit equality; booleans are not numbers; 1 == 1.0
    ("implicit eq", {"a": 1}, {"a": 1}, True),
    ("int equals float", {"a": 1}, {"a": 1.0}, True),
    ("true is not 1", {"a": 1}, {"a": True}, False),
    ("1 is not true", {"a": True}, {"a": 1}, False),
    ("number is not string", {"a": 1}, {"a": "1"}, False),
    ("missing field", {"a": 1}, {}, False),
    ("null equals null", {"a": None}, {"a": None}, True),
    ("null needs the field", {"a": None}, {}, False),
    ("array equality", {"a": [1, 2]}, {"a": [1, 2]}, True),
    ("array order matters", {"a": [1, 2]}, {"a": [2, 1]}, False),
    ("array is not its element", {"a": [1, 2]}, {"a": 1}, False),
    ("empty object is equality", {"a": {}}, {"a": {}}, True),
    ("empty object is not any object", {"a": {}}, {"a": {"b": 1}}, False),
    ("explicit eq on an object", {"a": {"$eq": {"b": 1}}}, {"a": {"b": 1}}, True),
    ("nested object is implicit and", {"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, True),
    # collation: null < false < true < numbers < strings < arrays < objects
    ("anything beats null", {"a": {"$gt": None}}, {"a": False}, True),
    ("null is not above null", {"a": {"$gt": None}}, {"a": None}, False),
    ("strings above numbers", {"a": {"$gt": 5}}, {"a": "0"}, True),
    ("arrays above numbers", {"a": {"$gt": 5}}, {"a": [0]}, True),
    ("objects above numbers", {"a": {"$gt": 5}}, {"a": {}}, True),
    ("true below numbers", {"a": {"$gt": 5}}, {"a": True}, False),
    ("false below true", {"a": {"$lt": True}}, {"a": False}, True),
    ("lt numbers", {"a": {"$lt": 5}}, {"a": 4.5}, True),
    ("gte equal string", {"a": {"$gte": "b"}}, {"a": "b"}, True),
    ("string prefix is smaller", {"a": {"$gte": "b"}}, {"a": "ab"}, False),
    ("lte shorter array", {"a": {"$lte": [1, 2]}}, {"a": [1]}, True),
    ("lte array by element", {"a": {"$lte": [1, 2]}}, {"a": [1, 3]}, False),
    ("objects member by member", {"a": {"$gt": {"k": 1}}}, {"a": {"k": 1, "z": 0}}, True),
    ("objects key first", {"a": {"$gt": {"k": 1}}}, {"a": {"a": 9}}, False),
    ("ne present", {"a": {"$ne": 1}}, {"a": 2}, True),
    ("ne equal", {"a": {"$ne": 1}}, {"a": 1}, False),
    ("ne needs the field", {"a": {"$ne": 1}}, {}, False),
    ("ne null", {"a": {"$ne": 1}}, {"a": None}, True),
    ("range", {"a": {"$gt": 1, "$lt": 3}}, {"a": 2}, True),
    ("range misses", {"a": {"$gt": 1, "$lt": 3}}, {"a": 3}, False),
    # $in / $nin
    ("in", {"a": {"$in": [1, "x"]}}, {"a": "x"}, True),
    ("not in", {"a": {"$in": [1, "x"]}}, {"a": 2}, False),
    ("in any array element", {"a": {"$in": [1, "x"]}}, {"a": [3, 1]}, True),
    ("in needs the field", {"a": {"$in": [None]}}, {}, False),
    ("in empty", {"a": {"$in": []}}, {"a": 1}, False),
    ("nin", {"a": {"$nin": [1, 2]}}, {"a": 3}, True),
    ("nin hit", {"a": {"$nin": [1, 2]}}, {"a": 1}, False),
    ("nin array element hit", {"a": {"$nin": [1, 2]}}, {"a": [3, 2]}, False),
    ("nin needs the field", {"a": {"$nin": [1, 2]}}, {}, False),
    ("nin empty", {"a": {"$nin": []}}, {"a": 1}, True),
    # $exists
    ("exists with null", {"a": {"$exists": True}}, {"a": None}, True),
    ("exists missing", {"a": {"$exists": True}}, {}, False),
    ("not exists missing", {"a": {"$exists": False}}, {}, True),
    ("not exists present", {"a": {"$exists": False}}, {"a": None}, False),
    ("not exists under a missing parent", {"a.b": {"$exists": False}}, {}, True),
    ("not exists in an object", {"a.b": {"$exists": False}}, {"a": {}}, True),
    ("path through a scalar matches nothing", {"a.b": {"$exists": False}}, {"a": 5}, False),
    # $type
    ("type null", {"a": {"$type": "null"}}, {"a": None}, True),
    ("type boolean", {"a": {"$type": "boolean"}}, {"a": False}, True),
    ("type number", {"a": {"$type": "number"}}, {"a": 1.5}, True),
    ("bool is not a number", {"a": {"$type": "number"}}, {"a": True}, False),
    ("type string", {"a": {"$type": "string"}}, {"a": ""}, True),
    ("type array", {"a": {"$type": "array"}}, {"a": []}, True),
    ("type object", {"a": {"$type": "object"}}, {"a": {}}, True),
    ("type mismatch", {"a": {"$type": "object"}}, {"a": []}, False),
    ("type needs the field", {"a": {"$type": "null"}}, {}, False),
    # $size
    ("size", {"a": {"$size": 2}}, {"a": [1, 2]}, True),
    ("size mismatch", {"a": {"$size": 2}}, {"a": [1]}, False),
    ("size zero", {"a": {"$size": 0}}, {"a": []}, True),
    ("size of a string", {"a": {"$size": 2}}, {"a": "ab"}, False),
    # $mod: Erlang rem, integers only
    ("mod", {"a": {"$mod": [3, 1]}}, {"a": 4}, True),
    ("mod miss", {"a": {"$mod": [3, 1]}}, {"a": 5}, False),
    ("mod float", {"a": {"$mod": [3, 1]}}, {"a": 4.0}, False),
    ("mod string", {"a": {"$mod": [3, 1]}}, {"a": "4"}, False),
    ("mod bool", {"a": {"$mod": [2, 1]}}, {"a": True}, False),
    ("mod negative dividend", {"a": {"$mod": [3, -2]}}, {"a": -2}, True),
    ("mod negative divisor", {"a": {"$mod": [-3, 1]}}, {"a": 4}, True),
    # $regex: unanchored search, strings only
    ("regex", {"a": {"$regex": "^A"}}, {"a": "Apple"}, True),
    ("regex case", {"a": {"$regex": "^A"}}, {"a": "apple"}, False),
    ("regex searches", {"a": {"$regex": "b"}}, {"a": "abc"}, True),
    ("regex flags", {"a": {"$regex": "(?i)^a"}}, {"a": "Apple"}, True),
    ("regex on a number", {"a": {"$regex": "1"}}, {"a": 1}, False),
    # $all
    ("all", {"a": {"$all": ["x", "y"]}}, {"a": ["y", "z", "x"]}, True),
    ("all missing one", {"a": {"$all": ["x", "y"]}}, {"a": ["x"]}, False),
    ("all on a scalar", {"a": {"$all": ["x"]}}, {"a": "x"}, False),
    ("all of nothing", {"a": {"$all": []}}, {"a": []}, True),
    ("all of one array is that array", {"a": {"$all": [[1, 2]]}}, {"a": [1, 2]}, True),
    ("all of one array as an element", {"a": {"$all": [[1, 2]]}}, {"a": [[1, 2], 3]}, True),
    # $elemMatch / $allMatch
    ("elemMatch objects", {"a": {"$elemMatch": {"b": 1}}}, {"a": [{"b": 2}, {"b": 1}]}, True),
    ("elemMatch none", {"a": {"$elemMatch": {"b": 1}}}, {"a": [{"b": 2}]}, False),
    ("elemMatch empty", {"a": {"$elemMatch": {"b": 1}}}, {"a": []}, False),
    ("elemMatch not array", {"a": {"$elemMatch": {"b": 1}}}, {"a": {"b": 1}}, False),
    (
        "elemMatch one element",
        {"a": {"$elemMatch": {"$gte": 80, "$lt": 85}}},
        {"a": [70, 82]},
        True,
    ),
    ("elemMatch split", {"a": {"$elemMatch": {"$gte": 80, "$lt": 85}}}, {"a": [70, 90]}, False),
    ("allMatch", {"a": {"$allMatch": {"$gte": 80, "$lt": 85}}}, {"a": [82, 84]}, True),
    ("allMatch one out", {"a": {"$allMatch": {"$gte": 80, "$lt": 85}}}, {"a": [82, 90]}, False),
    ("allMatch empty", {"a": {"$allMatch": {"$gte": 80}}}, {"a": []}, False),
    # combinators, negation pushed down as CouchDB does
    ("or", {"$or": [{"a": 1}, {"b": 1}]}, {"b": 1}, True),
    ("or none", {"$or": [{"a": 1}, {"b": 1}]}, {}, False),
    ("empty or", {"$or": []}, {"a": 1}, False),
    ("empty and", {"$and": []}, {"a": 1}, True),
    ("or of bare values", {"a": {"$or": [1, 2]}}, {"a": 2}, True),
    ("or of bare values miss", {"a": {"$or": [1, 2]}}, {"a": 3}, False),
    ("nor", {"$nor": [{"a": 1}, {"b": 1}]}, {"a": 2, "b": 2}, True),
    ("nor hit", {"$nor": [{"a": 1}, {"b": 1}]}, {"a": 1, "b": 2}, False),
    ("nor needs the fields", {"$nor": [{"a": 1}, {"b": 1}]}, {}, False),
    ("not", {"$not": {"a": 1}}, {"a": 2}, True),
    ("not hit", {"$not": {"a": 1}}, {"a": 1}, False),
    ("not needs the field", {"$not": {"a": 1}}, {}, False),
    ("not exists", {"$not": {"a": {"$exists": True}}}, {}, True),
    ("not exists present", {"$not": {"a": {"$exists": True}}}, {"a": 1}, False),
    ("not under a field", {"a": {"$not": {"$gt": 5}}}, {"a": 3}, True),
    ("not under a field hit", {"a": {"$not": {"$gt": 5}}}, {"a": 7}, False),
    ("not under a missing field", {"a": {"$not": {"$gt": 5}}}, {}, False),
    ("not or", {"$not": {"$or": [{"a": 1}, {"a": 2}]}}, {"a": 3}, True),
    ("not or missing", {"$not": {"$or": [{"a": 1}, {"a": 2}]}}, {}, False),
    ("not not", {"$not": {"$not": {"a": 1}}}, {"a": 1}, True),
    ("not not miss", {"$not": {"$not": {"a": 1}}}, {"a": 2}, False),
    ("not and is or of nots", {"$not": {"a": 1, "b": 1}}, {"a": 1, "b": 2}, True),
    ("not nor is or", {"$not": {"$nor": [{"a": 1}, {"b": 1}]}}, {"b": 1}, True),
    ("not regex on a number", {"$not": {"a": {"$regex": "x"}}}, {"a": 5}, True),
    ("not regex missing", {"$not": {"a": {"$regex": "x"}}}, {}, False),
    ("not elemMatch", {"$not": {"a": {"$elemMatch": {"$eq": 1}}}}, {"a": [2]}, True),
    ("not elemMatch hit", {"$not": {"a": {"$elemMatch": {"$eq": 1}}}}, {"a": [1]}, False),
    ("not elemMatch missing", {"$not": {"a": {"$elemMatch": {"$eq": 1}}}}, {}, False),
    # paths
    ("dotted path", {"a.b.c": 1}, {"a": {"b": {"c": 1}}}, True),
    ("nested path", {"a": {"b": {"c": 1}}}, {"a": {"b": {"c": 1}}}, True),
    ("array index", {"a.1": "y"}, {"a": ["x", "y"]}, True),
    ("array index out of range", {"a.2": "y"}, {"a": ["x", "y"]}, False),
    ("digit key in an object", {"a.0": "x"}, {"a": {"0": "x"}}, True),
    ("no implicit array traversal", {"a.b": 1}, {"a": [{"b": 1}]}, False),
    ("escaped dot", {"a\\.b": 1}, {"a.b": 1}, True),
    ("escaped dot is not a path", {"a\\.b": 1}, {"a": {"b": 1}}, False),
    ("escaped dollar", {"\\$foo": 1}, {"$foo": 1}, True),
    ("top-level operator applies to the doc", {"$type": "object"}, {}, True),
    # the document's own members
    ("_id regex", {"_id": {"$regex": "^survey:"}}, {"_id": "survey:1"}, True),
    ("_rev", {"_rev": {"$regex": "^2-"}}, {"_id": "a", "_rev": "2-x"}, True),
    ("_deleted", {"_deleted": True}, {"_id": "a", "_deleted": True}, True),
    ("live doc is not _deleted", {"_deleted": True}, {"_id": "a"}, False),
    ("exclude tombstones", {"_deleted": {"$exists": False}}, {"_id": "a"}, True),
]


@pytest.mark.parametrize(
    ("selector", "doc", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_selector_matches(selector, doc, expected):
    assert compile_selector(selector).matches(doc) is expected


def test_the_empty_selector_selects_everything():
    selector = compile_selector({})
    assert selector.matches({})
    assert selector.matches({"_id": "a", "_deleted": True})


def test_compiling_and_matching_change_neither_selector_nor_document():
    raw = {"a": {"$in": [1, 2]}, "$or": [{"b": {"$elemMatch": {"c": 1}}}, {"d": None}]}
    doc = {"a": [2], "b": [{"c": 1}], "d": 0}
    raw_before, doc_before = copy.deepcopy(raw), copy.deepcopy(doc)
    selector = compile_selector(raw)
    assert isinstance(selector, Selector)
    assert selector.matches(doc) and selector.matches(doc)
    assert (raw, doc) == (raw_before, doc_before)
    assert selector.source == raw


# --- errors ----------------------------------------------------------------------------------

ERRORS = [
    ("not an object", [], "JSON object"),
    ("a string", "a", "JSON object"),
    ("null", None, "JSON object"),
    ("and of an object", {"$and": {"a": 1}}, r"\$and takes an array"),
    ("or of a string", {"$or": "a"}, r"\$or takes an array"),
    ("nor of a number", {"$nor": 1}, r"\$nor takes an array"),
    ("not of an array", {"$not": [{"a": 1}]}, r"\$not takes a selector"),
    ("not of a value", {"a": {"$not": 5}}, r"\$not takes a selector"),
    ("in of a number", {"a": {"$in": 1}}, r"\$in takes an array"),
    ("nin of a string", {"a": {"$nin": "ab"}}, r"\$nin takes an array"),
    ("all of an object", {"a": {"$all": {}}}, r"\$all takes an array"),
    ("exists of a string", {"a": {"$exists": "yes"}}, r"\$exists takes a boolean"),
    ("exists of a number", {"a": {"$exists": 1}}, r"\$exists takes a boolean"),
    ("unknown type", {"a": {"$type": "int"}}, r"\$type takes one of"),
    ("type of a number", {"a": {"$type": 1}}, r"\$type takes one of"),
    ("type of a list", {"a": {"$type": ["string"]}}, r"\$type takes one of"),
    ("negative size", {"a": {"$size": -1}}, r"\$size"),
    ("fractional size", {"a": {"$size": 1.5}}, r"\$size"),
    ("boolean size", {"a": {"$size": True}}, r"\$size"),
    ("mod by zero", {"a": {"$mod": [0, 1]}}, r"\$mod"),
    ("mod of one", {"a": {"$mod": [2]}}, r"\$mod"),
    ("mod of three", {"a": {"$mod": [2, 1, 0]}}, r"\$mod"),
    ("mod by a float", {"a": {"$mod": [2.5, 1]}}, r"\$mod"),
    ("mod by a boolean", {"a": {"$mod": [True, 0]}}, r"\$mod"),
    ("mod of a string", {"a": {"$mod": "2,1"}}, r"\$mod"),
    ("invalid regex", {"a": {"$regex": "("}}, r"\$regex is not a valid regular expression"),
    ("regex of a number", {"a": {"$regex": 5}}, r"\$regex takes a string"),
    ("elemMatch of an array", {"a": {"$elemMatch": [1]}}, r"\$elemMatch takes a selector"),
    ("allMatch of a number", {"a": {"$allMatch": 1}}, r"\$allMatch takes a selector"),
    ("unknown operator", {"a": {"$foo": 1}}, r"Invalid operator: \$foo"),
    ("unsupported where", {"$where": "this.a"}, r"Invalid operator: \$where"),
    ("unsupported text", {"$text": "word"}, r"Invalid operator: \$text"),
    ("unknown operator deep inside", {"$or": [{"a": {"$elemMatch": {"$bar": 1}}}]}, r"\$bar"),
    ("empty field name", {"": 1}, "Invalid field name"),
    ("trailing dot", {"a.": 1}, "Invalid field name"),
    ("leading dot", {".a": 1}, "Invalid field name"),
    ("double dot", {"a..b": 1}, "Invalid field name"),
    ("empty nested field name", {"a": {"": 1}}, "Invalid field name"),
]


@pytest.mark.parametrize(
    ("selector", "reason"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_a_malformed_selector_is_a_bad_request_that_says_why(selector, reason):
    with pytest.raises(BadRequest, match=reason) as raised:
        compile_selector(selector)
    assert raised.value.to_json()["error"] == "bad_request"


def test_a_selector_nested_beyond_reason_is_a_bad_request_not_a_crash():
    selector = {"a": 1}
    for _ in range(5000):
        selector = {"$not": selector}
    with pytest.raises(BadRequest, match="nested too deeply"):
        compile_selector(selector)


def test_a_document_nested_beyond_reason_does_not_match_rather_than_crash():
    deep, twin = [], []
    for _ in range(5000):
        deep, twin = [deep], [twin]
    assert compile_selector({"a": {"$eq": twin}}).matches({"a": deep}) is False


# --- properties ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5) | st.text(max_size=2),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=2)
    ),
    max_leaves=6,
)
comparisons = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"])
PROPERTY = settings(max_examples=60, deadline=None)


@PROPERTY
@given(json_values, json_values, json_values)
def test_collation_is_a_total_order(a, b, c):
    assert collate(a, a) == 0
    assert collate(a, b) == -collate(b, a)
    if collate(a, b) <= 0 and collate(b, c) <= 0:
        assert collate(a, c) <= 0


@PROPERTY
@given(comparisons, json_values, json_values)
def test_not_is_the_complement_on_a_present_field_and_false_on_a_missing_one(op, arg, value):
    plain = compile_selector({"a": {op: arg}})
    negated = compile_selector({"$not": {"a": {op: arg}}})
    assert negated.matches({"a": value}) is not plain.matches({"a": value})
    assert plain.matches({}) is negated.matches({}) is False


def test_an_overlong_regex_is_refused():
    with pytest.raises(BadRequest, match="limited"):
        compile_selector({"a": {"$regex": "a" * 257}})
    assert compile_selector({"a": {"$regex": "^a+$"}}).matches({"a": "aaa"})
