"""Retention on both databases: the stream journal's events older than the window and idempotency
keys older than theirs go, oldest first, in bounded batches; everything newer stays; the sweeper
comes back for the rest on its next pass rather than in one long transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from asgi import load_catalogue
from background.sweeper import KEY_RETENTION, Sweeper
from config import ConfigError, Settings
from core.service import CreditService
from storage.audit import audit
from storage.retention import EventRetention
from storage.sql import Database
from storage.tables import events, idempotency_answers, idempotency_keys
from storage.writes.idempotency import PURGE_CHUNK, IdempotencyStore
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
        await uow.conn.execute(
            sa.insert(idempotency_answers),
            [
                {"scope": "tests", "key": key, "response_status": 201, "response_body": "{}"}
                for key in ("old", "young")
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
    async with db.read() as uow:
        answered = (await uow.conn.execute(sa.select(idempotency_answers.c.key))).scalars().all()
    assert answered == ["young"]  # an answer goes with its key, or the key's next claim fails
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


async def test_keys_purged_in_chunks_take_their_answers_and_their_keys_come_back_new(
    db: Database, clock: MutableClock
) -> None:
    """More keys than one DELETE takes (PURGE_CHUNK) go in one purge with their answers; a
    key purged can then be claimed and answered again."""
    now = clock.now()
    old = now - KEY_RETENTION - timedelta(minutes=1)
    count = PURGE_CHUNK + 7
    async with db.transaction() as uow:
        await uow.conn.execute(
            sa.insert(idempotency_keys),
            [
                {
                    "scope": "bulk",
                    "key": f"k{n}",
                    "fingerprint": "f",
                    "status": "in_progress",
                    "created_at": old,
                    "locked_at": old,
                }
                for n in range(count)
            ],
        )
        await uow.conn.execute(
            sa.insert(idempotency_answers),
            [
                {"scope": "bulk", "key": f"k{n}", "response_status": 201, "response_body": "{}"}
                for n in range(count)
            ],
        )
    store = IdempotencyStore(db)
    assert await store.purge(now - KEY_RETENTION, limit=count + 100) == count
    async with db.read() as uow:
        for table in (idempotency_keys, idempotency_answers):
            left = (await uow.conn.execute(sa.select(sa.func.count()).select_from(table))).scalar()
            assert left == 0, table.name
    from storage.writes.idempotency import IdempotencyKey
    from storage.writes.writer import BatchWriter

    async def nowhere(events: list[Any]) -> None:
        return None

    writer = BatchWriter(db, clock.now, nowhere)
    try:

        async def answer(uow: Any) -> tuple[int, dict[str, str]]:
            return 201, {"again": "yes"}

        result = await writer.run_keyed(answer, IdempotencyKey("bulk", "k3", "f"), lambda exc: None)
    finally:
        await writer.aclose()
    assert (result.status, result.body, result.replayed) == (201, {"again": "yes"}, False)
