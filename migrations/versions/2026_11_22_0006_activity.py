"""Activity: who wrote each document's latest change, and the server-wide change order.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("documents", sa.Column("updated_by", sa.Integer(), nullable=True))
    op.add_column(
        "databases",
        sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_index(op.f("ix_databases_change_seq"), "databases", ["change_seq"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE gateway_change_seq")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE gateway_change_seq")
    op.drop_index(op.f("ix_databases_change_seq"), table_name="databases")
    with op.batch_alter_table("databases") as batch:
        batch.drop_column("change_seq")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("updated_by")
