"""A batch's reads and writes on PostgreSQL, straight on asyncpg.

A batch is a handful of statements whatever its size: claim the keys, lock the accounts and read
their live grants and the holds named (one round trip, the keys' claim included; a second only
when the lock waited for another transaction's commit), read the jobs named, write each table
from arrays, record the answers. SQLAlchemy would compile, bind and convert every one of them per
batch and per row; here each is a fixed text that asyncpg prepares once per connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa

from core.account import Account
from core.jobs import Job
from core.model import Entry, Grant, Hold
from core.refunds import REFUND
from storage.account_repository import entry_from_row, grant_from_row
from storage.dialects import RecordColumns, storable_key
from storage.hold_repository import hold_from_row
from storage.job_repository import job_from_row
from storage.spend_repository import funding_grant_ids
from storage.tables import UtcDateTime, accounts, grants, holds, idempotency_keys
from storage.writes import pg_arrays, pg_records
from storage.writes.batch import PendingWrites
from storage.writes.batch_writes import planned_writes
from storage.writes.idempotency import DONE, IN_PROGRESS, IdempotencyKey, KeyId, StoredResponse

# from the tables, so a new column reaches the batch without a second list to keep
ACCOUNT_COLUMNS = tuple(c.name for c in accounts.c)
GRANT_COLUMNS = tuple(c.name for c in grants.c)

# with jobs named: the accounts named and the holds' and jobs' accounts, locked in id order
# (joined from the named ids, so the plan starts from the few ids, never from the whole table)
LOCK_ACCOUNTS_AND_OWNERS = (
    f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM accounts WHERE id IN ("
    "SELECT unnest($1::text[]) "
    "UNION SELECT h.account_id FROM unnest($2::text[]) AS n(id) JOIN holds h ON h.id = n.id "
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
SQL_TYPES: tuple[tuple[type[Any], str], ...] = (
    (sa.JSON, "json"),
    (sa.Boolean, "boolean"),
    (sa.BigInteger, "bigint"),
    (sa.Integer, "bigint"),
    (UtcDateTime, "timestamptz"),
    (sa.String, "text"),
    (sa.Text, "text"),
)


def _typed_null(column: sa.Column[Any]) -> str:
    sql_type = next(t for python_type, t in SQL_TYPES if isinstance(column.type, python_type))
    return f"NULL::{sql_type}"


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


def _locked_accounts_and_live_grants(ids: str, tail: str = "") -> tuple[str, str]:
    """The accounts named by the text[] parameter `ids`, locked in id order, and their live
    grants: a CTE and the SELECTs over it. A row is either an account (a_ columns, then whether
    it is the version this statement's snapshot holds) or a grant (g_ columns); `tail` adds
    typed NULLs for the columns of a statement's other rows.

    The grants are read on the statement's snapshot, taken before the lock: a lock that waited
    for another transaction got the row that transaction committed, but the grants it changed
    are read as they were. Every transaction that changes a live grant rewrites its account's
    row in the same commit (a batch saves an account whose grants it touched), so an account
    whose locked version is not its snapshot version says the grants may be stale, and the
    batch reads them again (LIVE_GRANTS) now that the lock is held."""
    locked = (
        "locked AS MATERIALIZED (SELECT a.*, a.xmin AS locked_version FROM accounts a "
        f"WHERE a.id = ANY({ids}::text[]) ORDER BY a.id FOR UPDATE)"
    )
    account_half = (
        f"SELECT {_columns(grants, 'g_', None)}, {_columns(accounts, 'a_', 'l')}, "
        f"l.locked_version = s.xmin AS unchanged{tail} "
        "FROM locked l LEFT JOIN accounts s ON s.id = l.id"
    )
    grant_half = (
        f"SELECT {_columns(grants, 'g_', 'g')}, {_columns(accounts, 'a_', None)}, "
        f"NULL::boolean{tail} "
        f"FROM grants g WHERE g.account_id = ANY({ids}::text[]) AND g.remaining > 0"
    )
    return locked, f"{account_half} UNION ALL {grant_half}"


def _lock_accounts_with_grants() -> str:
    locked, rows = _locked_accounts_and_live_grants("$1")
    return f"WITH {locked} {rows}"


LOCK_ACCOUNTS_WITH_GRANTS = _lock_accounts_with_grants()
UNCHANGED = len(grants.c) + len(accounts.c)  # the account half's flag
OWNERS_OF_HOLDS = (
    "SELECT unnest($1::text[]) "
    "UNION SELECT h.account_id FROM unnest($2::text[]) AS n(id) JOIN holds h ON h.id = n.id"
)


def _lock_owners_with_grants_and_holds() -> str:
    """The accounts of $1 and the owners of the holds of $2, locked in id order, with their
    live grants and the holds, in one round trip: a row is a grant (g_ columns), a hold (h_) or
    an account (a_, then whether it is the version this statement's snapshot holds). The grants
    and holds are read on the snapshot, before the lock: a lock that waited for a commit makes
    the batch read them again (LIVE_GRANTS_AND_HOLDS), as in _locked_accounts_and_live_grants;
    a hold never changes without its account's row (ending it changes its account's held
    credits)."""
    no_grant, no_hold = _columns(grants, "g_", None), _columns(holds, "h_", None)
    no_account = _columns(accounts, "a_", None)
    return (
        "WITH locked AS MATERIALIZED (SELECT a.*, a.xmin AS locked_version FROM accounts a "
        f"WHERE a.id IN ({OWNERS_OF_HOLDS}) ORDER BY a.id FOR UPDATE) "
        f"SELECT {no_grant}, {no_hold}, {_columns(accounts, 'a_', 'l')}, "
        "l.locked_version = s.xmin AS unchanged "
        "FROM locked l LEFT JOIN accounts s ON s.id = l.id "
        f"UNION ALL SELECT {_columns(grants, 'g_', 'g')}, {no_hold}, {no_account}, NULL::boolean "
        "FROM grants g WHERE g.account_id IN (SELECT id FROM locked) AND g.remaining > 0 "
        f"UNION ALL SELECT {no_grant}, {_columns(holds, 'h_', 'h')}, {no_account}, NULL::boolean "
        "FROM unnest($2::text[]) AS n(id) JOIN holds h ON h.id = n.id"
    )


LOCK_OWNERS_WITH_GRANTS_AND_HOLDS = _lock_owners_with_grants_and_holds()
HOLD_ID = len(grants.c)  # a hold's row: its h_id
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
STORED = (
    "SELECT scope, key, fingerprint, status, response_status, response_body "
    "FROM idempotency_keys WHERE (scope, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
)
UNCLAIM = (
    "DELETE FROM idempotency_keys WHERE (scope, key) IN "
    "(SELECT * FROM unnest($1::text[], $2::text[]))"
)


class PgBatchSession:
    """One batch's transaction on an asyncpg connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._prefetched: dict[str, Hold] = {}  # read with the grants, just after the lock
        self._answers: list[dict[str, Any]] = []  # keys' answers, written by flush
        self._lock_with: list[str] = []  # the accounts the next claim locks too
        # locked, with their live grants, by the claim's statement: handed out by lock_accounts
        self._locked_early: dict[str, Account] = {}
        self._absent_early: set[str] = set()

    # -- reads --------------------------------------------------------------------------------

    async def lock_accounts(
        self, account_ids: Sequence[str], hold_ids: Sequence[str] = (), job_ids: Sequence[str] = ()
    ) -> list[Account]:
        if not (hold_ids or job_ids):
            early, absent = self._locked_early, self._absent_early
            if (early or absent) and all(a in early or a in absent for a in account_ids):
                return [early.pop(a) for a in account_ids if a in early]
            records = await self.conn.fetch(LOCK_ACCOUNTS_WITH_GRANTS, list(account_ids))
            return await self._accounts_with_grants(records)
        if not job_ids:
            return await self._lock_owners_with_grants_and_holds(account_ids, hold_ids)
        rows = await self.conn.fetch(
            LOCK_ACCOUNTS_AND_OWNERS, list(account_ids), list(hold_ids), list(job_ids)
        )
        found = {r[0]: pg_records.account(r) for r in rows}
        if hold_ids and found:
            # the holds named come with the grants: read after the lock, like them
            for record in await self.conn.fetch(LIVE_GRANTS_AND_HOLDS, list(found), list(hold_ids)):
                if record[0] is not None:  # g_id
                    grant = pg_records.grant(record)
                    found[grant.account_id].grants.append(grant)
                else:
                    hold = pg_records.hold_after_grant(record)
                    self._prefetched[hold.hold_id] = hold
        elif found:
            for record in await self.conn.fetch(LIVE_GRANTS, list(found)):
                grant = pg_records.grant(record)
                found[grant.account_id].grants.append(grant)
        return list(found.values())

    async def _lock_owners_with_grants_and_holds(
        self, account_ids: Sequence[str], hold_ids: Sequence[str]
    ) -> list[Account]:
        found: dict[str, Account] = {}
        read: list[asyncpg.Record] = []  # grants and holds
        current = True
        for record in await self.conn.fetch(
            LOCK_OWNERS_WITH_GRANTS_AND_HOLDS, list(account_ids), list(hold_ids)
        ):
            if record[0] is not None or record[HOLD_ID] is not None:
                read.append(record)
                continue
            account = pg_records.account_after_grant_and_hold(record)
            found[account.account_id] = account
            current = current and record[UNCHANGED_AFTER_HOLD] is True
        if not current:  # the lock waited for a commit: read them as they are now
            read = await self.conn.fetch(LIVE_GRANTS_AND_HOLDS, list(found), list(hold_ids))
        for record in read:  # both statements put a grant's columns first, then a hold's
            if record[0] is not None:
                grant = pg_records.grant(record)
                found[grant.account_id].grants.append(grant)
            else:
                hold = pg_records.hold_after_grant(record)
                self._prefetched[hold.hold_id] = hold
        return list(found.values())

    async def _accounts_with_grants(self, records: Iterable[asyncpg.Record]) -> list[Account]:
        """The accounts and grants of LOCK_ACCOUNTS_WITH_GRANTS's rows; the grants read again
        if the lock waited for another transaction's commit."""
        found: dict[str, Account] = {}
        live: list[asyncpg.Record] = []
        current = True
        for record in records:
            if record[0] is not None:  # g_id: a grant
                live.append(record)
                continue
            account = pg_records.account_after_grant(record)
            found[account.account_id] = account
            current = current and record[UNCHANGED] is True
        if not current:  # the lock waited for a commit: read the grants as they are now
            live = await self.conn.fetch(LIVE_GRANTS, list(found))
        for record in live:
            grant = pg_records.grant(record)
            found[grant.account_id].grants.append(grant)
        return list(found.values())

    async def holds(self, hold_ids: Sequence[str]) -> list[Hold]:
        if hold_ids and all(h in self._prefetched for h in hold_ids):
            return [self._prefetched.pop(h) for h in hold_ids]
        return [
            hold_from_row(RecordColumns(r)) for r in await self.conn.fetch(HOLDS, list(hold_ids))
        ]

    async def jobs(self, job_ids: Sequence[str]) -> list[Job]:
        return [job_from_row(RecordColumns(r)) for r in await self.conn.fetch(JOBS, list(job_ids))]

    async def job_by_task(self, provider: str, task_id: str) -> Job | None:
        record = await self.conn.fetchrow(JOB_BY_TASK, provider, task_id)
        return None if record is None else job_from_row(RecordColumns(record))

    async def spend(self, spend_id: str, kind: str) -> tuple[list[Entry], list[Grant]]:
        if not storable_key(spend_id):
            return [], []
        lines = [
            entry_from_row(RecordColumns(r))
            for r in await self.conn.fetch(SPEND_LINES, spend_id, [kind, REFUND])
        ]
        grant_ids = funding_grant_ids(lines, kind)
        if not grant_ids:
            return lines, []
        return lines, [
            grant_from_row(RecordColumns(r)) for r in await self.conn.fetch(GRANTS, grant_ids)
        ]

    async def webhook_response(self, provider: str, event_id: str) -> dict[str, Any] | None:
        record = await self.conn.fetchrow(WEBHOOK, provider, event_id)
        return None if record is None else dict(record["response"] or {})

    # -- idempotency keys ---------------------------------------------------------------------

    def lock_with_claim(self, account_ids: Sequence[str]) -> None:
        self._lock_with = list(account_ids)

    async def claim(self, ordered: list[IdempotencyKey], now: datetime) -> list[KeyId]:
        keys = (
            [k.scope for k in ordered],
            [k.key for k in ordered],
            [k.fingerprint for k in ordered],
        )
        if not self._lock_with:
            rows = await self.conn.fetch(CLAIM, *keys, IN_PROGRESS, now)
            return [(r["scope"], r["key"]) for r in rows]
        wanted, self._lock_with = self._lock_with, []
        claimed: list[KeyId] = []
        locked: list[asyncpg.Record] = []
        for record in await self.conn.fetch(CLAIM_AND_LOCK, *keys, IN_PROGRESS, now, wanted):
            if record[CLAIMED_KEY] is not None:
                claimed.append((record[CLAIMED_KEY], record[CLAIMED_KEY + 1]))
            else:
                locked.append(record)
        self._locked_early = {a.account_id: a for a in await self._accounts_with_grants(locked)}
        self._absent_early = set(wanted) - self._locked_early.keys()
        return claimed

    async def stored(self, key_ids: list[KeyId]) -> dict[KeyId, StoredResponse]:
        rows = await self.conn.fetch(STORED, [s for s, _ in key_ids], [k for _, k in key_ids])
        return {
            (r["scope"], r["key"]): StoredResponse(
                r["fingerprint"],
                r["response_status"] if r["status"] == DONE else None,
                json.loads(r["response_body"]) if r["status"] == DONE else None,
            )
            for r in rows
        }

    async def record(self, responses: dict[KeyId, tuple[int, Any]]) -> None:
        # written with the batch's rows, in the same statement (flush)
        self._answers = [
            {
                "scope": scope,
                "key": key,
                "status": DONE,
                "response_status": status,
                "response_body": orjson.dumps(body).decode(),
            }
            for (scope, key), (status, body) in responses.items()
        ]

    async def unclaim(self, key_ids: Iterable[KeyId]) -> None:
        ids = list(key_ids)
        await self.conn.execute(UNCLAIM, [s for s, _ in ids], [k for _, k in ids])

    # -- writes -------------------------------------------------------------------------------

    async def flush(self, writes: PendingWrites, now: datetime) -> None:
        parts: list[tuple[Any, str, Sequence[dict[str, Any]]]] = []
        for planned in planned_writes(writes, now):
            parts += [
                (planned.table, "insert", planned.inserts),
                (planned.table, "update", planned.updates),
            ]
        parts.append((idempotency_keys, "update", self._answers))
        await pg_arrays.write(self.conn, parts)
