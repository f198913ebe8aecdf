"""A batch's reads and writes on PostgreSQL, straight on asyncpg.

A batch is a handful of statements whatever its size: claim the keys, lock the accounts and read
their live grants and the holds named (one round trip, the keys' claim included; a second only
when the lock waited for another transaction's commit), read the jobs named, write each table
from arrays, record the answers. SQLAlchemy would compile, bind and convert every one of them per
batch and per row; here each is a fixed text that asyncpg prepares once per connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from core.account import Account
from core.jobs import Job
from core.model import Entry, Grant, Hold
from core.refunds import REFUND
from storage.account_repository import entry_from_row, grant_from_row
from storage.dialects import RecordColumns, storable_key
from storage.hold_repository import hold_from_row
from storage.job_repository import job_from_row
from storage.spend_repository import funding_grant_ids
from storage.tables import idempotency_answers, idempotency_keys
from storage.writes import pg_arrays, pg_records
from storage.writes.batch import PendingWrites
from storage.writes.batch_writes import planned_writes
from storage.writes.committed_accounts import StaleAccounts, Version
from storage.writes.idempotency import (
    IN_PROGRESS,
    IdempotencyKey,
    KeyId,
    StoredResponse,
    stored_response,
)
from storage.writes.pg_records import locked_and_read, take_grants
from storage.writes.pg_statements import (
    ACCOUNT_VERSIONS,
    CLAIM,
    CLAIM_AND_LOCK,
    CLAIMED_KEY,
    GRANTS,
    HOLDS,
    JOB_BY_TASK,
    JOBS,
    LIVE_GRANTS,
    LIVE_GRANTS_AND_HOLDS,
    LOCK_ACCOUNTS_AND_OWNERS,
    LOCK_ACCOUNTS_WITH_GRANTS,
    LOCK_OWNERS_WITH_GRANTS_AND_HOLDS,
    SPEND_LINES,
    STORED,
    UNCHANGED,
    UNCHANGED_AFTER_HOLD,
    UNCLAIM,
    WEBHOOK,
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
        self._expected: dict[str, Version] = {}
        self._claim_with_write: dict[KeyId, IdempotencyKey] = {}

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
            self._take_grants_and_holds(
                found, await self.conn.fetch(LIVE_GRANTS_AND_HOLDS, list(found), list(hold_ids))
            )
        elif found:
            take_grants(found, await self.conn.fetch(LIVE_GRANTS, list(found)))
        return list(found.values())

    async def _lock_owners_with_grants_and_holds(
        self, account_ids: Sequence[str], hold_ids: Sequence[str]
    ) -> list[Account]:
        records = await self.conn.fetch(
            LOCK_OWNERS_WITH_GRANTS_AND_HOLDS, list(account_ids), list(hold_ids)
        )
        found, read = await locked_and_read(
            records,
            pg_records.account_after_grant_and_hold,
            UNCHANGED_AFTER_HOLD,
            lambda ids: self.conn.fetch(LIVE_GRANTS_AND_HOLDS, ids, list(hold_ids)),
        )
        self._take_grants_and_holds(found, read)
        return list(found.values())

    async def _accounts_with_grants(self, records: Iterable[asyncpg.Record]) -> list[Account]:
        """The accounts and grants of LOCK_ACCOUNTS_WITH_GRANTS's rows (or CLAIM_AND_LOCK's)."""
        found, live = await locked_and_read(
            records,
            pg_records.account_after_grant,
            UNCHANGED,
            lambda ids: self.conn.fetch(LIVE_GRANTS, ids),
        )
        take_grants(found, live)
        return list(found.values())

    def _take_grants_and_holds(
        self, found: dict[str, Account], records: Iterable[asyncpg.Record]
    ) -> None:
        """Rows of grants (g_ columns first) and holds (h_ columns after the grant's): each grant
        to its account, each hold kept for holds()."""
        for record in records:
            if record[0] is not None:  # g_id
                grant = pg_records.grant(record)
                found[grant.account_id].grants.append(grant)
            else:
                hold = pg_records.hold_after_grant(record)
                self._prefetched[hold.hold_id] = hold

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
            (r["scope"], r["key"]): stored_response(
                r["fingerprint"], r["answered"], r["response_status"], r["response_body"]
            )
            for r in rows
        }

    async def record(self, responses: dict[KeyId, tuple[int, Any]]) -> None:
        # written with the batch's rows, in the same statement (flush)
        self._answers = [
            {
                "scope": scope,
                "key": key,
                "response_status": status,
                "response_body": orjson.dumps(body).decode(),
            }
            for (scope, key), (status, body) in responses.items()
        ]

    async def unclaim(self, key_ids: Iterable[KeyId]) -> None:
        ids = list(key_ids)
        await self.conn.execute(UNCLAIM, [s for s, _ in ids], [k for _, k in ids])

    # -- writes -------------------------------------------------------------------------------

    def claim_with_write(self, keys: list[IdempotencyKey]) -> None:
        for key in keys:
            self._claim_with_write.setdefault(key.id, key)  # the first request owns it

    def expect(self, versions: dict[str, Version]) -> None:
        """The accounts the batch applied on as remembered, not locked: the write locks them and
        checks their versions before what it wrote counts (flush)."""
        self._expected = versions

    async def flush(self, writes: PendingWrites, now: datetime) -> dict[str, Version]:
        parts: list[tuple[Any, str, Sequence[dict[str, Any]]]] = []
        for planned in planned_writes(writes, now):
            parts += [
                (planned.table, "insert", planned.inserts),
                (planned.table, "update", planned.updates),
            ]
        if self._claim_with_write:
            parts.append((idempotency_keys, "insert", self._claims_of_answers(now)))
        # an upsert: a key claimed in this transaction has no answer but one its claim's deletion
        # left behind (by hand, or by a sweeper of the version before 0010), which it replaces
        parts.append((idempotency_answers, "upsert", self._answers))
        expected = self._expected
        try:
            rows = await pg_arrays.write(
                self.conn,
                parts,
                ACCOUNT_VERSIONS,
                [(a, xid, seq) for a, (xid, seq) in sorted(expected.items())],
            )
        except asyncpg.IntegrityConstraintViolationError as exc:
            if expected:  # a key it claimed with the write was claimed meanwhile
                raise StaleAccounts([]) from exc
            raise
        written: dict[str, Version] = {}
        found: dict[str, Version] = {}
        for record in rows:
            (written if record[0] else found)[record[1]] = (record[2], record[3])
        stale = [a for a, version in expected.items() if found.get(a) != version]
        if stale:  # the write was gated on them: nothing was written
            raise StaleAccounts(stale)
        return written

    def _claims_of_answers(self, now: datetime) -> list[dict[str, Any]]:
        """The claims of the keys answered, in key order (one lock order everywhere), as CLAIM
        inserts them; a plain insert, so a key claimed already fails the write."""
        wanted = self._claim_with_write
        answered = sorted(
            (a["scope"], a["key"]) for a in self._answers if (a["scope"], a["key"]) in wanted
        )
        return [
            {
                "scope": scope,
                "key": key,
                "fingerprint": wanted[(scope, key)].fingerprint,
                "status": IN_PROGRESS,
                "created_at": now,
                "locked_at": now,
            }
            for scope, key in answered
        ]
