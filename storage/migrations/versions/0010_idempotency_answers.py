"""a keyed request's answer in a row of its own, inserted, not an update of its claim

A keyed request's key is claimed (a row of about 200 bytes) before its operation runs, and its
answer written before the same commit. Written as an update of the claim, the answer (about
850 bytes for a hold's) found no room on the claim's page, which a batch's claims fill whole:
91 % of those updates moved the row (51,510 keyed holds: 4,860 in place), writing a new entry
into both of the claims' indexes and leaving a dead version for vacuum, per request. An answer
inserted into a table of its own costs one index entry and leaves nothing dead.

Keys claimed before this revision keep their answers in their claim's row; they are read from
there (storage/writes/idempotency.py) until retention removes them (a key with its answer).
Downgrading moves every answer back into its claim.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_answers",
        sa.Column("scope", sa.String(160), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("response_status", sa.Integer, nullable=False),
        sa.Column("response_body", sa.Text, nullable=False),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # answers committed while the copy runs would be dropped with the table: none may be
        # written until it is gone (the lock waits for batches in flight to commit)
        op.execute("LOCK TABLE idempotency_answers IN SHARE MODE")
    op.execute(
        "UPDATE idempotency_keys SET status = 'done', "
        "response_status = (SELECT a.response_status FROM idempotency_answers a "
        "WHERE a.scope = idempotency_keys.scope AND a.key = idempotency_keys.key), "
        "response_body = (SELECT a.response_body FROM idempotency_answers a "
        "WHERE a.scope = idempotency_keys.scope AND a.key = idempotency_keys.key) "
        "WHERE EXISTS (SELECT 1 FROM idempotency_answers a "
        "WHERE a.scope = idempotency_keys.scope AND a.key = idempotency_keys.key)"
    )
    op.drop_table("idempotency_answers")
