"""Changes-feed sequences and parameters.

A ``seq`` is a per-database integer that only grows; on the wire it is a JSON number:

    {"seq": 12, "id": "doc", "changes": [{"rev": "3-c"}], "deleted": true}

``since`` also accepts ``"now"`` and CouchDB 2.x style strings (``"12-g1AAAA..."``): the
number before the dash is what counts.  See protocol.rst, "Listen to Changes Feed".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from replication.errors import BadRequest

FEEDS = ("normal", "longpoll", "continuous", "eventsource")
_SEQ_RE = re.compile(r"^(0|[1-9][0-9]{0,18})(?:-.*)?$", re.DOTALL)
MAX_SEQ = 2**63 - 1  # a signed 64-bit column; anything larger cannot be a stored seq


@dataclass(frozen=True, slots=True, order=True)
class Seq:
    """A position in one database's changes feed."""

    value: int

    @classmethod
    def parse(cls, raw: object) -> Seq:
        """Parse a ``since``/``last_seq`` value: ``12``, ``"12"`` or ``"12-opaque"``."""
        if isinstance(raw, bool):
            raise BadRequest("Invalid sequence")
        if isinstance(raw, int):
            if not 0 <= raw <= MAX_SEQ:
                raise BadRequest("Invalid sequence")
            return cls(raw)
        if isinstance(raw, str):
            match = _SEQ_RE.match(raw.strip())
            if match and int(match.group(1)) <= MAX_SEQ:
                return cls(int(match.group(1)))
        raise BadRequest(f"Invalid sequence: {raw!r}")

    def __str__(self) -> str:
        return str(self.value)


def parse_since(raw: str | None) -> Seq | Literal["now"]:
    """Parse the ``since`` query parameter."""
    if raw is None or raw == "":
        return Seq(0)
    if raw == "now":
        return "now"
    return Seq.parse(raw)


def parse_feed(raw: str | None) -> str:
    """Validate the ``feed`` parameter."""
    feed = raw or "normal"
    if feed not in FEEDS:
        raise BadRequest(f"Unknown feed: {feed}")
    return feed


def parse_style(raw: str | None) -> str:
    """Validate the ``style`` parameter (``main_only`` or ``all_docs``)."""
    style = raw or "main_only"
    if style not in ("main_only", "all_docs"):
        raise BadRequest(f"Unknown style: {style}")
    return style
