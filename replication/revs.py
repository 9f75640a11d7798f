"""Revision ids: the ``"{pos}-{hash}"`` strings of the CouchDB revision model.

    "3-917fa2381192822767f010b95b45325b"
     |  '-- hash: md5 over the edit (see ``new_rev_hash``), or any id a client chose
     '-- pos: generation, 1 for a new document, parent + 1 for every edit

Revision hashes made here are deterministic over (parent revision, deleted flag, body,
attachment digests), so the same edit made on two devices yields the same revision and
replicates as one, not as a conflict.  See protocol.rst, "Revisions".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from replication.errors import BadRequest

# Matched with fullmatch: "$" alone would also accept a trailing newline ("1-a\n").
_REV_RE = re.compile(r"([1-9][0-9]{0,14})-([0-9A-Za-z]{1,128})")
_HASH_RE = re.compile(r"[0-9A-Za-z]{1,128}")
MAX_POS = 10**15 - 1  # the largest generation ``_REV_RE`` accepts


@dataclass(frozen=True, slots=True, order=True)
class Rev:
    """A parsed revision id; orders like CouchDB (generation, then hash)."""

    pos: int
    hash: str

    @classmethod
    def parse(cls, value: object) -> Rev:
        """Parse ``"3-abc"``; raise ``BadRequest`` for anything else."""
        if not isinstance(value, str):
            raise BadRequest("Invalid rev format")
        match = _REV_RE.fullmatch(value)
        if match is None:
            raise BadRequest("Invalid rev format")
        return cls(int(match.group(1)), match.group(2))

    def __str__(self) -> str:
        return f"{self.pos}-{self.hash}"


def rev_pos(rev: str) -> int:
    """Return the generation of an already validated revision string."""
    return int(rev.partition("-")[0])


def rev_hash(rev: str) -> str:
    """Return the hash part of an already validated revision string."""
    return rev.partition("-")[2]


def validate_rev(value: object) -> str:
    """Return ``value`` if it is a well-formed revision string, else raise ``BadRequest``.

    A well-formed revision is already in canonical form (no leading zeros, no sign, no
    whitespace), so the string itself is returned: ``str(Rev.parse(value)) == value``.
    """
    if type(value) is str and _REV_RE.fullmatch(value) is not None:
        return value
    return str(Rev.parse(value))  # a str subclass, or the error


def revisions_to_path(revisions: object) -> tuple[str, ...]:
    """Turn a ``_revisions`` object into a path of revision strings, leaf first.

    ``{"start": 3, "ids": ["c", "b", "a"]}`` -> ``("3-c", "2-b", "1-a")``
    """
    if not (type(revisions) is dict or isinstance(revisions, Mapping)):
        raise BadRequest("_revisions must be an object")
    start = revisions.get("start")
    ids = revisions.get("ids")
    if not isinstance(start, int) or isinstance(start, bool) or not 1 <= start <= MAX_POS:
        raise BadRequest("_revisions.start must be a positive integer")
    if not isinstance(ids, list) or not ids:
        raise BadRequest("_revisions.ids must be a non-empty list")
    if len(ids) > start:
        raise BadRequest("_revisions.ids is longer than _revisions.start allows")
    path = []
    for offset, rev_id in enumerate(ids):
        if not isinstance(rev_id, str) or not _HASH_RE.fullmatch(rev_id):
            raise BadRequest("Invalid rev format in _revisions")
        path.append(f"{start - offset}-{rev_id}")
    return tuple(path)


def path_to_revisions(path: Iterable[str]) -> dict[str, Any]:
    """Inverse of ``revisions_to_path``: ``("3-c", "2-b")`` -> start 3, ids ["c", "b"]."""
    revs = list(path)
    return {"start": rev_pos(revs[0]), "ids": [rev_hash(r) for r in revs]}


def new_rev_hash(
    parent: str | None, deleted: bool, body: Mapping[str, Any], digests: Iterable[str]
) -> str:
    """Return the deterministic hash of an edit (md5 hex, like CouchDB's revision ids)."""
    payload = json.dumps(
        [parent, bool(deleted), body, sorted(digests)],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.md5(payload.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()
