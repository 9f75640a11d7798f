"""PostgreSQL: the three foreign keys of the write path checked once per statement.

A foreign key is checked row by row: every document and revision a batch inserts runs one
lookup (and a row lock) of its own.  On a 100-document ``_bulk_docs`` those 300 lookups were
about 40% of PostgreSQL's time for the whole write statement.  This migration replaces the
three references every batch write checks with statement-level triggers that enforce the same
rules with one set-based query per statement:

===========================================  ===============================================
reference (was a foreign key)                enforced by
===========================================  ===============================================
documents.db_id -> databases.id, CASCADE     insert: every db_id exists, locked FOR KEY SHARE
                                             (as a foreign key locks it); delete of databases
                                             deletes their documents
documents.owner_id -> users.id, SET NULL     insert: every owner exists, locked FOR KEY
                                             SHARE; delete of users sets owner_id to NULL
revisions (db_id, doc_id) -> documents,      insert: every revision's document exists; delete
CASCADE                                      of documents deletes their revisions
===========================================  ===============================================

A violation raises SQLSTATE 23503 (foreign_key_violation) like the constraint did, and the
whole statement is undone.  ``TRUNCATE`` of a referenced table cascades the same way (it
fires no DELETE trigger).  Deleting databases or users is refused (40001) outside READ
COMMITTED, where a cascade could miss rows committed after the transaction began; the
gateway's connections always run at READ COMMITTED.  ``documents.db_id``/``owner_id`` and a
revision's key are never updated, so only inserts are checked.  The revision check takes no
lock on the document: every writer writes a revision in the same transaction as the
document's own row, which it holds locked until commit, so the document cannot be deleted
under it.

SQLite keeps its foreign keys (checked in-process, cheaply): ``schema.tables`` declares them
for SQLite only.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FOREIGN_KEYS = (
    # name, table, columns, referred table, referred columns, on delete
    ("fk_documents_db_id_databases", "documents", ["db_id"], "databases", ["id"], "CASCADE"),
    ("fk_documents_owner_id_users", "documents", ["owner_id"], "users", ["id"], "SET NULL"),
    (
        "fk_revisions_db_id_documents",
        "revisions",
        ["db_id", "doc_id"],
        "documents",
        ["db_id", "doc_id"],
        "CASCADE",
    ),
)

_VIOLATION = "USING ERRCODE = 'foreign_key_violation'"

# A cascade reads with the deleting statement's snapshot.  At READ COMMITTED that snapshot is
# taken after the lock wait, so it sees every document committed meanwhile; under REPEATABLE
# READ or SERIALIZABLE it could miss one inserted after the transaction began and leave it
# orphaned (a foreign key's cascade would fail with 40001 there).  Such deletes are refused
# with 40001; the gateway's own connections always run at READ COMMITTED.
_READ_COMMITTED = """
            IF current_setting('transaction_isolation') <> 'read committed' THEN
                RAISE EXCEPTION 'delete from "{table}" must run at READ COMMITTED: its cascade '
                    'could miss rows committed after this transaction began'
                    USING ERRCODE = 'serialization_failure';
            END IF;"""

_FUNCTIONS = {
    "gateway_documents_inserted": f"""
        DECLARE
            wanted integer;
            found integer;
        BEGIN
            SELECT count(DISTINCT db_id) INTO wanted FROM new_rows;
            SELECT count(*) INTO found FROM (
                SELECT 1 FROM databases
                WHERE id IN (SELECT db_id FROM new_rows) FOR KEY SHARE
            ) AS locked;
            IF found < wanted THEN
                RAISE EXCEPTION 'insert on table "documents" violates the reference '
                    'documents.db_id -> databases.id' {_VIOLATION};
            END IF;
            SELECT count(DISTINCT owner_id) INTO wanted FROM new_rows;
            IF wanted > 0 THEN
                SELECT count(*) INTO found FROM (
                    SELECT 1 FROM users
                    WHERE id IN (SELECT owner_id FROM new_rows) FOR KEY SHARE
                ) AS locked;
                IF found < wanted THEN
                    RAISE EXCEPTION 'insert on table "documents" violates the reference '
                        'documents.owner_id -> users.id' {_VIOLATION};
                END IF;
            END IF;
            RETURN NULL;
        END
    """,
    "gateway_revisions_inserted": f"""
        BEGIN
            IF EXISTS (
                SELECT 1 FROM new_rows AS n
                WHERE NOT EXISTS (
                    SELECT 1 FROM documents AS d
                    WHERE d.db_id = n.db_id AND d.doc_id = n.doc_id
                )
            ) THEN
                RAISE EXCEPTION 'insert on table "revisions" violates the reference '
                    'revisions (db_id, doc_id) -> documents' {_VIOLATION};
            END IF;
            RETURN NULL;
        END
    """,
    "gateway_databases_deleted": f"""
        BEGIN
            {_READ_COMMITTED.format(table="databases")}
            DELETE FROM documents AS d USING old_rows AS o WHERE d.db_id = o.id;
            RETURN NULL;
        END
    """,
    "gateway_documents_deleted": """
        BEGIN
            DELETE FROM revisions AS r USING old_rows AS o
            WHERE r.db_id = o.db_id AND r.doc_id = o.doc_id;
            RETURN NULL;
        END
    """,
    "gateway_users_deleted": f"""
        BEGIN
            {_READ_COMMITTED.format(table="users")}
            UPDATE documents AS d SET owner_id = NULL FROM old_rows AS o
            WHERE d.owner_id = o.id;
            RETURN NULL;
        END
    """,
    # TRUNCATE fires no DELETE trigger: it cascades the same way here.  A table truncated by
    # the same statement is empty by now and is left alone (truncating it again would fail).
    "gateway_databases_truncated": """
        BEGIN
            IF EXISTS (SELECT 1 FROM documents) THEN
                TRUNCATE documents CASCADE;
            END IF;
            RETURN NULL;
        END
    """,
    "gateway_documents_truncated": """
        BEGIN
            IF EXISTS (SELECT 1 FROM revisions) THEN
                TRUNCATE revisions CASCADE;
            END IF;
            RETURN NULL;
        END
    """,
    "gateway_users_truncated": """
        BEGIN
            UPDATE documents SET owner_id = NULL WHERE owner_id IS NOT NULL;
            RETURN NULL;
        END
    """,
}

_TRIGGERS = (
    # trigger, table, event, transition table, function
    ("gateway_documents_inserted", "documents", "INSERT", "NEW", "gateway_documents_inserted"),
    ("gateway_revisions_inserted", "revisions", "INSERT", "NEW", "gateway_revisions_inserted"),
    ("gateway_databases_deleted", "databases", "DELETE", "OLD", "gateway_databases_deleted"),
    ("gateway_documents_deleted", "documents", "DELETE", "OLD", "gateway_documents_deleted"),
    ("gateway_users_deleted", "users", "DELETE", "OLD", "gateway_users_deleted"),
    ("gateway_databases_truncated", "databases", "TRUNCATE", None, "gateway_databases_truncated"),
    ("gateway_documents_truncated", "documents", "TRUNCATE", None, "gateway_documents_truncated"),
    ("gateway_users_truncated", "users", "TRUNCATE", None, "gateway_users_truncated"),
)


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for name, table, *_ in _FOREIGN_KEYS:
        op.drop_constraint(name, table, type_="foreignkey")
    for function, body in _FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$")
    for trigger, table, event, transition, function in _TRIGGERS:
        rows = "new_rows" if transition == "NEW" else "old_rows"
        referencing = f"REFERENCING {transition} TABLE AS {rows} " if transition else ""
        op.execute(
            f"CREATE TRIGGER {trigger} AFTER {event} ON {table} {referencing}"
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for trigger, table, *_ in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    for function in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    for name, table, columns, referred, referred_columns, ondelete in _FOREIGN_KEYS:
        op.create_foreign_key(name, table, referred, columns, referred_columns, ondelete=ondelete)
