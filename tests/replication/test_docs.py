"""Incoming documents: ids, special members, ``_revisions``, attachments."""

import base64
import hashlib

import pytest

from replication import (
    Attachment,
    BadRequest,
    DocEdit,
    md5_digest,
    parse_attachments,
    parse_doc,
    validate_doc_id,
)

HELLO = base64.b64encode(b"hello").decode()
HELLO_DIGEST = "md5-XUFAKrxLKna5cZ2REBfFkg=="  # what CouchDB reports for b"hello"


# --- document ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc_id",
    ["a", "survey:2024:17", "_design/forms", "_design/a/b", "é", "x" * 1000, "日本" * 166],
)
def test_a_valid_doc_id_is_returned_as_is(doc_id):
    assert validate_doc_id(doc_id) == doc_id


@pytest.mark.parametrize(
    "doc_id",
    [
        pytest.param("_foo", id="reserved underscore"),
        pytest.param("_design/", id="design prefix without a name"),
        pytest.param("_local/x", id="local docs are not documents"),
        pytest.param("_", id="lone underscore"),
        pytest.param("", id="empty"),
        pytest.param("a\x00b", id="NUL"),
        pytest.param("x" * 1001, id="1001 bytes"),
        pytest.param("é" * 501, id="1002 utf-8 bytes in 501 characters"),
        pytest.param("\ud800", id="lone surrogate"),
        pytest.param(None, id="None"),
        pytest.param(17, id="number"),
        pytest.param(["a"], id="list"),
    ],
)
def test_an_invalid_doc_id_is_a_bad_request(doc_id):
    with pytest.raises(BadRequest):
        validate_doc_id(doc_id)


def test_design_ids_can_be_refused_where_they_make_no_sense():
    with pytest.raises(BadRequest):
        validate_doc_id("_design/x", allow_design=False)


# --- documents -------------------------------------------------------------------------------


def test_a_document_is_split_into_an_edit():
    edit = parse_doc(
        {
            "_id": "a",
            "_rev": "2-y",
            "_revisions": {"start": 2, "ids": ["y", "x"]},
            "_deleted": False,
            "title": "t",
            "nested": {"_ok": 1},
        }
    )
    assert edit == DocEdit(
        doc_id="a",
        rev="2-y",
        path=("2-y", "1-x"),
        deleted=False,
        body={"title": "t", "nested": {"_ok": 1}},
    )


def test_the_url_id_is_used_when_the_body_has_none():
    assert parse_doc({"v": 1}, doc_id="from-url").doc_id == "from-url"
    assert parse_doc({"_id": "same", "v": 1}, doc_id="same").doc_id == "same"


def test_a_body_id_that_contradicts_the_url_is_a_bad_request():
    with pytest.raises(BadRequest):
        parse_doc({"_id": "other"}, doc_id="from-url")


@pytest.mark.parametrize("member", ["_conflicts", "_deleted_conflicts", "_revs_info", "_local_seq"])
def test_special_members_couchdb_returns_are_accepted_and_dropped_from_the_body(member):
    edit = parse_doc({"_id": "a", member: [], "v": 1})
    assert edit.body == {"v": 1}


def test_a_deleted_document_is_flagged():
    edit = parse_doc({"_id": "a", "_rev": "1-x", "_deleted": True})
    assert edit.deleted
    assert edit.body == {}


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"_id": "a", "_foo": 1}, id="unknown special member"),
        pytest.param({"_id": "a", "_": 1}, id="bare underscore member"),
        pytest.param({"_id": "a", "_deleted": "true"}, id="_deleted as a string"),
        pytest.param({"_id": "a", "_deleted": 1}, id="_deleted as a number"),
        pytest.param({"_id": "a", "_deleted": None}, id="_deleted as null"),
        pytest.param({"_id": "a", "_rev": "x"}, id="malformed _rev"),
        pytest.param({"_id": "a", "_rev": 1}, id="numeric _rev"),
        pytest.param(
            {"_id": "a", "_rev": "2-z", "_revisions": {"start": 2, "ids": ["y", "x"]}},
            id="_rev contradicts _revisions",
        ),
        pytest.param(
            {"_id": "a", "_rev": "3-y", "_revisions": {"start": 2, "ids": ["y", "x"]}},
            id="_rev generation contradicts _revisions",
        ),
        pytest.param({"_id": "a", "_revisions": {"start": 1}}, id="malformed _revisions"),
        pytest.param({"_id": "_foo"}, id="reserved id"),
        pytest.param({"v": 1}, id="no id at all"),
        pytest.param({"_id": "a", "_attachments": []}, id="_attachments not an object"),
        pytest.param(["_id", "a"], id="not an object"),
        pytest.param("doc", id="a string"),
        pytest.param(None, id="null"),
    ],
)
def test_a_malformed_document_is_a_bad_request(doc):
    with pytest.raises(BadRequest):
        parse_doc(doc)


# --- attachments -----------------------------------------------------------------------------


def test_the_digest_is_couchdbs_md5_in_base64():
    expected = "md5-" + base64.b64encode(hashlib.md5(b"hello").digest()).decode()
    assert md5_digest(b"hello") == expected == HELLO_DIGEST


def test_an_inline_attachment_is_decoded_and_digested():
    (att,) = parse_attachments({"n.txt": {"content_type": "text/plain", "data": HELLO}})
    assert att == Attachment(
        "n.txt", "text/plain", digest=HELLO_DIGEST, length=5, revpos=None, data=b"hello"
    )


def test_an_inline_attachment_without_content_type_is_octet_stream():
    (att,) = parse_attachments({"blob": {"data": HELLO}})
    assert att.content_type == "application/octet-stream"


def test_an_empty_inline_attachment_is_allowed():
    (att,) = parse_attachments({"empty": {"data": ""}})
    assert (att.data, att.length, att.digest) == (b"", 0, md5_digest(b""))


def test_an_inline_attachment_with_its_correct_digest_is_accepted():
    (att,) = parse_attachments({"n.txt": {"data": HELLO, "digest": HELLO_DIGEST}})
    assert att.digest == HELLO_DIGEST


def test_an_inline_attachment_whose_digest_does_not_match_is_a_bad_request():
    wrong = md5_digest(b"goodbye")
    with pytest.raises(BadRequest, match="digest"):
        parse_attachments({"n.txt": {"data": HELLO, "digest": wrong}})


def test_a_stub_keeps_its_metadata_and_has_no_data():
    (att,) = parse_attachments(
        {"p.jpg": {"stub": True, "digest": HELLO_DIGEST, "length": 5, "revpos": 2}}
    )
    assert att.stub and not att.follows
    assert (att.data, att.digest, att.length, att.revpos) == (None, HELLO_DIGEST, 5, 2)
    assert att.meta() == {
        "content_type": "application/octet-stream",
        "digest": HELLO_DIGEST,
        "length": 5,
        "revpos": 2,
    }


def test_a_follows_attachment_waits_for_its_multipart_body():
    (att,) = parse_attachments(
        {"p.jpg": {"follows": True, "content_type": "image/jpeg", "length": 10}}
    )
    assert att.follows and not att.stub
    assert (att.data, att.length, att.content_type) == (None, 10, "image/jpeg")


def test_attachments_keep_their_order_and_the_document_carries_them():
    edit = parse_doc({"_id": "a", "_attachments": {"b": {"data": HELLO}, "a": {"stub": True}}})
    assert [att.name for att in edit.attachments] == ["b", "a"]
    assert "_attachments" not in edit.body


def test_no_attachments_is_an_empty_tuple():
    assert parse_attachments(None) == ()
    assert parse_attachments({}) == ()


@pytest.mark.parametrize(
    "attachments",
    [
        pytest.param({"n": {"data": "not base64!"}}, id="invalid base64"),
        pytest.param({"n": {"data": "aGVsbG8"}}, id="missing padding"),
        pytest.param({"n": {"data": "aGVs\nbG8="}}, id="embedded newline"),
        pytest.param({"n": {"data": 5}}, id="data not a string"),
        pytest.param({"n": {}}, id="neither data nor stub nor follows"),
        pytest.param({"n": {"stub": "true"}}, id="stub not a boolean"),
        pytest.param({"n": "aGVsbG8="}, id="entry not an object"),
        pytest.param({"n": {"data": HELLO, "content_type": 5}}, id="content_type not a string"),
        pytest.param({"n": {"data": HELLO, "digest": 5}}, id="digest not a string"),
        pytest.param({"n": {"data": HELLO, "revpos": "1"}}, id="revpos not an integer"),
        pytest.param({"n": {"data": HELLO, "revpos": True}}, id="revpos a boolean"),
        pytest.param({"n": {"stub": True, "length": -1}}, id="negative length"),
        pytest.param({"n": {"stub": True, "length": "5"}}, id="length not an integer"),
        pytest.param({"n": {"follows": True, "length": False}}, id="length a boolean"),
        pytest.param({"": {"data": HELLO}}, id="empty name"),
        pytest.param({"_n": {"data": HELLO}}, id="name starting with underscore"),
        pytest.param({"a\x00b": {"data": HELLO}}, id="NUL in name"),
        pytest.param({"\udcff": {"data": HELLO}}, id="lone surrogate in name"),
        pytest.param(["n"], id="not an object"),
    ],
)
def test_a_malformed_attachment_is_a_bad_request(attachments):
    with pytest.raises(BadRequest):
        parse_attachments(attachments)


def test_revisions_without_rev_make_the_head_of_the_path_the_revision():
    edit = parse_doc({"_id": "a", "_revisions": {"start": 2, "ids": ["b", "a"]}})
    assert edit.rev == "2-b" and edit.path == ("2-b", "1-a")
