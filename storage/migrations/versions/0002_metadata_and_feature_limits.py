"""metadata on jobs, the priced operation of a hold, feature usage per account

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("feature_usage", sa.JSON(), nullable=True))
    op.add_column("holds", sa.Column("price", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("metadata", sa.JSON(), nullable=True))
    # a hold's metadata was, until now, always its priced operation: it moves to `price`, and
    # `metadata` becomes the caller's own
    op.execute("UPDATE holds SET price = metadata, metadata = NULL WHERE metadata IS NOT NULL")


def downgrade() -> None:
    op.execute("UPDATE holds SET metadata = price WHERE price IS NOT NULL")
    op.drop_column("jobs", "metadata")
    op.drop_column("holds", "price")
    op.drop_column("accounts", "feature_usage")
