"""Outbound webhook endpoints in SQL: the registry, each endpoint's cursor per account, the
attempts, and the lease that lets one instance at a time deliver to an endpoint.

A cursor is the last seq of an account's stream handled for an endpoint. An account is pending
for an endpoint while its head (`accounts.seq`, written in the transaction that wrote its events)
is past the cursor, so a late commit is never skipped, whatever order accounts commit in."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.events import iso
from core.model import new_id
from storage.repositories import dialect_insert, storable_key
from storage.sql import Database
from storage.tables import accounts, events, idempotency_keys
from storage.tables import webhook_cursors as cursors
from storage.tables import webhook_deliveries as deliveries
from storage.tables import webhook_endpoints as endpoints
from storage.writes.idempotency import DONE, IN_PROGRESS, IdempotencyKey

ENABLED, DISABLED = "enabled", "disabled"
SECRET_PREFIX = "whsec_"
IN_CHUNK = 500  # account ids per IN (…)


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    events: tuple[str, ...]
    secret: str
    status: str
    disabled_reason: str | None
    created_at: datetime
    disabled_at: datetime | None
    failing_since: datetime | None
    failures: int
    next_attempt_at: datetime | None

    def to_dict(self, with_secret: bool = False) -> dict[str, Any]:
        """What the API shows; the secret only once, in the answer to the registration."""
        shown: dict[str, Any] = {
            "id": self.endpoint_id, "url": self.url, "events": list(self.events),
            "status": self.status, "disabled_reason": self.disabled_reason,
            "created_at": iso(self.created_at), "disabled_at": iso(self.disabled_at),
            "failing_since": iso(self.failing_since), "consecutive_failures": self.failures,
            "next_attempt_at": iso(self.next_attempt_at)}
        if with_secret:
            shown["secret"] = self.secret
        return shown


@dataclass(frozen=True)
class Attempt:
    account_id: str
    seq: int
    event_type: str
    status_code: int | None
    error: str | None
    duration_ms: int
    at: datetime
    next_retry_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def row(self, endpoint_id: str) -> dict[str, Any]:
        return {"endpoint_id": endpoint_id, "account_id": self.account_id, "seq": self.seq,
                "event_type": self.event_type, "status_code": self.status_code,
                "error": self.error, "duration_ms": self.duration_ms,
                "attempted_at": self.at, "next_retry_at": self.next_retry_at}


@dataclass(frozen=True)
class Outcome:
    """How a run of attempts leaves an endpoint: still failing (retry at `next_attempt_at`),
    disabled (`disabled_reason`), or healthy (neither)."""

    failing_since: datetime | None = None
    failures: int = 0
    next_attempt_at: datetime | None = None
    disabled_reason: str | None = None


@dataclass(frozen=True)
class Pending:
    """An account with events past an endpoint's cursor."""

    account_id: str
    after: int
    first_at: datetime | None  # when the first of them was written


@dataclass(frozen=True)
class Journaled:
    """An event of the journal, as a delivery sends it."""

    seq: int
    type: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Keyed:
    status: int
    body: Any
    replayed: bool


class WebhookEndpoints:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- the registry ------------------------------------------------------------------

    async def create(self, url: str, event_types: list[str], now: datetime,
                     key: IdempotencyKey | None,
                     render: Callable[[Endpoint], dict[str, Any]]) -> Keyed:
        """Register an endpoint: from now on, every account's stream past its present head.
        With an Idempotency-Key the key is claimed in the same transaction, so a retry replays
        the first answer (its secret included) and never registers a second endpoint."""
        endpoint = Endpoint(new_id("we"), url, tuple(event_types),
                            SECRET_PREFIX + secrets.token_urlsafe(32), ENABLED, None, now, None,
                            None, 0, None)
        async with self.db.transaction() as uow:
            conn = uow.conn
            if key is not None:
                first = await _claim(conn, key, now)
                if first is not None:
                    return first
            await conn.execute(sa.insert(endpoints).values(
                id=endpoint.endpoint_id, url=url, events=list(event_types),
                secret=endpoint.secret, status=ENABLED, created_at=now, failures=0))
            await conn.execute(sa.insert(cursors).from_select(
                ["endpoint_id", "account_id", "seq"],
                sa.select(sa.literal(endpoint.endpoint_id, sa.String), accounts.c.id,
                          accounts.c.seq)))
            body = render(endpoint)
            if key is not None:
                await conn.execute(sa.update(idempotency_keys).where(
                    idempotency_keys.c.scope == key.scope, idempotency_keys.c.key == key.key)
                    .values(status=DONE, response_status=201, response_body=json.dumps(body)))
        return Keyed(201, body, False)

    async def registered(self) -> list[Endpoint]:
        async with self.db.read() as uow:
            rows = await uow.conn.execute(sa.select(endpoints).order_by(endpoints.c.created_at,
                                                                         endpoints.c.id))
            return [_endpoint(row) for row in rows]

    async def get(self, endpoint_id: str) -> Endpoint | None:
        if not storable_key(endpoint_id):
            return None
        async with self.db.read(snapshot=False) as uow:
            row = (await uow.conn.execute(
                sa.select(endpoints).where(endpoints.c.id == endpoint_id))).first()
            return None if row is None else _endpoint(row)

    async def delete(self, endpoint_id: str) -> Endpoint | None:
        """Remove an endpoint with its cursors and attempts; None when there was none. An
        instance delivering to it right now finishes its attempt and then finds it gone.

        The endpoint's row is locked first (FOR UPDATE), and `record` locks it too before it
        writes a cursor: a cursor written between this DELETE of the cursors and that of the
        endpoint would otherwise break the foreign key (SQLite runs writers one at a time)."""
        if not storable_key(endpoint_id):
            return None
        async with self.db.transaction() as uow:
            row = (await uow.conn.execute(
                sa.select(endpoints).where(endpoints.c.id == endpoint_id)
                .with_for_update())).first()
            if row is None:
                return None
            for table in (cursors, deliveries):
                await uow.conn.execute(sa.delete(table).where(table.c.endpoint_id == endpoint_id))
            await uow.conn.execute(sa.delete(endpoints).where(endpoints.c.id == endpoint_id))
            return _endpoint(row)

    async def attempts(self, endpoint_id: str, limit: int) -> list[dict[str, Any]]:
        """The endpoint's latest attempts, newest first."""
        if not storable_key(endpoint_id):
            return []
        async with self.db.read(snapshot=False) as uow:
            rows = await uow.conn.execute(
                sa.select(deliveries).where(deliveries.c.endpoint_id == endpoint_id)
                .order_by(deliveries.c.id.desc()).limit(limit))
            return [{"id": row.id, "account_id": row.account_id, "seq": row.seq,
                     "event": row.event_type, "status_code": row.status_code,
                     "error": row.error, "ok": row.error is None,
                     "duration_ms": row.duration_ms, "attempted_at": iso(row.attempted_at),
                     "next_retry_at": iso(row.next_retry_at)} for row in rows]

    # --- delivery: leases ----------------------------------------------------------------

    async def due(self, now: datetime, limit: int) -> list[str]:
        """Enabled endpoints no instance holds and no backoff holds back."""
        async with self.db.read(snapshot=False) as uow:
            rows = await uow.conn.execute(
                sa.select(endpoints.c.id).where(_leasable(now)).order_by(endpoints.c.id)
                .limit(limit))
            return [row.id for row in rows]

    async def acquire(self, endpoint_id: str, owner: str, now: datetime,
                      until: datetime) -> Endpoint | None:
        """Take the endpoint's lease, or None when another instance holds it (or it is not
        due). One conditional UPDATE: on PostgreSQL a second taker waits on the row lock and
        then finds the condition false; SQLite runs writers one at a time."""
        async with self.db.transaction() as uow:
            taken = await uow.conn.execute(
                sa.update(endpoints).where(endpoints.c.id == endpoint_id, _leasable(now))
                .values(lease_owner=owner, lease_until=until))
            if not taken.rowcount:
                return None
            row = (await uow.conn.execute(
                sa.select(endpoints).where(endpoints.c.id == endpoint_id))).one()
            return _endpoint(row)

    async def renew(self, endpoint_id: str, owner: str, now: datetime, until: datetime) -> bool:
        """Extend a lease still held; False when it has lapsed (or the endpoint is gone)."""
        async with self.db.transaction() as uow:
            renewed = await uow.conn.execute(
                sa.update(endpoints).where(endpoints.c.id == endpoint_id,
                                           endpoints.c.lease_owner == owner,
                                           endpoints.c.lease_until > now,
                                           endpoints.c.status == ENABLED)
                .values(lease_until=until))
            return bool(renewed.rowcount)

    async def release(self, endpoint_id: str, owner: str) -> None:
        async with self.db.transaction() as uow:
            await uow.conn.execute(
                sa.update(endpoints).where(endpoints.c.id == endpoint_id,
                                           endpoints.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None))

    # --- delivery: the stream ------------------------------------------------------------

    async def pending(self, endpoint_id: str, limit: int,
                      among: list[str] | None = None) -> list[Pending]:
        """Accounts whose head is past the endpoint's cursor, with the cursor (0: none yet,
        an account created after the endpoint) and when the first event past it was written
        (the delivery lag). `among`: only these accounts."""
        if among is not None and not among:
            return []
        condition = sa.and_(cursors.c.endpoint_id == endpoint_id,
                            cursors.c.account_id == accounts.c.id)
        position = sa.func.coalesce(cursors.c.seq, 0)
        first_at = (sa.select(sa.func.min(events.c.created_at))
                    .where(events.c.account_id == accounts.c.id, events.c.seq == position + 1)
                    .scalar_subquery())
        query = (sa.select(accounts.c.id, position.label("after"), first_at.label("first_at"))
                 .select_from(accounts.outerjoin(cursors, condition))
                 .where(accounts.c.seq > position).order_by(accounts.c.id))
        found: list[Pending] = []
        async with self.db.read() as uow:
            for chunk in _chunks(among):
                narrowed = query if chunk is None else query.where(accounts.c.id.in_(chunk))
                rows = await uow.conn.execute(narrowed.limit(limit - len(found)))
                found += [Pending(row.id, int(row.after), _utc(row.first_at)) for row in rows]
                if len(found) >= limit:
                    break
        return found

    async def moved_since(self, since: datetime) -> list[str]:
        """Accounts with an event created at or after `since` (a range of the created_at index)."""
        async with self.db.read(snapshot=False) as uow:
            rows = await uow.conn.execute(
                sa.select(events.c.account_id).where(events.c.created_at >= since).distinct())
            return [row.account_id for row in rows]

    async def events_for(self, cursors_of: list[tuple[str, int]], per_account: int,
                         limit: int) -> dict[str, list[Journaled]]:
        """Per account, its first events past its cursor (at most `per_account` each, `limit`
        in all), in seq order: one query for a whole pass."""
        found: dict[str, list[Journaled]] = {}
        for start in range(0, len(cursors_of), IN_CHUNK):
            chunk = cursors_of[start:start + IN_CHUNK]
            past = sa.or_(*(sa.and_(events.c.account_id == account_id, events.c.seq > after)
                            for account_id, after in chunk))
            rank = sa.func.row_number().over(partition_by=events.c.account_id,
                                             order_by=events.c.seq).label("rank")
            ranked = (sa.select(events.c.account_id, events.c.seq, events.c.type,
                                events.c.payload, events.c.created_at, rank)
                      .where(past).subquery())
            query = (sa.select(ranked).where(ranked.c.rank <= per_account)
                     .order_by(ranked.c.account_id, ranked.c.seq)
                     .limit(limit - sum(len(v) for v in found.values())))
            async with self.db.read(snapshot=False) as uow:
                for row in await uow.conn.execute(query):
                    found.setdefault(row.account_id, []).append(Journaled(
                        int(row.seq), row.type, dict(row.payload), _utc(row.created_at)
                        or row.created_at))
            if sum(len(v) for v in found.values()) >= limit:
                break
        return found

    async def record(self, endpoint_id: str, positions: dict[str, int],
                     attempts: list[Attempt], outcome: Outcome, now: datetime) -> bool:
        """A pass's end, in one transaction: each account's cursor moves to its position
        (never back), the attempts are kept, and the endpoint's health becomes `outcome`
        (disabled, with its reason, when the retry window is over). False, and nothing
        written, for an endpoint deleted meanwhile: its row is locked first (FOR KEY SHARE,
        which `delete`'s FOR UPDATE waits for, and the other way round), so no cursor is
        written once its deletion began."""
        async with self.db.transaction() as uow:
            conn = uow.conn
            exists = (await conn.execute(
                sa.select(endpoints.c.id).where(endpoints.c.id == endpoint_id)
                .with_for_update(read=True, key_share=True))).first()  # `delete` waits for this commit
            if exists is None:
                return False
            if positions:
                await _advance(conn, endpoint_id, positions)
            if attempts:
                await conn.execute(sa.insert(deliveries), [a.row(endpoint_id) for a in attempts])
            health: dict[str, Any] = {
                "failing_since": outcome.failing_since, "failures": outcome.failures,
                "next_attempt_at": outcome.next_attempt_at}
            if outcome.disabled_reason is not None:
                health.update(status=DISABLED, disabled_reason=outcome.disabled_reason[:1024],
                              disabled_at=now, lease_owner=None, lease_until=None)
            await conn.execute(sa.update(endpoints).where(endpoints.c.id == endpoint_id)
                               .values(**health))
            return True

    async def purge_attempts(self, older_than: datetime) -> int:
        async with self.db.transaction() as uow:
            gone = await uow.conn.execute(
                sa.delete(deliveries).where(deliveries.c.attempted_at < older_than))
            return int(gone.rowcount or 0)


def _leasable(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(endpoints.c.status == ENABLED,
                   sa.or_(endpoints.c.lease_until.is_(None), endpoints.c.lease_until <= now),
                   sa.or_(endpoints.c.next_attempt_at.is_(None),
                          endpoints.c.next_attempt_at <= now))


async def _advance(conn: AsyncConnection, endpoint_id: str, positions: dict[str, int]) -> None:
    insert = dialect_insert(conn, cursors)
    await conn.execute(insert.on_conflict_do_update(
        index_elements=["endpoint_id", "account_id"],
        set_={"seq": sa.case((cursors.c.seq > insert.excluded.seq, cursors.c.seq),
                             else_=insert.excluded.seq)}),
        [{"endpoint_id": endpoint_id, "account_id": account_id, "seq": seq}
         for account_id, seq in sorted(positions.items())])


async def _claim(conn: AsyncConnection, key: IdempotencyKey, now: datetime) -> Keyed | None:
    """None when the key is now ours; else the first answer (or a refusal) to send back."""
    claimed = await conn.execute(
        dialect_insert(conn, idempotency_keys)
        .values(scope=key.scope, key=key.key, fingerprint=key.fingerprint, status=IN_PROGRESS,
                created_at=now, locked_at=now)
        .on_conflict_do_nothing(index_elements=["scope", "key"]))
    if claimed.rowcount:
        return None
    row = (await conn.execute(sa.select(idempotency_keys).where(
        idempotency_keys.c.scope == key.scope, idempotency_keys.c.key == key.key))).one()
    if row.fingerprint != key.fingerprint:
        return Keyed(422, {"error": {"code": "idempotency_key_reused", "message":
                                     "This Idempotency-Key was used with another request"}},
                     False)
    if row.response_status is None:
        return Keyed(409, {"error": {"code": "request_in_progress", "message":
                                     "A request with this Idempotency-Key is still running"}},
                     False)
    return Keyed(int(row.response_status), json.loads(row.response_body), True)


def _chunks(among: list[str] | None) -> list[list[str] | None]:
    if among is None:
        return [None]
    return [among[i:i + IN_CHUNK] for i in range(0, len(among), IN_CHUNK)]


def _utc(stamp: datetime | None) -> datetime | None:
    if stamp is None or stamp.tzinfo is not None:
        return stamp
    return stamp.replace(tzinfo=UTC)


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(row.id, row.url, tuple(row.events), row.secret, row.status,
                    row.disabled_reason, row.created_at, row.disabled_at, row.failing_since,
                    int(row.failures), row.next_attempt_at)
