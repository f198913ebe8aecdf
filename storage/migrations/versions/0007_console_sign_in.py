"""console_sign_ins and console_sessions: the operator console's one-time sign-in links and its
sessions, each kept only as a SHA-256

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("console_sign_ins", "console_sessions"):
        op.create_table(
            table,
            sa.Column("secret_hash", sa.String(64), primary_key=True),
            sa.Column("operator", sa.String(64), nullable=False),
            sa.Column("expires_at", sa.BigInteger, nullable=False),
        )
        op.create_index(f"ix_{table}_expires_at", table, ["expires_at"])


def downgrade() -> None:
    for table in ("console_sessions", "console_sign_ins"):
        op.drop_index(f"ix_{table}_expires_at", table_name=table)
        op.drop_table(table)
