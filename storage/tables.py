"""SQLAlchemy Core tables. Migrations (storage/migrations) are generated from and checked against these."""

from __future__ import annotations

import sqlalchemy as sa

from core.jobs import PROCESSING
from core.model import Hold
from storage.column_types import BigId, UtcDateTime

# The predicates of the sweeper's partial indexes, written out as literals: a query uses such
# an index only when its own WHERE says the same (a bound parameter in their place would not).
OPEN_HOLD = f"status = '{Hold.OPEN}'"
PROCESSING_JOB = f"status = '{PROCESSING}'"

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("balance", sa.BigInteger, nullable=False),
    sa.Column("held", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("plan", sa.String(32)),
    sa.Column("paid", sa.Boolean, nullable=False, default=False),
    sa.Column("trial_expires_at", UtcDateTime),
    sa.Column("trial_day", sa.String(10)),
    sa.Column("trial_used", sa.BigInteger, nullable=False, default=0),
    sa.Column("low_notified", sa.Boolean, nullable=False, default=False),
    # runs of limited operations in their current window (core/limits.py), read under the lock
    sa.Column("feature_usage", sa.JSON),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # the last line of defence for G1: the database itself refuses an overdraft
    sa.CheckConstraint("held >= 0 AND held <= balance", name="ck_accounts_no_overdraft"),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(128), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("remaining", sa.BigInteger, nullable=False),
    sa.Column("reserved", sa.BigInteger, nullable=False, default=0),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("ref", sa.String(256)),
    sa.Column("expires_at", UtcDateTime),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("remaining >= 0 AND remaining <= amount", name="ck_grants_remaining"),
    sa.CheckConstraint("reserved >= 0 AND reserved <= remaining", name="ck_grants_reserved"),
    sa.Index("ix_grants_account_live", "account_id", "remaining"),
    # the sweeper's due grants: only a grant with credits left can expire any. The predicate
    # must not name `reserved`: a hold changes it, and an indexed column's change (a partial
    # index's predicate included) makes every hold's grant update write new index entries
    # instead of updating in place (migration 0009)
    sa.Index(
        "ix_grants_due",
        "expires_at",
        postgresql_where=sa.text("remaining > 0"),
        sqlite_where=sa.text("remaining > 0"),
    ),
)

holds = sa.Table(
    "holds",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(128), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("ref", sa.String(256)),
    sa.Column("captured_amount", sa.BigInteger),
    sa.Column("release_reason", sa.String(64)),
    sa.Column("job_id", sa.String(40)),
    sa.Column("funding", sa.JSON),
    sa.Column("allocation", sa.JSON),
    sa.Column("metadata", sa.JSON),  # the caller's
    sa.Column("price", sa.JSON),  # the priced operation, model and params
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime),
    # Only open holds can fall due, and a capture or release takes its hold out of this index
    # instead of writing it a new entry under its new status.
    sa.Index(
        "ix_holds_open_expires",
        "expires_at",
        postgresql_where=sa.text(OPEN_HOLD),
        sqlite_where=sa.text(OPEN_HOLD),
    ),
    sa.Index("ix_holds_account", "account_id"),
)

entries = sa.Table(
    "entries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(128), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("delta", sa.BigInteger, nullable=False),
    sa.Column("held_delta", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("ref", sa.String(256)),
    sa.Column("op_id", sa.String(64), nullable=False),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("metadata", sa.JSON),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("account_id", "seq", name="uq_entries_account_seq"),
    sa.Index("ix_entries_op_id", "op_id"),  # a charge's or hold's lines, for its refunds
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("account_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_events_created_at", "created_at"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(128), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("model", sa.String(128)),
    sa.Column("params", sa.JSON),
    sa.Column("input", sa.JSON),
    sa.Column("cost", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("result_url", sa.String(2048)),
    sa.Column("error", sa.String(1024)),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("provider_task_id", sa.String(255)),
    sa.Column("hold_id", sa.String(40)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("completed_at", UtcDateTime),
    sa.Column("metadata", sa.JSON),
    sa.UniqueConstraint("provider", "provider_task_id", name="uq_jobs_provider_task"),
    sa.Index("ix_jobs_account_created", "account_id", "created_at"),
    sa.Index(
        "ix_jobs_processing_expires",
        "expires_at",
        postgresql_where=sa.text(PROCESSING_JOB),
        sqlite_where=sa.text(PROCESSING_JOB),
    ),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.String(160), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("response_status", sa.Integer),
    sa.Column("response_body", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("locked_at", UtcDateTime, nullable=False),
    sa.Index("ix_idempotency_created_at", "created_at"),
)

# a claimed key's answer, written in the transaction that claimed it (migration 0010): a row
# of its own rather than an update of the claim, which found no room on the claim's page and
# wrote new entries into both of its indexes (rows claimed before 0010 keep their answer there)
idempotency_answers = sa.Table(
    "idempotency_answers",
    metadata,
    sa.Column("scope", sa.String(160), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("response_status", sa.Integer, nullable=False),
    sa.Column("response_body", sa.Text, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime),
)

# one-use credentials for opening a stream (POST /v1/stream-tickets): only the SHA-256 of each is
# kept; a ticket is deleted by the connection that redeems it, expired ones when new ones are made
stream_tickets = sa.Table(
    "stream_tickets",
    metadata,
    sa.Column("ticket_hash", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    # unix seconds: when the ticket can no longer be redeemed, and when the user token it was
    # made with expires (the stream's own expiry; NULL for a server key)
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    sa.Column("credential_expires", sa.BigInteger),
)


def _console_secrets(name: str) -> sa.Table:
    """A console secret (a one-time sign-in token, a session id) by its SHA-256, with the
    operator it names and its expiry (unix seconds)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("secret_hash", sa.String(64), primary_key=True),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    )


console_sign_ins = _console_secrets("console_sign_ins")
console_sessions = _console_secrets("console_sessions")

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

processed_webhooks = sa.Table(
    "processed_webhooks",
    metadata,
    sa.Column("provider", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.String(255), primary_key=True),
    sa.Column("response", sa.JSON),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# outbound webhooks (background/webhook_delivery.py): endpoints, each one's position in every account's stream,
# and the attempts it has seen
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),  # signs deliveries, so kept in clear
    sa.Column("status", sa.String(16), nullable=False),  # enabled | disabled
    sa.Column("disabled_reason", sa.String(1024)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("disabled_at", UtcDateTime),
    sa.Column("failing_since", UtcDateTime),  # first failure of the current streak
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UtcDateTime),
    # one instance at a time delivers to an endpoint: it holds the lease until `lease_until`
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_until", UtcDateTime),
    # bumped by a resend or an enable: every instance's next pass looks at every account, not
    # only those with new events (a cursor moved back has none)
    sa.Column("rescans", sa.Integer, nullable=False, default=0, server_default="0"),
)

webhook_cursors = sa.Table(
    "webhook_cursors",
    metadata,
    sa.Column(
        "endpoint_id", sa.String(40), sa.ForeignKey("webhook_endpoints.id"), primary_key=True
    ),
    sa.Column("account_id", sa.String(128), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the last seq delivered (or skipped)
    # bumped by each resend (the cursor moved back): a pass that read an older generation
    # does not move the cursor, so the resend is not overwritten by a pass in flight
    sa.Column("generation", sa.Integer, nullable=False, default=0, server_default="0"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("endpoint_id", sa.String(40), nullable=False),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.String(1024)),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("attempted_at", UtcDateTime, nullable=False),
    sa.Column("next_retry_at", UtcDateTime),
    sa.Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
)
