"""the sweeper's due-grants index no longer names `reserved`, so a hold's grant update is HOT

0006 indexed grants WHERE remaining > reserved. PostgreSQL updates a row in place (a HOT
update: no new index entries, the old version pruned within its page) only when no indexed
column changes, and a partial index's predicate counts: every hold and release changes
`reserved`, so every one of them wrote a new entry into each of the grants' indexes and left a
dead version for vacuum (1,000 accounts, 17,000 holds: 0 of 17,000 updates HOT, 17,000 dead
versions; with this index 99 % HOT, 300 dead). The index now holds the grants with any credits
left; the sweeper's query keeps `remaining > reserved` as a filter on it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

LEFT = sa.text("remaining > 0")
FREE = sa.text("remaining > reserved")


def upgrade() -> None:
    op.drop_index("ix_grants_due", table_name="grants")
    op.create_index(
        "ix_grants_due", "grants", ["expires_at"], postgresql_where=LEFT, sqlite_where=LEFT
    )


def downgrade() -> None:
    op.drop_index("ix_grants_due", table_name="grants")
    op.create_index(
        "ix_grants_due", "grants", ["expires_at"], postgresql_where=FREE, sqlite_where=FREE
    )
