"""Changes-feed sequences and query parameters."""

import pytest

from replication import BadRequest, Seq, parse_feed, parse_since, parse_style


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (0, 0),
        (12, 12),
        ("0", 0),
        ("12", 12),
        (" 12 ", 12),
        ("12-g1AAAAGjeJzLYWBgYMlgTmGQT0lKzi9KdUhJMtRLSs3NTyxJTdFLzsnMS9HLSy0pyCkFSjIlMiTJ", 12),
        ("0-opaque", 0),
        ("7-", 7),
        ("3-a\nb", 3),
        (2**63 - 1, 2**63 - 1),
        (str(2**63 - 1), 2**63 - 1),
    ],
)
def test_a_seq_parses_from_numbers_strings_and_couchdb_2_style_strings(raw, value):
    assert Seq.parse(raw) == Seq(value)


@pytest.mark.parametrize(
    "raw",
    [
        -1,
        "-1",
        "",
        "abc",
        "1.5",
        1.5,
        "012",
        "12abc",
        "\uff11\uff12",  # full-width digits are not a sequence
        True,
        False,
        None,
        [12],
        {"seq": 12},
        2**63,  # no signed 64-bit column holds it
        str(2**63),
        "99999999999999999999",
    ],
)
def test_a_malformed_seq_is_a_bad_request(raw):
    with pytest.raises(BadRequest):
        Seq.parse(raw)


def test_seqs_order_and_print_as_numbers():
    assert Seq(2) < Seq(10)
    assert str(Seq(10)) == "10"
    assert sorted([Seq(10), Seq(2), Seq(0)]) == [Seq(0), Seq(2), Seq(10)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, Seq(0)),
        ("", Seq(0)),
        ("0", Seq(0)),
        ("12", Seq(12)),
        ("12-g1AAA", Seq(12)),
        ("now", "now"),
    ],
)
def test_parse_since(raw, expected):
    assert parse_since(raw) == expected


@pytest.mark.parametrize("raw", ["NOW", "now ", "-1", "abc", "1e3", "later"])
def test_a_malformed_since_is_a_bad_request(raw):
    with pytest.raises(BadRequest):
        parse_since(raw)


@pytest.mark.parametrize(
    ("raw", "feed"),
    [
        (None, "normal"),
        ("", "normal"),
        ("normal", "normal"),
        ("longpoll", "longpoll"),
        ("continuous", "continuous"),
        ("eventsource", "eventsource"),
    ],
)
def test_parse_feed(raw, feed):
    assert parse_feed(raw) == feed


@pytest.mark.parametrize("raw", ["websocket", "Normal", "poll", " normal"])
def test_an_unknown_feed_is_a_bad_request(raw):
    with pytest.raises(BadRequest):
        parse_feed(raw)


@pytest.mark.parametrize(
    ("raw", "style"),
    [(None, "main_only"), ("", "main_only"), ("main_only", "main_only"), ("all_docs", "all_docs")],
)
def test_parse_style(raw, style):
    assert parse_style(raw) == style


@pytest.mark.parametrize("raw", ["all", "ALL_DOCS", "main"])
def test_an_unknown_style_is_a_bad_request(raw):
    with pytest.raises(BadRequest):
        parse_style(raw)
