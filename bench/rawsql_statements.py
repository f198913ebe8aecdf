"""The statements the ceiling sends, as text: the ones the repositories
(storage/account_repository.py, storage/hold_repository.py) make SQLAlchemy issue for a hold and
a capture (bench/rawsql.py sends them one round trip each), and the hold written as one statement.
"""

from __future__ import annotations

ACCOUNT_COLUMNS = (
    "accounts.id, accounts.balance, accounts.held, accounts.seq, accounts.plan, "
    "accounts.paid, accounts.trial_expires_at, accounts.trial_day, "
    "accounts.trial_used, accounts.low_notified, accounts.created_at, "
    "accounts.updated_at"
)
GRANT_COLUMNS = (
    "grants.id, grants.account_id, grants.amount, grants.remaining, grants.reserved, "
    "grants.reason, grants.kind, grants.ref, grants.expires_at, grants.created_at"
)
HOLD_COLUMNS = (
    "holds.id, holds.account_id, holds.amount, holds.status, holds.ref, "
    "holds.captured_amount, holds.release_reason, holds.job_id, holds.funding, "
    "holds.allocation, holds.metadata, holds.created_at, holds.expires_at, "
    "holds.closed_at"
)
TS = "TIMESTAMP WITH TIME ZONE"

INSERT_ACCOUNT = (
    "INSERT INTO accounts (id, balance, held, seq, plan, paid, trial_expires_at, trial_day, "
    "trial_used, low_notified, created_at, updated_at) VALUES ($1::VARCHAR, $2::BIGINT, "
    f"$3::BIGINT, $4::BIGINT, $5::VARCHAR, $6::BOOLEAN, $7::{TS}, $8::VARCHAR, $9::BIGINT, "
    f"$10::BOOLEAN, $11::{TS}, $12::{TS}) ON CONFLICT (id) DO NOTHING RETURNING accounts.id"
)
LOCK_ACCOUNT = (
    f"SELECT {ACCOUNT_COLUMNS} \nFROM accounts \nWHERE accounts.id = $1::VARCHAR FOR UPDATE"
)
LIVE_GRANTS = (
    f"SELECT {GRANT_COLUMNS} \nFROM grants \n"
    "WHERE grants.account_id = $1::VARCHAR AND grants.remaining > $2::BIGINT"
)
SELECT_HOLD = f"SELECT {HOLD_COLUMNS} \nFROM holds \nWHERE holds.id = $1::VARCHAR"
INSERT_HOLD = (
    "INSERT INTO holds (id, account_id, amount, status, ref, captured_amount, release_reason, "
    "job_id, funding, allocation, metadata, created_at, expires_at, closed_at) VALUES "
    "($1::VARCHAR, $2::VARCHAR, $3::BIGINT, $4::VARCHAR, $5::VARCHAR, $6::BIGINT, $7::VARCHAR, "
    f"$8::VARCHAR, $9::JSON, $10::JSON, $11::JSON, $12::{TS}, $13::{TS}, $14::{TS})"
)
UPDATE_HOLD = (
    "UPDATE holds SET id=$1::VARCHAR, account_id=$2::VARCHAR, amount=$3::BIGINT, "
    "status=$4::VARCHAR, ref=$5::VARCHAR, captured_amount=$6::BIGINT, release_reason=$7::VARCHAR, "
    "job_id=$8::VARCHAR, funding=$9::JSON, allocation=$10::JSON, metadata=$11::JSON, "
    f"created_at=$12::{TS}, expires_at=$13::{TS}, closed_at=$14::{TS} "
    "WHERE holds.id = $15::VARCHAR AND holds.status = $16::VARCHAR"
)
UPDATE_ACCOUNT = (
    "UPDATE accounts SET id=$1::VARCHAR, balance=$2::BIGINT, held=$3::BIGINT, seq=$4::BIGINT, "
    f"plan=$5::VARCHAR, paid=$6::BOOLEAN, trial_expires_at=$7::{TS}, trial_day=$8::VARCHAR, "
    f"trial_used=$9::BIGINT, low_notified=$10::BOOLEAN, updated_at=$11::{TS} "
    "WHERE accounts.id = $12::VARCHAR AND accounts.seq = $13::BIGINT"
)
UPDATE_GRANT = (
    "UPDATE grants SET remaining=$1::BIGINT, reserved=$2::BIGINT WHERE grants.id = $3::VARCHAR"
)
INSERT_ENTRY = (
    "INSERT INTO entries (account_id, seq, type, amount, delta, held_delta, reason, ref, op_id, "
    "idempotency_key, metadata, created_at) VALUES ($1::VARCHAR, $2::BIGINT, $3::VARCHAR, "
    "$4::BIGINT, $5::BIGINT, $6::BIGINT, $7::VARCHAR, $8::VARCHAR, $9::VARCHAR, $10::VARCHAR, "
    f"$11::JSON, $12::{TS}) RETURNING entries.id"
)
INSERT_EVENT = (
    "INSERT INTO events (account_id, seq, type, payload, created_at) VALUES "
    f"($1::VARCHAR, $2::BIGINT, $3::VARCHAR, $4::JSON, $5::{TS})"
)


# One statement, one round trip, committed on its own: the same rows as bench/rawsql.py's `hold`
# (for a paid account whose first grant covers the amount), for `bench push`'s writer, whose
# commits must cost the machine as little as possible so the servers under test get the CPU.
HOLD_IN_ONE_STATEMENT = f"""
WITH account AS (
    SELECT id, balance, held, seq FROM accounts WHERE id = $1::VARCHAR FOR UPDATE
), grant_row AS (
    SELECT id, kind FROM grants
    WHERE account_id = $1::VARCHAR AND remaining - reserved >= $2::BIGINT
    ORDER BY created_at, id LIMIT 1 FOR UPDATE
), saved AS (
    UPDATE accounts SET held = accounts.held + $2::BIGINT, seq = accounts.seq + 1,
                        updated_at = $3::{TS}
    FROM account, grant_row WHERE accounts.id = account.id
    RETURNING accounts.balance, accounts.held, accounts.seq
), reserved AS (
    UPDATE grants SET reserved = grants.reserved + $2::BIGINT
    FROM grant_row WHERE grants.id = grant_row.id RETURNING grants.id
), hold AS (
    INSERT INTO holds (id, account_id, amount, status, funding, allocation, metadata,
                       created_at, expires_at)
    SELECT $4::VARCHAR, $1::VARCHAR, $2::BIGINT, 'open', '[]'::JSON,
           json_build_array(json_build_object('grant_id', grant_row.id, 'kind', grant_row.kind,
                                              'amount', $2::BIGINT)),
           '{{}}'::JSON, $3::{TS}, $5::{TS}
    FROM grant_row
), entry AS (
    INSERT INTO entries (account_id, seq, type, amount, delta, held_delta, reason, op_id,
                         metadata, created_at)
    SELECT $1::VARCHAR, saved.seq, 'hold', $2::BIGINT, 0, $2::BIGINT, 'hold', $4::VARCHAR,
           '{{}}'::JSON, $3::{TS}
    FROM saved
), event AS (
    INSERT INTO events (account_id, seq, type, payload, created_at)
    SELECT $1::VARCHAR, saved.seq, 'balance.updated',
           json_build_object('type', 'balance.updated', 'account_id', $1::VARCHAR,
                             'seq', saved.seq, 'balance', saved.balance, 'held', saved.held,
                             'available', saved.balance - saved.held, 'delta', 0,
                             'reason', 'hold', 'ref', NULL, 'at', $6::VARCHAR),
           $3::{TS}
    FROM saved
)
SELECT balance, held, seq FROM saved
"""
