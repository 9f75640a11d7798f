"""The inspection status workflow, every (from, to, role) combination."""

from __future__ import annotations

import itertools

import pytest

from replication import Forbidden
from replication.workflow import STATUSES, check_inspection_edit

ALLOWED_FOR_INSPECTORS = {
    (None, "draft"),
    (None, "submitted"),
    ("draft", "draft"),
    ("draft", "submitted"),
    ("submitted", "submitted"),
    ("rejected", "rejected"),
    ("rejected", "draft"),
}


def _body(status: str | None) -> dict[str, str] | None:
    return None if status is None else {"status": status}


@pytest.mark.parametrize(
    "before,after", list(itertools.product((None, *STATUSES), STATUSES)), ids=str
)
def test_inspectors_follow_the_workflow_and_staff_may_do_anything(
    before: str | None, after: str
) -> None:
    for role in ("admin", "manager"):
        check_inspection_edit(_body(before), _body(after), role)
    if (before, after) in ALLOWED_FOR_INSPECTORS:
        check_inspection_edit(_body(before), _body(after), "inspector")
    else:
        with pytest.raises(Forbidden) as refused:
            check_inspection_edit(_body(before), _body(after), "inspector")
        assert after in refused.value.reason or "approved" in refused.value.reason


def test_a_missing_status_is_draft_and_an_unknown_one_is_refused_for_everyone() -> None:
    check_inspection_edit(None, {"title": "x"}, "inspector")
    check_inspection_edit({"title": "x"}, {"status": "submitted"}, "inspector")
    for role in ("inspector", "manager"):
        with pytest.raises(Forbidden):
            check_inspection_edit(None, {"status": "archived"}, role)
        with pytest.raises(Forbidden):
            check_inspection_edit({"status": "draft"}, {"status": 3}, role)


def test_only_staff_delete_an_approved_inspection() -> None:
    check_inspection_edit({"status": "draft"}, None, "inspector")
    check_inspection_edit({"status": "approved"}, None, "manager")
    with pytest.raises(Forbidden):
        check_inspection_edit({"status": "approved"}, None, "inspector")
