"""The fixed texts of a batch's statements on PostgreSQL (storage/writes/batch_pg.py runs them):
derived from the tables, so a new column reaches them without a second list to keep, and each
prepared once per connection by asyncpg.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from storage.tables import accounts, grants, holds
from storage.writes.idempotency import DONE
from storage.writes.pg_arrays import Versions, sql_type

# from the tables, so a new column reaches the batch without a second list to keep
ACCOUNT_COLUMNS = tuple(c.name for c in accounts.c)
GRANT_COLUMNS = tuple(c.name for c in grants.c)

# the accounts of $1 and the owners of the holds of $2 (joined from the named ids, so the plan
# starts from the few ids, never from the whole table)
OWNERS_OF_HOLDS = (
    "SELECT unnest($1::text[]) "
    "UNION SELECT h.account_id FROM unnest($2::text[]) AS n(id) JOIN holds h ON h.id = n.id"
)
# with jobs named: those and the jobs' accounts, locked in id order
LOCK_ACCOUNTS_AND_OWNERS = (
    f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM accounts WHERE id IN ({OWNERS_OF_HOLDS} "
    "UNION SELECT j.account_id FROM unnest($3::text[]) AS n(id) JOIN jobs j ON j.id = n.id) "
    "ORDER BY id FOR UPDATE"
)
# their live grants, in a statement of its own (after a lock that waited, or beside the holds
# named): one that waited for a lock reads other tables as they were when it started, and a
# grant the lock's holder changed would be read stale
LIVE_GRANTS = (
    f"SELECT {', '.join(GRANT_COLUMNS)} FROM grants "
    "WHERE account_id = ANY($1::text[]) AND remaining > 0"
)
HOLDS = "SELECT h.* FROM unnest($1::text[]) AS n(id) JOIN holds h ON h.id = n.id"


def _typed_null(column: sa.Column[Any]) -> str:
    return f"NULL::{sql_type(column)}"


def _columns(table: sa.Table, prefix: str, alias: str | None) -> str:
    """The table's columns as `prefix_name`, from `alias`, or typed NULLs when alias is None."""
    return ", ".join(
        f"{alias}.{c.name} AS {prefix}{c.name}"
        if alias is not None
        else f"{_typed_null(c)} AS {prefix}{c.name}"
        for c in table.c
    )


def _live_grants_and_holds() -> str:
    """The live grants of the locked accounts and the holds named, in one round trip: a row is
    either a grant (g_ columns) or a hold (h_ columns); the other half is NULL."""
    grant_half = (
        f"SELECT {_columns(grants, 'g_', 'g')}, {_columns(holds, 'h_', None)} "
        "FROM grants g WHERE g.account_id = ANY($1::text[]) AND g.remaining > 0"
    )
    hold_half = (
        f"SELECT {_columns(grants, 'g_', None)}, {_columns(holds, 'h_', 'h')} "
        "FROM unnest($2::text[]) AS n(id) JOIN holds h ON h.id = n.id"
    )
    return f"{grant_half} UNION ALL {hold_half}"


LIVE_GRANTS_AND_HOLDS = _live_grants_and_holds()


def _locked(where: str, before: str, after: str = "") -> tuple[str, str]:
    """The accounts `where` picks, locked in id order: a CTE `locked`, and the SELECT of its rows
    (the columns `before`, typed NULLs of the statement's other rows, then the a_ columns, then
    whether the row locked is the version this statement's snapshot holds, then `after`).

    A statement that locks and reads other tables in one reads them on its snapshot, taken
    before the lock: a lock that waited for another transaction got the row that transaction
    committed, but what it changed elsewhere is read as it was. Every transaction that changes a
    live grant or a hold rewrites its account's row in the same commit (a batch saves an account
    whose grants it touched; ending a hold changes its account's held credits), so an account
    whose locked version is not its snapshot's says the other reads may be stale, and the batch
    reads them again (LIVE_GRANTS, LIVE_GRANTS_AND_HOLDS) now that the lock is held. An account
    missing from the snapshot counts as changed."""
    locked = (
        "locked AS MATERIALIZED (SELECT a.*, a.xmin AS locked_version FROM accounts a "
        f"WHERE a.id {where} ORDER BY a.id FOR UPDATE)"
    )
    rows = (
        f"SELECT {before}, {_columns(accounts, 'a_', 'l')}, "
        f"(l.locked_version = s.xmin) IS TRUE AS unchanged{after} "
        "FROM locked l LEFT JOIN accounts s ON s.id = l.id"
    )
    return locked, rows


def _locked_accounts_and_live_grants(ids: str, tail: str = "") -> tuple[str, str]:
    """The accounts named by the text[] parameter `ids`, locked (_locked), and their live grants:
    a CTE and the SELECTs over it. A row is either an account (a_ columns, then its flag) or a
    grant (g_ columns); `tail` adds typed NULLs for the columns of a statement's other rows."""
    locked, account_rows = _locked(f"= ANY({ids}::text[])", _columns(grants, "g_", None), tail)
    grant_rows = (
        f"SELECT {_columns(grants, 'g_', 'g')}, {_columns(accounts, 'a_', None)}, "
        f"NULL::boolean{tail} "
        f"FROM grants g WHERE g.account_id = ANY({ids}::text[]) AND g.remaining > 0"
    )
    return locked, f"{account_rows} UNION ALL {grant_rows}"


def _lock_accounts_with_grants() -> str:
    locked, rows = _locked_accounts_and_live_grants("$1")
    return f"WITH {locked} {rows}"


LOCK_ACCOUNTS_WITH_GRANTS = _lock_accounts_with_grants()
UNCHANGED = len(grants.c) + len(accounts.c)  # an account row's flag; NULL on a grant's


def _lock_owners_with_grants_and_holds() -> str:
    """The accounts of $1 and the owners of the holds of $2, locked (_locked), with their live
    grants and the holds, in one round trip: a row is a grant (g_ columns), a hold (h_) or an
    account (a_, then its flag)."""
    no_grant, no_hold = _columns(grants, "g_", None), _columns(holds, "h_", None)
    no_account = _columns(accounts, "a_", None)
    locked, account_rows = _locked(f"IN ({OWNERS_OF_HOLDS})", f"{no_grant}, {no_hold}")
    return (
        f"WITH {locked} {account_rows} "
        f"UNION ALL SELECT {_columns(grants, 'g_', 'g')}, {no_hold}, {no_account}, NULL::boolean "
        "FROM grants g WHERE g.account_id IN (SELECT id FROM locked) AND g.remaining > 0 "
        f"UNION ALL SELECT {no_grant}, {_columns(holds, 'h_', 'h')}, {no_account}, NULL::boolean "
        "FROM unnest($2::text[]) AS n(id) JOIN holds h ON h.id = n.id"
    )


LOCK_OWNERS_WITH_GRANTS_AND_HOLDS = _lock_owners_with_grants_and_holds()
# an account row's flag; NULL on a grant's or a hold's
UNCHANGED_AFTER_HOLD = len(grants.c) + len(holds.c) + len(accounts.c)
JOBS = "SELECT j.* FROM unnest($1::text[]) AS n(id) JOIN jobs j ON j.id = n.id"
JOB_BY_TASK = "SELECT * FROM jobs WHERE provider = $1 AND provider_task_id = $2"
# a spend's journal lines and its funders: read after the account's lock, as LIVE_GRANTS is
SPEND_LINES = "SELECT * FROM entries WHERE op_id = $1 AND type = ANY($2::text[]) ORDER BY id"
GRANTS = f"SELECT {', '.join(GRANT_COLUMNS)} FROM grants WHERE id = ANY($1::text[])"
WEBHOOK = "SELECT response FROM processed_webhooks WHERE provider = $1 AND event_id = $2"
CLAIM = (
    "INSERT INTO idempotency_keys (scope, key, fingerprint, status, created_at, locked_at) "
    "SELECT k.scope, k.key, k.fingerprint, $4, $5, $5 FROM unnest($1::text[], $2::text[], "
    "$3::text[]) WITH ORDINALITY AS k(scope, key, fingerprint, n) ORDER BY k.n "
    "ON CONFLICT (scope, key) DO NOTHING RETURNING scope, key"
)


def _claim_and_lock() -> str:
    """CLAIM, then the accounts of $6 locked with their live grants, in one round trip: the
    claimed keys are the first rows (their scope and key in the last two columns). The keys are
    claimed before any account is locked, as when they are two statements: an INSERT in a CTE
    runs once, to completion, and the first branch of the UNION ALL reads all of it before the
    second reads the locked accounts."""
    locked, rows = _locked_accounts_and_live_grants("$6", ", NULL::text, NULL::text")
    return (
        f"WITH claimed AS ({CLAIM}), {locked} "
        f"SELECT {_columns(grants, 'g_', None)}, {_columns(accounts, 'a_', None)}, "
        f"NULL::boolean, c.scope::text, c.key::text FROM claimed c UNION ALL {rows}"
    )


CLAIM_AND_LOCK = _claim_and_lock()
CLAIMED_KEY = UNCHANGED + 1  # a claimed key's row: its scope, then its key
# a claimed key, answered once its answer has a row (or, claimed before answers had rows of
# their own, its claim says `done` and holds the answer)
STORED = (
    "SELECT k.scope, k.key, k.fingerprint, "
    f"(a.scope IS NOT NULL OR k.status = '{DONE}') AS answered, "
    "coalesce(a.response_status, k.response_status) AS response_status, "
    "coalesce(a.response_body, k.response_body) AS response_body "
    "FROM idempotency_keys k LEFT JOIN idempotency_answers a USING (scope, key) "
    "WHERE (k.scope, k.key) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
)
UNCLAIM = (
    "DELETE FROM idempotency_keys WHERE (scope, key) IN "
    "(SELECT * FROM unnest($1::text[], $2::text[]))"
)

# an account row's version (storage/writes/committed_accounts.py): what a batch's write answers
# for each account it writes, and, when it applied on remembered accounts, for each of those,
# locked in id order before anything is written, with whether each is at the version remembered
_VERSION = "{t}id AS id, {t}xmin::text::bigint AS xid, {t}seq AS seq"
ACCOUNT_VERSIONS = Versions(
    "accounts",
    _VERSION.format(t="accounts."),
    f"SELECT {_VERSION.format(t='')} FROM accounts WHERE id = ANY($1::text[]) "
    "ORDER BY id FOR UPDATE",
    "SELECT count(*) = cardinality($1::text[]) AS ok FROM guard g "
    "JOIN unnest($1::text[], $2::bigint[], $3::bigint[]) AS e(id, xid, seq) "
    "ON g.id = e.id AND g.xid = e.xid AND g.seq = e.seq",
)
