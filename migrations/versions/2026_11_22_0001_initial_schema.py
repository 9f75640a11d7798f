"""Initial schema: users, databases, documents, revisions, attachments, local docs.

Revision ID: bce31f63f307
Revises:
Create Date: 2026-11-22 01:35:36.307826
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "databases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=238), nullable=False),
        sa.Column("access_mode", sa.String(length=16), server_default="owned", nullable=False),
        sa.Column("conflict_policy", sa.String(length=16), server_default="manual", nullable=False),
        sa.Column("revs_limit", sa.Integer(), server_default="1000", nullable=False),
        sa.Column("update_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("doc_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("doc_del_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("instance_start_time", sa.String(length=32), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_databases")),
        sa.UniqueConstraint("name", name=op.f("uq_databases_name")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "attachments",
        sa.Column("db_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["db_id"],
            ["databases.id"],
            name=op.f("fk_attachments_db_id_databases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("db_id", "digest", name=op.f("pk_attachments")),
    )
    op.create_table(
        "documents",
        sa.Column("db_id", sa.Integer(), nullable=False),
        sa.Column(
            "doc_id", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), nullable=False
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("winning_rev", sa.Text(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("leaves", sa.LargeBinary(), nullable=False),
        sa.Column("rev_tree", sa.LargeBinary(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["db_id"],
            ["databases.id"],
            name=op.f("fk_documents_db_id_databases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_documents_owner_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("db_id", "doc_id", name=op.f("pk_documents")),
        sa.UniqueConstraint("db_id", "seq", name="uq_documents_db_id_seq"),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_documents_db_id_owner_id_seq", ["db_id", "owner_id", "seq"], unique=False
        )

    op.create_table(
        "local_docs",
        sa.Column("db_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column(
            "doc_id", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), nullable=False
        ),
        sa.Column("rev", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("checkpoint_seq", sa.BigInteger(), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["db_id"],
            ["databases.id"],
            name=op.f("fk_local_docs_db_id_databases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_local_docs_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("db_id", "user_id", "doc_id", name=op.f("pk_local_docs")),
    )
    op.create_table(
        "revisions",
        sa.Column("db_id", sa.Integer(), nullable=False),
        sa.Column(
            "doc_id", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), nullable=False
        ),
        sa.Column("rev", sa.Text(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("attachments", sa.LargeBinary(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["db_id", "doc_id"],
            ["documents.db_id", "documents.doc_id"],
            name=op.f("fk_revisions_db_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("db_id", "doc_id", "rev", name=op.f("pk_revisions")),
    )


def downgrade() -> None:
    op.drop_table("revisions")
    op.drop_table("local_docs")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_db_id_owner_id_seq")

    op.drop_table("documents")
    op.drop_table("attachments")
    op.drop_table("users")
    op.drop_table("databases")
