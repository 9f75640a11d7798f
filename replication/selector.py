"""Mango selectors for ``_changes?filter=_selector``: CouchDB's ``/{db}/_find`` syntax.

    {"type": "inspection",                         implicit $eq, implicit $and
     "site.city": {"$in": ["Oslo", "Bergen"]},     dotted path into nested objects
     "score": {"$gte": 3, "$lt": 10},
     "$or": [{"done": true}, {"tags": {"$all": ["urgent"]}}]}

    >>> selector = compile_selector({"year": {"$gt": 2010}, "director": "Lars von Trier"})
    >>> selector.matches({"_id": "a", "year": 2011, "director": "Lars von Trier"})
    True
    >>> compile_selector({"genre": {"$elemMatch": {"$eq": "Horror"}}}).matches({"genre": []})
    False

Matching follows ``mango_selector.erl``:

* a field missing from the document matches no condition but ``{"$exists": false}``, so
  ``$ne``, ``$nin`` and a ``$not`` over a field need the field (CouchDB pushes ``$not`` down to
  the field conditions by De Morgan's laws before matching; ``negate`` below does the same);
* comparisons use view collation: null < false < true < numbers < strings < arrays < objects
  (strings by code point here, not ICU); booleans are not numbers;
* ``a.b`` walks into objects and ``a.0`` into arrays; ``\\.`` escapes a dot in a field name.

See docs.couchdb.org, "Mango Queries" > "Selectors" (src/docs/src/ddocs/mango.rst), used by
the ``_selector`` filter of api/database/changes.rst.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from replication.errors import BadRequest

Predicate = Callable[[Any], bool]

MISSING = object()  # the document lacks the field
BAD_PATH = object()  # the path runs through a scalar: CouchDB's bad_path matches nothing at all
TYPES = ("null", "boolean", "number", "string", "array", "object")
_RANK = {kind: rank for rank, kind in enumerate(TYPES)}  # the collation order of the types
_COMPARISONS: dict[str, Callable[[int], bool]] = {
    "$eq": lambda order: order == 0,
    "$ne": lambda order: order != 0,
    "$gt": lambda order: order > 0,
    "$gte": lambda order: order >= 0,
    "$lt": lambda order: order < 0,
    "$lte": lambda order: order <= 0,
}


@dataclass(frozen=True, slots=True)
class Selector:
    """A validated, compiled selector."""

    source: Mapping[str, Any]
    predicate: Predicate = field(repr=False, compare=False)

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """Tell whether the full document (``_id``, ``_rev``, ``_deleted``...) is selected."""
        try:
            return self.predicate(doc)
        except RecursionError:  # a document nested deeper than any sane selector reaches
            return False


MAX_REGEX_LENGTH = 256


def compile_selector(selector: object) -> Selector:
    """Validate ``selector`` and compile it; raise ``BadRequest`` saying what is wrong."""
    if not isinstance(selector, Mapping):
        raise BadRequest("selector must be a JSON object")
    if not selector:
        return Selector(selector, lambda doc: True)  # the empty selector selects everything
    try:
        return Selector(selector, _condition(selector, negate=False))
    except RecursionError as exc:
        raise BadRequest("selector is nested too deeply") from exc


def _condition(cond: object, negate: bool) -> Predicate:
    """Compile what a value must satisfy: an object of clauses, or a bare value to equal."""
    if not isinstance(cond, Mapping) or not cond:
        return _operator("$eq", cond, negate)
    return _combine([_clause(key, arg, negate) for key, arg in cond.items()], any_of=negate)


def _combine(predicates: list[Predicate], any_of: bool) -> Predicate:
    """Join predicates with or (``any_of``) or and; an empty and is true, an empty or false."""
    if len(predicates) == 1:
        return predicates[0]
    if any_of:
        return lambda value: any(predicate(value) for predicate in predicates)
    return lambda value: all(predicate(value) for predicate in predicates)


def _clause(key: str, arg: Any, negate: bool) -> Predicate:
    """Compile one ``key: arg`` member: a combinator, an operator, or a field."""
    _require(isinstance(key, str), "selector keys must be strings")
    if key in ("$and", "$or", "$nor"):
        _require(isinstance(arg, list), f"{key} takes an array of selectors")
        inner_negate = negate != (key == "$nor")  # $nor is $and over negated selectors
        predicates = [_condition(item, inner_negate) for item in arg]
        return _combine(predicates, any_of=(key == "$or") != negate)  # De Morgan swaps and/or
    if key == "$not":
        _require(isinstance(arg, Mapping), "$not takes a selector object")
        return _condition(arg, not negate)
    if key.startswith("$"):
        return _operator(key, arg, negate)
    path = _field_path(key)
    inner = _condition(arg, negate)
    return lambda value: inner(_get(value, path))


def _operator(op: str, arg: Any, negate: bool) -> Predicate:
    """Compile a condition operator applied to the current value."""
    if op == "$exists":
        _require(isinstance(arg, bool), "$exists takes a boolean")
        wanted = arg != negate
        return lambda value: value is not BAD_PATH and (value is not MISSING) == wanted
    test = _test(op, arg)
    # An absent field matches neither the test nor its negation (CouchDB's not_found).
    return lambda value: value is not MISSING and value is not BAD_PATH and test(value) != negate


def _test(op: str, arg: Any) -> Predicate:
    """Validate an operand; return the test a value that exists must pass."""
    if op in _COMPARISONS:
        compare = _COMPARISONS[op]
        return lambda value: compare(collate(value, arg))
    if op in ("$in", "$nin", "$all"):
        _require(isinstance(arg, list), f"{op} takes an array")
        if op == "$all":
            return lambda value: _contains_all(value, arg)
        return lambda value: _is_in(value, arg) == (op == "$in")
    if op == "$type":
        _require(arg in TYPES, f"$type takes one of {', '.join(TYPES)}")
        return lambda value: json_type(value) == arg
    if op == "$size":
        _require(_is_int(arg) and arg >= 0, "$size takes a non-negative integer")
        return lambda value: isinstance(value, list) and len(value) == arg
    if op == "$mod":
        valid = isinstance(arg, list) and len(arg) == 2 and all(map(_is_int, arg)) and arg[0]
        _require(bool(valid), "$mod takes [Divisor, Remainder]: integers, Divisor non-zero")
        return lambda value: _is_int(value) and _rem(value, arg[0]) == arg[1]
    if op == "$regex":
        _require(isinstance(arg, str), "$regex takes a string")
        # Python's re has no time limit: bound what a client can ask it to do.
        _require(
            len(arg) <= MAX_REGEX_LENGTH, f"$regex is limited to {MAX_REGEX_LENGTH} characters"
        )
        try:
            pattern = re.compile(arg)
        except re.error as exc:
            raise BadRequest(f"$regex is not a valid regular expression: {exc}") from exc
        return lambda value: isinstance(value, str) and pattern.search(value) is not None
    if op in ("$elemMatch", "$allMatch"):
        _require(isinstance(arg, Mapping), f"{op} takes a selector object")
        inner = _condition(arg, negate=False)
        if op == "$elemMatch":
            return lambda value: isinstance(value, list) and any(map(inner, value))
        return lambda value: isinstance(value, list) and bool(value) and all(map(inner, value))
    raise BadRequest(f"Invalid operator: {op}")


def _require(valid: bool, reason: str) -> None:
    if not valid:
        raise BadRequest(reason)


def _field_path(key: str) -> tuple[str, ...]:
    """Split ``"a.b\\.c"`` into ``("a", "b.c")``."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(key)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    if "" in parts:
        raise BadRequest(f"Invalid field name: {key!r}")
    return tuple(parts)


def _get(value: Any, path: tuple[str, ...]) -> Any:
    """Walk ``path`` into ``value``; return MISSING or BAD_PATH when it cannot."""
    for name in path:
        if value is MISSING or value is BAD_PATH:
            return value
        if isinstance(value, Mapping):
            value = value.get(name, MISSING)
        elif isinstance(value, list) and name.isascii() and name.isdigit():
            index = int(name)
            value = value[index] if index < len(value) else BAD_PATH
        else:
            return BAD_PATH
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rem(value: int, divisor: int) -> int:
    """Erlang's ``rem``: the remainder takes the sign of the dividend."""
    remainder = abs(value) % abs(divisor)
    return -remainder if value < 0 else remainder


def _is_in(value: Any, choices: list[Any]) -> bool:
    """An array matches ``$in`` when any element equals a choice (mango_selector.erl)."""
    items = value if isinstance(value, list) else [value]
    return any(collate(item, choice) == 0 for item in items for choice in choices)


def _contains_all(value: Any, wanted: list[Any]) -> bool:
    if not isinstance(value, list):
        return False
    if all(any(collate(item, want) == 0 for item in value) for want in wanted):
        return True
    # CouchDB quirk kept for compatibility: {"$all": [[1, 2]]} also matches the array [1, 2].
    return len(wanted) == 1 and isinstance(wanted[0], list) and collate(wanted[0], value) == 0


def json_type(value: Any) -> str:
    """Return the ``$type`` name of a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, Mapping) else "unknown"  # not JSON


def collate(a: Any, b: Any) -> int:
    """Compare two JSON values in CouchDB view collation order: -1, 0 or 1."""
    kind_a, kind_b = json_type(a), json_type(b)
    if kind_a != kind_b:
        return -1 if _RANK.get(kind_a, 6) < _RANK.get(kind_b, 6) else 1
    if kind_a == "null":
        return 0
    if kind_a == "object":  # member by member, key then value, in document order
        a, b = [list(member) for member in a.items()], [list(member) for member in b.items()]
    if kind_a in ("array", "object"):
        for left, right in zip(a, b, strict=False):
            if order := collate(left, right):
                return order
        a, b = len(a), len(b)
    elif kind_a == "unknown":  # not JSON: order somehow, but never raise
        a, b = repr(a), repr(b)
    return (a > b) - (a < b)
