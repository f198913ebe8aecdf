"""stream_tickets: one-use credentials for opening a WebSocket or SSE stream; and an index
finding a refund's journal line by its refund_id (GET /v1/refunds/{id})

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_tickets",
        sa.Column("ticket_hash", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("credential_expires", sa.BigInteger),
    )
    op.create_index("ix_stream_tickets_expires_at", "stream_tickets", ["expires_at"])
    # partial: only refund lines carry a refund_id, so other journal writes pay nothing for it.
    # storage/journal_queries.REFUND_ID_EXPRESSION queries with the same expression
    if op.get_bind().dialect.name == "postgresql":
        expression = "(metadata ->> 'refund_id')"
    else:
        expression = "JSON_EXTRACT(metadata, '$.refund_id')"
    op.execute(f"CREATE INDEX ix_entries_refund_id ON entries ({expression}) WHERE type = 'refund'")


def downgrade() -> None:
    op.drop_index("ix_entries_refund_id", table_name="entries")
    op.drop_index("ix_stream_tickets_expires_at", table_name="stream_tickets")
    op.drop_table("stream_tickets")
