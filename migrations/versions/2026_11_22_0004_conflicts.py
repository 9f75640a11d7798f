"""ConflictRecords, and the purge sequence of each database.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DocId = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.add_column(
        "databases",
        sa.Column("purge_seq", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("db_id", sa.Integer(), nullable=False),
        sa.Column("doc_id", DocId, nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("leaf_rev", sa.String(length=200), nullable=True),
        sa.Column("mine_rev", sa.String(length=200), nullable=True),
        sa.Column("mine_body", sa.LargeBinary(), nullable=True),
        sa.Column("theirs_rev", sa.String(length=200), nullable=False),
        sa.Column("theirs_body", sa.LargeBinary(), nullable=True),
        sa.Column("ancestor_rev", sa.String(length=200), nullable=True),
        sa.Column("ancestor_body", sa.LargeBinary(), nullable=True),
        sa.Column("pushed_by", sa.Integer(), nullable=True),
        sa.Column("device", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=True),
        sa.Column("resolved_by", sa.Integer(), nullable=True),
        sa.Column("resolved_rev", sa.String(length=200), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["db_id", "doc_id"],
            ["documents.db_id", "documents.doc_id"],
            name=op.f("fk_conflicts_db_id_documents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["pushed_by"],
            ["users.id"],
            name=op.f("fk_conflicts_pushed_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by"],
            ["users.id"],
            name=op.f("fk_conflicts_resolved_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conflicts")),
    )
    op.create_index(
        "uq_conflicts_open_leaf",
        "conflicts",
        ["db_id", "doc_id", "leaf_rev"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )
    op.create_index(
        op.f("ix_conflicts_db_id"), "conflicts", ["db_id", "doc_id", "status"], unique=False
    )
    op.create_index(
        op.f("ix_conflicts_status"), "conflicts", ["status", "db_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("uq_conflicts_open_leaf", table_name="conflicts")
    op.drop_index(op.f("ix_conflicts_status"), table_name="conflicts")
    op.drop_index(op.f("ix_conflicts_db_id"), table_name="conflicts")
    op.drop_table("conflicts")
    with op.batch_alter_table("databases") as batch:
        batch.drop_column("purge_seq")
