"""Replication checkpoints: the ``_local/{replication_id}`` documents replicators keep.

    {"_id": "_local/3f2b...", "session_id": "b1c2...", "last_seq": 1200,
     "history": [{"session_id": "b1c2...", "last_seq": 1200}, ...],
     "replicator": "pouchdb", "version": 1}

``compare_replication_logs`` finds the last sequence both sides agree on; it is ported from
PouchDB's ``pouchdb-checkpointer`` (compareReplicationLogs / compareReplicationHistory).
See protocol.rst, "Compare Replication Logs".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LOWEST_SEQ: Any = 0


@dataclass(frozen=True, slots=True)
class LogComparison:
    last_seq: Any
    history: tuple[Mapping[str, Any], ...]


def compare_replication_logs(source: Mapping[str, Any], target: Mapping[str, Any]) -> LogComparison:
    """Return the sequence to resume from, given the source's and the target's logs."""
    if source.get("session_id") and source.get("session_id") == target.get("session_id"):
        return LogComparison(source.get("last_seq", LOWEST_SEQ), tuple(source.get("history", ())))
    return compare_replication_history(
        tuple(source.get("history", ())), tuple(target.get("history", ()))
    )


def compare_replication_history(
    source_history: Sequence[Mapping[str, Any]], target_history: Sequence[Mapping[str, Any]]
) -> LogComparison:
    """Walk both histories for the newest session they share."""
    source_rest = tuple(source_history)
    target_rest = tuple(target_history)
    while source_rest and target_rest:
        head_s, head_t = source_rest[0], target_rest[0]
        if _has_session(head_s.get("session_id"), target_rest):
            return LogComparison(head_s.get("last_seq", LOWEST_SEQ), source_rest)
        if _has_session(head_t.get("session_id"), source_rest[1:]):
            return LogComparison(head_t.get("last_seq", LOWEST_SEQ), target_rest[1:])
        source_rest, target_rest = source_rest[1:], target_rest[1:]
    return LogComparison(LOWEST_SEQ, ())


def _has_session(session_id: object, history: Sequence[Mapping[str, Any]]) -> bool:
    return session_id is not None and any(h.get("session_id") == session_id for h in history)


MAX_SEQ = 2**63 - 1  # a seq is a 64-bit column; a checkpoint claiming more records none


# Where each replicator writes the sequence it reached: PouchDB (and RxDB) ``last_seq``,
# CouchDB's own replicator ``source_last_seq`` (its history entries ``recorded_seq``).
SEQ_FIELDS = ("last_seq", "source_last_seq")
HISTORY_SEQ_FIELDS = ("last_seq", "recorded_seq")


def checkpoint_seq(body: Mapping[str, Any]) -> int | None:
    """Return the integer sequence a checkpoint document records, if it records one
    (PouchDB's ``last_seq`` or CouchDB's ``source_last_seq``)."""
    for field in SEQ_FIELDS:
        if field in body:
            return seq_value(body[field])
    return None


def seq_value(raw: object) -> int | None:
    """The integer of a recorded sequence (``12``, ``"12"``, ``"12-g1AAAA"``), else None."""
    seq: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        seq = raw
    elif isinstance(raw, str):
        head = raw.split("-", 1)[0]
        if head.isascii() and head.isdigit() and len(head) <= 19:  # "²".isdigit() is True
            seq = int(head)
    return seq if seq is not None and -MAX_SEQ <= seq <= MAX_SEQ else None
