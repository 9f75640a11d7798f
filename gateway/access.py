"""Who may do what: roles, database access modes, and the owner scope of queries.

role \\ mode   owned                      shared        readonly
admin         everything                 everything    everything
manager       every document             every doc     reads and writes
inspector     only documents they own    every doc     reads only
"""

from __future__ import annotations

from replication import Forbidden
from schema.databases import Database
from schema.users import User

STAFF = ("admin", "manager")


def owner_scope(user: User, db: Database) -> int | None:
    """Return the owner every query must be restricted to, or None for all documents."""
    if db.access_mode == "owned" and user.role not in STAFF:
        return user.id
    return None


def require_write(user: User, db: Database) -> None:
    """Refuse writes to a read-only database from non-staff."""
    if db.access_mode == "readonly" and user.role not in STAFF:
        raise Forbidden("This database is read-only for your role.")


def require_staff(user: User, action: str) -> None:
    """Refuse anyone but managers and admins."""
    if user.role not in STAFF:
        raise Forbidden(f"Only managers and admins may {action}.")


def require_admin(user: User) -> None:
    """Refuse non-admins."""
    if user.role != "admin":
        raise Forbidden("You are not a server admin.")
