"""A batch's lock and reads on PostgreSQL: the accounts (or the holds' owners) are locked and
their live grants (and the holds) read in one statement, on a snapshot taken before the lock. A
lock that waited for another transaction must not leave the batch with what that transaction
committed unseen: each test fails with the re-read in storage/writes/batch_pg.py removed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from asgi import load_catalogue
from core.account import Account
from core.events import Event
from core.model import Hold
from core.ports import UnitOfWork
from core.service import CreditService
from storage.sql import Database
from storage.writes.batch import Touches
from storage.writes.batch_session import batch_session
from storage.writes.idempotency import IdempotencyKey
from storage.writes.operation import OperationUnitOfWork
from storage.writes.writer import BatchWriter
from tests.support import MutableClock

T = TypeVar("T")


@pytest.fixture
def service(clock: MutableClock) -> CreditService:
    return CreditService(clock, load_catalogue(None))


@pytest.fixture
async def writer(pg_db: Database, clock: MutableClock) -> AsyncIterator[BatchWriter]:
    async def nowhere(events: list[Event]) -> None:
        pass

    batch_writer = BatchWriter(pg_db, clock.now, nowhere)
    yield batch_writer
    await batch_writer.aclose()


async def while_another_commits(
    db: Database,
    meanwhile: Callable[[UnitOfWork], Awaitable[Any]],
    locking: Callable[[], Awaitable[T]],
) -> T:
    """Start `locking` while a transaction of its own has done `meanwhile` and holds the
    account's lock; commit that transaction once `locking` waits for it; return what `locking`
    returned."""
    began = asyncio.Event()

    async def after_it_began() -> T:
        await began.wait()
        return await locking()

    task = asyncio.create_task(after_it_began())
    async with db.transaction() as uow:
        await meanwhile(uow)
        began.set()
        await asyncio.sleep(0.3)  # `locking` has taken its snapshot and waits for the lock
        assert not task.done()
    return await task


async def test_a_lock_that_waited_reads_the_grants_committed_meanwhile(
    pg_db: Database, service: CreditService
) -> None:
    async with pg_db.transaction() as uow:
        await service.grant(uow, "waited", 100, "purchase")

    async def lock() -> list[Account]:
        async with batch_session(pg_db) as session:
            return await session.lock_accounts(["waited"])

    (account,) = await while_another_commits(
        pg_db, lambda uow: service.grant(uow, "waited", 500, "purchase"), lock
    )
    assert 500 in [g.remaining for g in account.grants]
    assert sum(g.remaining for g in account.grants) == account.balance


async def test_a_hold_whose_lock_waited_is_funded_by_the_grant_committed_meanwhile(
    pg_db: Database, service: CreditService, writer: BatchWriter
) -> None:
    async with pg_db.transaction() as uow:
        await service.grant(uow, "funded", 100, "purchase")

    async def hold() -> tuple[Hold, Account]:
        return await writer.run(
            lambda uow: service.hold(uow, "funded", 550), Touches(accounts=("funded",))
        )

    opened, account = await while_another_commits(
        pg_db, lambda uow: service.grant(uow, "funded", 500, "purchase"), hold
    )
    assert (opened.amount, account.held) == (550, 550)
    assert sum(g.reserved for g in account.grants) == 550
    assert sum(g.remaining for g in account.grants) == account.balance


async def test_a_keyed_hold_claimed_with_the_lock_that_waited_sees_the_grant_committed_meanwhile(
    pg_db: Database, service: CreditService, writer: BatchWriter
) -> None:
    """A keyed batch naming accounts only claims its keys and locks the accounts in one
    statement (CLAIM_AND_LOCK): the same re-read applies there."""
    async with pg_db.transaction() as uow:
        await service.grant(uow, "keyed", 100, "purchase")

    async def hold(uow: OperationUnitOfWork) -> tuple[int, Any]:
        opened, _ = await service.hold(uow, "keyed", 550)
        return 201, opened.to_dict()

    def refusal(exc: Exception) -> tuple[int, Any] | None:
        return None

    key = IdempotencyKey("scope", "key-1", "fingerprint")
    touches = Touches(accounts=("keyed",))
    answer = await while_another_commits(
        pg_db,
        lambda uow: service.grant(uow, "keyed", 500, "purchase"),
        lambda: writer.run_keyed(hold, key, refusal, touches),
    )
    replay = await writer.run_keyed(hold, key, refusal, touches)
    assert (answer.status, answer.body["amount"], answer.replayed) == (201, 550, False)
    assert (replay.body, replay.replayed) == (answer.body, True)
    async with pg_db.read() as uow:
        account = await uow.accounts.get("keyed")
    assert account is not None and account.held == 550


async def test_a_lock_by_hold_that_waited_reads_the_hold_as_committed_meanwhile(
    pg_db: Database, service: CreditService
) -> None:
    """A batch naming a hold locks its owner and reads the owner's grants and the hold in one
    statement (LOCK_OWNERS_WITH_GRANTS_AND_HOLDS): when the lock waited for a transaction that
    released the hold, the batch reads the hold released, and the grants it freed."""
    async with pg_db.transaction() as uow:
        await service.grant(uow, "by-hold", 100, "purchase")
        opened, _ = await service.hold(uow, "by-hold", 60)

    async def lock_by_the_hold() -> tuple[list[Account], list[Hold]]:
        async with batch_session(pg_db) as session:
            locked = await session.lock_accounts([], [opened.hold_id])
            return locked, await session.holds([opened.hold_id])

    (account,), (hold,) = await while_another_commits(
        pg_db, lambda uow: service.release(uow, opened.hold_id), lock_by_the_hold
    )
    assert hold.status == Hold.RELEASED
    assert account.held == 0 and sum(g.reserved for g in account.grants) == 0
