"""Retention on both databases: the stream journal's events older than the window and idempotency
keys older than theirs go, oldest first, in bounded batches; everything newer stays; the sweeper
comes back for the rest on its next pass rather than in one long transaction."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from asgi import load_catalogue
from background.sweeper import KEY_RETENTION, Sweeper
from config import ConfigError, Settings
from core.service import CreditService
from storage.audit import audit
from storage.retention import EventRetention
from storage.sql import Database
from storage.tables import events, idempotency_keys
from storage.writes.idempotency import IdempotencyStore
from tests.support import MutableClock

WINDOW = timedelta(days=7)


@pytest.fixture
def service(clock: MutableClock) -> CreditService:
    return CreditService(clock, load_catalogue(None))


async def write_events(db: Database, account: str, seqs: range, at: datetime) -> None:
    rows = [
        {
            "account_id": account,
            "seq": seq,
            "type": "balance.updated",
            "payload": {"type": "balance.updated", "account_id": account, "seq": seq},
            "created_at": at + timedelta(seconds=seq),
        }
        for seq in seqs
    ]
    async with db.transaction() as uow:
        await uow.conn.execute(sa.insert(events), rows)


async def kept(db: Database) -> list[tuple[str, int]]:
    async with db.read() as uow:
        rows = await uow.conn.execute(
            sa.select(events.c.account_id, events.c.seq).order_by(events.c.account_id, events.c.seq)
        )
        return [(r.account_id, int(r.seq)) for r in rows]


async def test_events_past_the_window_go_in_bounded_batches_oldest_first(
    db: Database, clock: MutableClock
) -> None:
    now = clock.now()
    await write_events(db, "a", range(1, 8), now - WINDOW - timedelta(hours=1))  # 7 old
    await write_events(db, "b", range(1, 6), now - WINDOW - timedelta(hours=2))  # 5 old
    await write_events(db, "a", range(8, 11), now - timedelta(days=6))  # inside
    retention = EventRetention(db, WINDOW, batch=4, batches_per_pass=2)

    first = await retention.prune(now)
    assert (first.deleted, first.more) == (8, True)  # the budget, with more due
    # oldest first: b's five (two hours past) before a's, so no account keeps a hole
    assert [k for k in await kept(db) if k[0] == "b"] == []
    assert [s for a, s in await kept(db) if a == "a"] == list(range(4, 11))

    second = await retention.prune(now)
    assert (second.deleted, second.more) == (4, False)
    assert await kept(db) == [("a", seq) for seq in range(8, 11)]
    assert (await retention.prune(now)).deleted == 0


async def test_the_sweeper_prunes_events_and_keys_past_their_retention(
    db: Database, service: CreditService, clock: MutableClock
) -> None:
    now = clock.now()
    await write_events(db, "a", range(1, 4), now - WINDOW - timedelta(minutes=5))
    await write_events(db, "a", range(4, 6), now - WINDOW + timedelta(minutes=5))
    async with db.transaction() as uow:
        await uow.conn.execute(
            sa.insert(idempotency_keys),
            [
                {
                    "scope": "tests",
                    "key": key,
                    "fingerprint": "f",
                    "status": "done",
                    "created_at": at,
                    "locked_at": at,
                }
                for key, at in (
                    ("old", now - KEY_RETENTION - timedelta(seconds=1)),
                    ("young", now - KEY_RETENTION + timedelta(seconds=1)),
                )
            ],
        )
    sweeper = Sweeper(
        db, service, IdempotencyStore(db), events_retention=EventRetention(db, WINDOW)
    )
    report = await sweeper.run_once()
    assert (report.events_pruned, report.keys_purged) == (3, 1)
    assert await kept(db) == [("a", 4), ("a", 5)]
    async with db.read() as uow:
        keys = (await uow.conn.execute(sa.select(idempotency_keys.c.key))).scalars().all()
    assert keys == ["young"]
    clock.advance(minutes=10)  # the next minute's prune: the two left have aged out too
    sweeper.runs = 0
    assert (await sweeper.run_once()).events_pruned == 2


async def test_the_audit_accepts_a_pruned_prefix_and_flags_a_hole(
    db: Database, service: CreditService, clock: MutableClock
) -> None:
    for _ in range(3):
        async with db.transaction() as uow:
            await service.grant(uow, "kept", 5, "purchase")
        async with db.transaction() as uow:
            await service.grant(uow, "idle", 5, "purchase")
    clock.advance(days=8)
    async with db.transaction() as uow:
        await service.grant(uow, "kept", 5, "purchase")  # its last event, inside the window
    assert (await EventRetention(db, WINDOW).prune(clock.now())).deleted > 0
    async with db.read() as uow:
        _, mismatches = await audit(uow.conn, clock.now())
    assert mismatches == []  # "kept" has a suffix, "idle" none: both past the window only
    async with db.transaction() as uow:
        await uow.conn.execute(sa.delete(events).where(events.c.account_id == "kept"))
    async with db.read() as uow:
        _, mismatches = await audit(uow.conn, clock.now())
    assert [(m.account_id, m.field) for m in mismatches] == [
        ("kept", "seq (its recent events are gone)")
    ]


def test_the_retention_setting_keeps_at_least_the_seven_days_g5_promises() -> None:
    assert Settings.from_env({}).events_retention_days == 7
    assert (
        Settings.from_env({"CREDITSTREAM_EVENTS_RETENTION_DAYS": "30"}).events_retention_days == 30
    )
    with pytest.raises(ConfigError, match="at least 7"):
        Settings.from_env({"CREDITSTREAM_EVENTS_RETENTION_DAYS": "3"})
