"""A remembered caller, checked by the very statement that writes for it (PostgreSQL).

Every request reads its caller's user row, so that disabling a user, changing a password or
a role takes effect at once.  For the two writes of every replication batch (``_bulk_docs``
and the checkpoint ``PUT _local``) that read is a database round trip of its own.  When the
instance verified the same credentials for the same database moments ago
(``gateway.callers``), such a write is planned with the user and database rows read then,
and its statement writes only if, in the statement's own snapshot, those rows still say the
same: the same user (id, name, password hash, role), not disabled, and the same database
(id, name, access mode, conflict policy, revision limit).  Otherwise the statement writes
nothing and the request is served again after a full authentication (``RecheckCaller``),
which answers 401, 403 or 404 as the rows now say.

So the check and the write are one statement: a write that starts after the user was
disabled (or the password, the role or the database changed) is refused, as with the lookup.
A write that started before, and is still waiting for the database row lock when the change
commits, may complete (the statement reads the user row in its own snapshot; the lookup,
a statement of its own before the write, had the same window and a wider one); the
database conditions are checked again on the locked row itself, so a write never lands in a
database whose settings changed meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, String, bindparam, text
from sqlalchemy.sql.elements import TextClause

from schema.databases import Database
from schema.users import User

# The remembered user row still holds (every column the request was planned with).
USER_SQL = """EXISTS (
    SELECT 1 FROM users AS remembered_user
    WHERE remembered_user.id = :c_user AND remembered_user.name = :c_name
      AND remembered_user.role = :c_role AND remembered_user.password_hash = :c_hash
      AND NOT remembered_user.disabled
)"""
# The remembered database row still holds: conditions on the columns of a ``databases`` row.
# A write that updates that row (``schema.write_pg``) puts them on the row it updates, so
# PostgreSQL checks them again on the row's latest version after waiting for its lock.
DATABASE_SQL = """name = :c_db_name AND access_mode = :c_access_mode
      AND conflict_policy = :c_conflict_policy AND revs_limit = :c_revs_limit"""
# Both, for a statement that does not update the database row (``schema.local_docs``).
CALLER_SQL = f"""{USER_SQL} AND EXISTS (
    SELECT 1 FROM databases AS remembered_db WHERE remembered_db.id = :c_db
      AND {DATABASE_SQL}
)"""

USER_PARAMS = (
    bindparam("c_user", type_=Integer),
    bindparam("c_name", type_=String),
    bindparam("c_role", type_=String),
    bindparam("c_hash", type_=String),
)
DATABASE_PARAMS = (
    bindparam("c_db_name", type_=String),
    bindparam("c_access_mode", type_=String),
    bindparam("c_conflict_policy", type_=String),
    bindparam("c_revs_limit", type_=Integer),
)
CALLER_PARAMS = (*USER_PARAMS, bindparam("c_db", type_=Integer), *DATABASE_PARAMS)


def caller_clause() -> TextClause:
    """``CALLER_SQL`` as a condition for SQLAlchemy Core statements."""
    return text(CALLER_SQL).bindparams(*CALLER_PARAMS)


class RecheckCaller(Exception):
    """The write could not confirm the remembered caller (its rows changed, or the request
    took a path whose statements do not check them): nothing was written; serve the request
    again after a full authentication."""


@dataclass(frozen=True, slots=True)
class CallerCheck:
    """The user and database rows a request was planned with, to be confirmed by its write."""

    user: User
    db: Database

    def params(self) -> dict[str, Any]:
        """The statement parameters of ``CALLER_SQL``."""
        return {
            "c_user": self.user.id,
            "c_name": self.user.name,
            "c_role": self.user.role,
            "c_hash": self.user.password_hash,
            "c_db": self.db.id,
            "c_db_name": self.db.name,
            "c_access_mode": self.db.access_mode,
            "c_conflict_policy": self.db.conflict_policy,
            "c_revs_limit": self.db.revs_limit,
        }
