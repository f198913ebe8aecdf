"""an index on entries.op_id: a refund finds the charge or capture it gives back

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_entries_op_id", "entries", ["op_id"])


def downgrade() -> None:
    op.drop_index("ix_entries_op_id", table_name="entries")
