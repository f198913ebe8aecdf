"""The hub's periodic journal check (issue 12, item 1): it asks the journal which accounts had
events since the last check, one indexed range scan, so idle subscribers cost nothing; and it
still finds an event committed but never published, even one committed late."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from asgi import load_catalogue
from core.service import CreditService
from realtime.feeds import QueueSink
from realtime.hub import Hub
from realtime.in_process_broker import InProcessBroker
from realtime.journal_check import CHECK_OVERLAP
from storage.journal import SqlEventJournal
from storage.sql import Database
from tests.support import MutableClock


class CountingJournal(SqlEventJournal):
    """The real journal, counting what each check asks for."""

    def __init__(self, db: Database, clock: MutableClock) -> None:
        super().__init__(db, clock)
        self.calls: list[tuple[str, Any]] = []

    async def heads(self, account_ids: list[str]) -> dict[str, int]:
        self.calls.append(("heads", len(account_ids)))
        return await super().heads(account_ids)

    async def moved_since(self, since: datetime) -> dict[str, int]:
        moved = await super().moved_since(since)
        self.calls.append(("moved_since", len(moved)))
        return moved


async def _grant(db: Database, service: CreditService, account_id: str) -> int:
    """A committed event that nobody publishes (a process killed after its commit)."""
    async with db.transaction() as uow:
        _, account = await service.grant(uow, account_id, 1, "promo")
    return account.seq


async def test_idle_subscribers_cost_nothing_and_a_lost_publish_is_still_found(
    db: Database, clock: MutableClock
) -> None:
    service = CreditService(clock, load_catalogue(None))
    accounts = [f"idle-{index}" for index in range(300)]
    for account_id in accounts:
        await _grant(db, service, account_id)
    journal = CountingJournal(db, clock)
    hub = Hub(journal, InProcessBroker(), poll_interval_s=3600)  # checks driven by the test
    await hub.start()
    try:
        sinks = {a: QueueSink(100, lambda: None) for a in accounts}
        for account_id in accounts:
            await hub.subscribe(account_id, sinks[account_id], after_seq=1)
        clock.advance(seconds=CHECK_OVERLAP.total_seconds() + 1)
        await hub.check_journal()  # its window still holds the grants above
        clock.advance(seconds=CHECK_OVERLAP.total_seconds() + 1)
        journal.calls.clear()

        await hub.check_journal()  # nothing written since: the check reads no account
        assert journal.calls == [("moved_since", 0)]

        lost = await _grant(db, service, accounts[7])
        clock.advance(seconds=0.5)
        journal.calls.clear()
        await hub.check_journal()
        assert journal.calls == [("moved_since", 1)]  # one account moved, 300 subscribed
        # the first check to see an event leaves it to Redis, where it may still be on its way
        assert hub.feeds[accounts[7]].head == lost - 1
        clock.advance(seconds=0.5)
        await hub.check_journal()  # the next finds it still missing: lost, filled
        assert hub.feeds[accounts[7]].head == lost
        assert f'"seq":{lost},' in list(sinks[accounts[7]].queue._queue)[-1]  # type: ignore[attr-defined]

        # an event whose created_at falls before the previous check (its transaction committed
        # after that check ran) is still found by the overlap
        clock.advance(seconds=1)
        await hub.check_journal()
        clock.advance(seconds=-CHECK_OVERLAP.total_seconds() / 2 - 1)
        late = await _grant(db, service, accounts[8])
        clock.advance(seconds=CHECK_OVERLAP.total_seconds() / 2 + 1.2)
        await hub.check_journal()
        await hub.check_journal()
        assert hub.feeds[accounts[8]].head == late
    finally:
        await hub.stop()
        await asyncio.sleep(0)


async def test_a_check_that_failed_is_retried_over_its_whole_window(
    db: Database, clock: MutableClock
) -> None:
    service = CreditService(clock, load_catalogue(None))
    await _grant(db, service, "window")
    journal = CountingJournal(db, clock)
    hub = Hub(journal, InProcessBroker(), poll_interval_s=3600)
    await hub.start()
    try:
        sink = QueueSink(100, lambda: None)
        await hub.subscribe("window", sink, after_seq=1)
        seq = await _grant(db, service, "window")
        real = journal.moved_since

        async def down(since: datetime) -> dict[str, int]:
            raise ConnectionError("database down")

        journal.moved_since = down  # type: ignore[method-assign]
        clock.advance(minutes=10)
        try:
            await hub.check_journal()
        except ConnectionError:
            pass
        journal.moved_since = real  # type: ignore[method-assign]
        clock.advance(minutes=10)
        await hub.check_journal()  # looks back to before the failed check, 20 minutes
        await hub.check_journal()  # and fills what it saw, one check later
        assert hub.feeds["window"].head == seq
    finally:
        await hub.stop()


def test_the_overlap_is_short() -> None:
    assert CHECK_OVERLAP <= timedelta(seconds=5)
