"""The field REST API: the inspection index, photos and idempotency keys.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DocId = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


INDEXES = (("owner", "owner_id"), ("status", "status"), ("template", "template_id"))


def upgrade() -> None:
    op.create_table(
        "inspection_index",
        sa.Column("db_id", sa.Integer(), nullable=False),
        sa.Column("doc_id", DocId, nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("template_id", sa.String(length=200), nullable=True),
        sa.Column("inspector", sa.String(length=128), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["db_id", "doc_id"],
            ["documents.db_id", "documents.doc_id"],
            name=op.f("fk_inspection_index_db_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("db_id", "doc_id", name=op.f("pk_inspection_index")),
    )
    for name, column in INDEXES:
        op.create_index(
            op.f(f"ix_inspection_index_{name}"),
            "inspection_index",
            ["db_id", column, "deleted", "doc_id"],
            unique=False,
        )
    op.create_table(
        "photos",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("inspection_id", DocId, nullable=False),
        sa.Column("public_id", sa.String(length=255), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("secure_url", sa.Text(), nullable=False),
        sa.Column("uploader_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["uploader_id"],
            ["users.id"],
            name=op.f("fk_photos_uploader_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_photos")),
        sa.UniqueConstraint("public_id", name=op.f("uq_photos_public_id")),
    )
    op.create_index(op.f("ix_photos_inspection_id"), "photos", ["inspection_id"], unique=False)
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_idempotency_keys_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_keys_expires_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index(op.f("ix_photos_inspection_id"), table_name="photos")
    op.drop_table("photos")
    for name, _ in INDEXES:
        op.drop_index(op.f(f"ix_inspection_index_{name}"), table_name="inspection_index")
    op.drop_table("inspection_index")
