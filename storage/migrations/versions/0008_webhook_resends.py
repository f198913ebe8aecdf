"""outbound webhooks: a cursor's generation and an endpoint's rescans, for resends

A resend moves an endpoint's cursor for an account back. `webhook_cursors.generation` is
bumped with it, so a delivery pass that read the cursor before does not move it forward again
when it records its progress; `webhook_endpoints.rescans` is bumped by a resend or an enable,
so every instance's next pass looks at every account (not only those with new events).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_cursors") as table:
        table.add_column(sa.Column("generation", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("webhook_endpoints") as table:
        table.add_column(sa.Column("rescans", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as table:
        table.drop_column("rescans")
    with op.batch_alter_table("webhook_cursors") as table:
        table.drop_column("generation")
