"""``_revs_diff``: which of the revisions a source has are missing on this side.

    request   {"doc": ["2-b", "3-c"]}
    response  {"doc": {"missing": ["3-c"], "possible_ancestors": ["2-b"]}}

``possible_ancestors`` lists known leaves of a lower generation than the newest missing
revision, as CouchDB does, so a replicator can send attachment stubs.  See protocol.rst,
"Calculate Revision Difference".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from replication.revs import rev_pos
from replication.revtree import RevTree, leaves


@dataclass(frozen=True, slots=True)
class RevsDiff:
    missing: tuple[str, ...]
    possible_ancestors: tuple[str, ...]

    def to_json(self) -> dict[str, list[str]]:
        out = {"missing": list(self.missing)}
        if self.possible_ancestors:
            out["possible_ancestors"] = list(self.possible_ancestors)
        return out


def revs_diff(tree: RevTree | None, revs: Iterable[str]) -> RevsDiff | None:
    """Return what is missing of ``revs`` (None when nothing is), with possible ancestors."""
    if not tree:  # a document this side does not have: every revision is missing
        absent = tuple(dict.fromkeys(revs))
        return RevsDiff(absent, ()) if absent else None
    known = tree
    # dict.fromkeys: first-seen order without duplicates, in linear time (a list lookup per
    # revision made a 100,000-revision request take a minute of CPU).
    missing = [rev for rev in dict.fromkeys(revs) if rev not in known]
    if not missing:
        return None
    newest = max(rev_pos(rev) for rev in missing)
    ancestors = tuple(rev for rev in leaves(known) if rev_pos(rev) < newest)
    return RevsDiff(tuple(missing), ancestors)
