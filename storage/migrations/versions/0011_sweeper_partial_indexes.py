"""the sweeper's due holds and jobs through partial indexes of the open and processing ones

The (status, expires_at) indexes kept an entry for every hold and job ever made, and since a
capture, a release or a job's completion changes `status`, each of them wrote a new entry
under the new status too (one more index write per capture, and a dead entry for vacuum). Only
open holds and processing jobs can fall due: these indexes hold only those, so a hold leaves
its index when it closes and the index stays the size of what is open. Building each reads its
table once, and writes to that table wait meanwhile (0.1 s for a million narrow rows here: the
read grows with the table on disk).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Literal copies of storage/tables.py's predicates: a migration keeps what it wrote.
OPEN_HOLD = sa.text("status = 'open'")
PROCESSING_JOB = sa.text("status = 'processing'")

# (table, the partial index, the index it replaces, the partial index's predicate)
INDEXES = (
    ("holds", "ix_holds_open_expires", "ix_holds_status_expires", OPEN_HOLD),
    ("jobs", "ix_jobs_processing_expires", "ix_jobs_status_expires", PROCESSING_JOB),
)


def upgrade() -> None:
    for table, index, replaced, predicate in INDEXES:
        op.create_index(
            index, table, ["expires_at"], postgresql_where=predicate, sqlite_where=predicate
        )
        op.drop_index(replaced, table_name=table)


def downgrade() -> None:
    for table, index, replaced, _ in reversed(INDEXES):
        op.create_index(replaced, table, ["status", "expires_at"])
        op.drop_index(index, table_name=table)
