"""Replication checkpoints; the log comparison cases are ported from PouchDB's
``tests/unit/test.checkpointer.js`` (whose comparison is itself ported from CouchDB's
couch_replicator ``compare_replication_logs``)."""

import pytest

from replication import checkpoint_seq, compare_replication_history, compare_replication_logs


def log(session_id, *seqs_by_session):
    """Build a checkpoint doc whose history lists ``(session_id, last_seq)`` newest first."""
    history = [{"session_id": s, "last_seq": seq} for s, seq in seqs_by_session]
    return {
        "_id": "_local/rep",
        "session_id": session_id,
        "last_seq": history[0]["last_seq"] if history else 0,
        "history": history,
        "replicator": "pouchdb",
        "version": 1,
    }


def test_the_same_session_on_both_sides_resumes_from_the_source_seq():
    # "get: return source.last_seq if different last_seq, but same session_id": the target is
    # written first, so it may be ahead; the source's seq is the one both sides surely have.
    source = log("session-3", ("session-3", 6), ("session-2", 5), ("session-1", 2))
    target = log("session-3", ("session-3", 7), ("session-2", 5), ("session-1", 2))
    result = compare_replication_logs(source, target)
    assert result.last_seq == 6
    assert result.history == tuple(source["history"])


def test_a_source_ahead_resumes_from_the_latest_session_the_target_also_has():
    # "get: return latest matching seq from divergent state src ahead"
    source = log("session-3", ("session-3", 3), ("session-2", 2), ("session-1", 1))
    target = log("session-2", ("session-2", 2), ("session-1", 1))
    assert compare_replication_logs(source, target).last_seq == 2


def test_a_target_ahead_resumes_from_the_latest_session_the_source_also_has():
    # "get: return last matching seq from divergent state tgt ahead"
    source = log(
        "session-6",
        ("session-6", 6),
        ("session-5", 5),
        ("session-4", 4),
        ("session-3", 3),
        ("session-2", 2),
    )
    target = log(
        "session-9",
        ("session-9", 9),
        ("session-8", 8),
        ("session-7", 7),
        ("session-6", 6),
        ("session-5", 5),
    )
    assert compare_replication_logs(source, target).last_seq == 6


def test_histories_with_no_session_in_common_start_from_zero():
    source = log("a", ("a", 10), ("b", 5))
    target = log("c", ("c", 12), ("d", 4))
    result = compare_replication_logs(source, target)
    assert (result.last_seq, result.history) == (0, ())


@pytest.mark.parametrize(
    ("source", "target"),
    [
        pytest.param({}, {}, id="two empty logs"),
        pytest.param({"history": []}, log("a", ("a", 3)), id="empty source history"),
        pytest.param(log("a", ("a", 3)), {"history": []}, id="empty target history"),
    ],
)
def test_missing_or_empty_logs_start_from_zero(source, target):
    assert compare_replication_logs(source, target).last_seq == 0


def test_logs_without_a_session_id_never_count_as_the_same_session():
    # PouchDB compares undefined === undefined; two logs with no session share nothing.
    assert compare_replication_logs({"last_seq": 9}, {"last_seq": 9}).last_seq == 0


def test_history_entries_without_a_session_id_never_match():
    source = [{"last_seq": 4}, {"session_id": "x", "last_seq": 1}]
    target = [{"last_seq": 4}, {"session_id": "x", "last_seq": 2}]
    assert compare_replication_history(source, target).last_seq == 1


def test_a_string_seq_is_resumed_verbatim():
    source = log("s", ("s", "12-g1AAAA"))
    target = log("s", ("s", "12-g1AAAA"))
    assert compare_replication_logs(source, target).last_seq == "12-g1AAAA"


def test_comparing_logs_does_not_change_them():
    source = log("session-3", ("session-3", 3), ("session-2", 2))
    target = log("session-2", ("session-2", 2))
    before = (repr(source), repr(target))
    compare_replication_logs(source, target)
    assert (repr(source), repr(target)) == before


@pytest.mark.parametrize(
    ("body", "seq"),
    [
        ({"last_seq": 12}, 12),
        ({"last_seq": 0}, 0),
        ({"last_seq": "12"}, 12),
        ({"last_seq": "12-g1AAAA"}, 12),
        ({"last_seq": True}, None),
        ({"last_seq": None}, None),
        ({}, None),
        ({"last_seq": "abc"}, None),
        ({"last_seq": ""}, None),
        ({"last_seq": "²"}, None),  # str.isdigit() says yes, int() says no
        ({"last_seq": "١٢"}, None),  # Arabic-Indic digits are not a seq either
        ({"last_seq": 1.5}, None),
        ({"last_seq": [12]}, None),
        ({"source_last_seq": "5-g1AAAA", "history": []}, 5),  # CouchDB's replicator
        ({"source_last_seq": 7}, 7),
        ({"last_seq": 3, "source_last_seq": 9}, 3),
    ],
)
def test_checkpoint_seq_reads_the_integer_a_checkpoint_records(body, seq):
    assert checkpoint_seq(body) == seq
