"""Idempotency keys keep the answer's replayable headers (``ETag``, ``Location``, ...).

A replayed ``POST /api/v1/templates`` used to come back without the ``Location`` and
``ETag`` of the first answer, so a client that retried after a lost response could not
follow the new resource or send ``If-Match``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 14:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("headers", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.drop_column("headers")
