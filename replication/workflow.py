"""The inspection status workflow, decided in one place for every route that writes one.

    draft ──> submitted ──> approved          (final)
      ^           '──────> rejected ──> draft

Inspectors move their inspections from ``draft`` to ``submitted`` (and a ``rejected`` one
back to ``draft``); only managers and admins approve or reject, and only they may change
or delete an ``approved`` inspection (they may also make any other move, to correct one).

The REST API, ``_bulk_docs`` (both ``new_edits`` modes) and document ``PUT``/``DELETE``
all call ``check_inspection_edit``; a refusal is a ``Forbidden`` (a per-document
``forbidden`` row in ``_bulk_docs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from replication.errors import Forbidden

STATUSES = ("draft", "submitted", "approved", "rejected")
STAFF_ROLES = ("admin", "manager")
CREATE_STATUSES = ("draft", "submitted")
# (from, to) -> who may: "anyone" with write access to the document, or "staff"
TRANSITIONS: dict[tuple[str, str], str] = {
    ("draft", "submitted"): "anyone",
    ("submitted", "approved"): "staff",
    ("submitted", "rejected"): "staff",
    ("rejected", "draft"): "anyone",
}


def status_of(body: Mapping[str, Any] | None) -> str | None:
    """The ``status`` field of a body (None when there is no body)."""
    if body is None:
        return None
    status = body.get("status", "draft")
    return status if isinstance(status, str) else repr(status)


def check_inspection_edit(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, role: str
) -> None:
    """Refuse an edit from ``old`` (None: a create) to ``new`` (None: a delete) by ``role``."""
    staff = role in STAFF_ROLES
    before = status_of(old)
    if new is None:  # a delete
        if before == "approved" and not staff:
            raise Forbidden("Only managers and admins may delete an approved inspection.")
        return
    after = status_of(new)
    if after not in STATUSES:
        raise Forbidden(f"status must be one of {', '.join(STATUSES)} (got {after}).")
    if before is None:
        if after not in CREATE_STATUSES and not staff:
            raise Forbidden(f"A new inspection starts as draft or submitted, not {after}.")
        return
    if before == after:
        if before == "approved" and not staff:
            raise Forbidden("An approved inspection is final; only managers may change it.")
        return
    if staff:  # managers and admins approve, reject, reopen and correct
        return
    who = TRANSITIONS.get((before, after))
    if who is None:
        raise Forbidden(f"An inspection cannot go from {before} to {after}.")
    if who == "staff":
        raise Forbidden(f"Only managers and admins may move an inspection to {after}.")
