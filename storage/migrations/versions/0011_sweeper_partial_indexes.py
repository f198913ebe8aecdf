"""the sweeper's due holds and jobs through partial indexes of the open and processing ones

The (status, expires_at) indexes kept an entry for every hold and job ever made, and since a
capture, a release or a job's completion changes `status`, each of them wrote a new entry
under the new status too (one more index write per capture, and a dead entry for vacuum). Only
open holds and processing jobs can fall due: these indexes hold only those, so a hold leaves
its index when it closes and the index stays the size of what is open.

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


def upgrade() -> None:
    op.create_index(
        "ix_holds_open_expires",
        "holds",
        ["expires_at"],
        postgresql_where=OPEN_HOLD,
        sqlite_where=OPEN_HOLD,
    )
    op.drop_index("ix_holds_status_expires", table_name="holds")
    op.create_index(
        "ix_jobs_processing_expires",
        "jobs",
        ["expires_at"],
        postgresql_where=PROCESSING_JOB,
        sqlite_where=PROCESSING_JOB,
    )
    op.drop_index("ix_jobs_status_expires", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_status_expires", "jobs", ["status", "expires_at"])
    op.drop_index("ix_jobs_processing_expires", table_name="jobs")
    op.create_index("ix_holds_status_expires", "holds", ["status", "expires_at"])
    op.drop_index("ix_holds_open_expires", table_name="holds")
