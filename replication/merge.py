"""Three-way, field-level merge of JSON document bodies (SPEC §5, strategy/policy ``merge``).

Objects are merged key by key, recursively; lists and scalars are opaque values (a list is
compared as a whole).  For every key, with ``a``/``m``/``t`` the ancestor's, mine and theirs
(any of them possibly *absent*, and absent differs from every value, ``null`` included):

    m == t                      -> m        (same edit on both sides, or no edit)
    m == a                      -> t        (only theirs changed it; a deletion is a change)
    t == a                      -> m        (only mine changed it)
    m, t both objects           -> recurse, with ``a`` as ancestor if it is an object, else {}
    otherwise                   -> conflict at that key's path

An empty ancestor (``{}``, and also an ancestor that is ``None`` because it is no longer
stored, or a non-object where both sides now hold objects) keeps keys added on only one side
and conflicts on keys both sides set to different values.

Equality is JSON equality, stricter than Python's: ``1``, ``1.0`` and ``true`` are three
different values (Python has ``1 == 1.0 == True``).

Top-level keys starting with ``_`` (CouchDB metadata: ``_id``, ``_rev``, ``_revisions``,
``_attachments``, ``_conflicts``, ``_deleted``, ...) are not merged: they are ignored in all
three inputs and left out of the result; the caller re-attaches id and attachments.  Nested
keys starting with ``_`` are ordinary data.

Conflict paths are JSON pointers (RFC 6901: ``~`` is written ``~0`` and ``/`` is ``~1``),
e.g. ``/responses/q1``, sorted as strings.  Inputs are never mutated, and a merged body
shares no mutable object with them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from replication.errors import MergeConflict


class _Absent:
    """The value of a key that is not there (distinct from JSON ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Final = _Absent()


@dataclass(frozen=True, slots=True)
class BodyMergeResult:
    """The outcome of :func:`merge3`: a merged ``body`` when clean, else the ``conflicts``."""

    body: dict[str, Any] | None
    conflicts: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """True when no field was changed differently on both sides."""
        return not self.conflicts


def merge3(
    ancestor: Mapping[str, Any] | None,
    mine: Mapping[str, Any],
    theirs: Mapping[str, Any],
) -> BodyMergeResult:
    """Merge ``mine`` and ``theirs`` against their common ``ancestor`` (None: not stored).

    Returns the merged body (fresh objects, without top-level ``_`` keys) and no conflicts,
    or ``body=None`` and the sorted JSON-pointer paths where both sides disagree.
    """
    base = _strip_meta(ancestor) if ancestor is not None else {}
    conflicts: list[str] = []
    body = _merge_objects(base, _strip_meta(mine), _strip_meta(theirs), "", conflicts)
    if conflicts:
        return BodyMergeResult(body=None, conflicts=tuple(sorted(conflicts)))
    return BodyMergeResult(body=body)


def merge_or_raise(
    ancestor: Mapping[str, Any] | None,
    mine: Mapping[str, Any],
    theirs: Mapping[str, Any],
) -> dict[str, Any]:
    """Return the clean :func:`merge3` body, or raise :class:`MergeConflict` (409)."""
    result = merge3(ancestor, mine, theirs)
    if result.body is None:
        raise MergeConflict(result.conflicts)
    return result.body


def json_equal(left: Any, right: Any) -> bool:
    """Compare two JSON values strictly: types must match (bool/int/float kept apart)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(
            json_equal(value, right[key]) for key, value in left.items()
        )
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(json_equal, left, right))
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    return bool(left == right)


def escape_pointer_token(key: str) -> str:
    """Escape one object key as an RFC 6901 reference token (``~`` -> ``~0``, ``/`` -> ``~1``)."""
    return key.replace("~", "~0").replace("/", "~1")


def _strip_meta(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in body.items()
        if not (isinstance(key, str) and key.startswith("_"))
    }


def _merge_objects(
    ancestor: Mapping[str, Any],
    mine: Mapping[str, Any],
    theirs: Mapping[str, Any],
    path: str,
    conflicts: list[str],
) -> dict[str, Any]:
    """Merge three objects key by key, appending conflict paths; return a fresh object."""
    merged: dict[str, Any] = {}
    # Mine's key order first, then keys only theirs has; ancestor-only keys were deleted
    # on both sides (or conflict) and are never kept, so their order does not matter.
    keys = list(mine) + [key for key in theirs if key not in mine]
    keys += [key for key in ancestor if key not in mine and key not in theirs]
    for key in keys:
        here = f"{path}/{escape_pointer_token(str(key))}"
        value = _merge_values(
            ancestor.get(key, _ABSENT),
            mine.get(key, _ABSENT),
            theirs.get(key, _ABSENT),
            here,
            conflicts,
        )
        if value is not _ABSENT:
            merged[key] = value
    return merged


def _merge_values(ancestor: Any, mine: Any, theirs: Any, path: str, conflicts: list[str]) -> Any:
    """Merge one key's three values; return the merged value (fresh) or ``_ABSENT``."""
    if _same(mine, theirs):
        return _clone(mine)
    if _same(mine, ancestor):
        return _clone(theirs)
    if _same(theirs, ancestor):
        return _clone(mine)
    if isinstance(mine, dict) and isinstance(theirs, dict):
        base = ancestor if isinstance(ancestor, dict) else {}
        return _merge_objects(base, mine, theirs, path, conflicts)
    conflicts.append(path)
    return _ABSENT


def _same(left: Any, right: Any) -> bool:
    if left is _ABSENT or right is _ABSENT:
        return left is right
    return json_equal(left, right)


def _clone(value: Any) -> Any:
    """Copy a JSON value into fresh containers (scalars are immutable and shared)."""
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone(item) for item in value]
    return value
