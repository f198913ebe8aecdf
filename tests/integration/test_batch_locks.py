"""A batch's lock and reads on PostgreSQL: the accounts are locked and their live grants read in
one statement, on a snapshot taken before the lock. A lock that waited for another transaction
must not leave the batch with the grants as they were before that transaction committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asgi import load_catalogue
from core.account import Account
from core.events import Event
from core.model import Hold
from core.service import CreditService
from storage.migrate import upgrade_async
from storage.sql import Database
from storage.writes.batch import Touches
from storage.writes.batch_session import batch_session
from storage.writes.idempotency import IdempotencyKey, KeyedResult
from storage.writes.operation import OperationUnitOfWork
from storage.writes.writer import BatchWriter
from tests.support import MutableClock


@pytest.fixture
async def pg_db(pg_url: str) -> AsyncIterator[Database]:
    await upgrade_async(pg_url)
    database = Database.from_url(pg_url, pool_size=5)
    yield database
    await database.dispose()


@pytest.fixture
def service(clock: MutableClock) -> CreditService:
    return CreditService(clock, load_catalogue(None))


async def _locked(db: Database, account_id: str) -> list[Account]:
    async with batch_session(db) as session:
        return await session.lock_accounts([account_id])


async def test_a_lock_that_waited_reads_the_grants_committed_meanwhile(
    pg_db: Database, service: CreditService
) -> None:
    async with pg_db.transaction() as uow:
        await service.grant(uow, "waited", 100, "purchase")
    granting = asyncio.Event()

    async def lock_after_the_grant_began() -> list[Account]:
        await granting.wait()
        return await _locked(pg_db, "waited")

    reader = asyncio.create_task(lock_after_the_grant_began())
    async with pg_db.transaction() as uow:
        await service.grant(uow, "waited", 500, "purchase")
        granting.set()
        await asyncio.sleep(0.3)  # the reader has taken its snapshot and waits for the lock
        assert not reader.done()
    (account,) = await reader
    assert 500 in [g.remaining for g in account.grants]
    assert sum(g.remaining for g in account.grants) == account.balance


async def test_a_hold_whose_lock_waited_is_funded_by_the_grant_committed_meanwhile(
    pg_db: Database, service: CreditService, clock: MutableClock
) -> None:
    async with pg_db.transaction() as uow:
        await service.grant(uow, "funded", 100, "purchase")

    async def nowhere(events: list[Event]) -> None:
        pass

    writer = BatchWriter(pg_db, clock.now, nowhere)
    granting = asyncio.Event()

    async def hold_after_the_grant_began() -> tuple[Hold, Account]:
        await granting.wait()
        return await writer.run(
            lambda uow: service.hold(uow, "funded", 550), Touches(accounts=("funded",))
        )

    holding = asyncio.create_task(hold_after_the_grant_began())
    try:
        async with pg_db.transaction() as uow:
            await service.grant(uow, "funded", 500, "purchase")
            granting.set()
            await asyncio.sleep(0.3)
            assert not holding.done()
        hold, account = await holding
    finally:
        await writer.aclose()
    assert (hold.amount, account.held) == (550, 550)
    assert sum(g.reserved for g in account.grants) == 550
    assert sum(g.remaining for g in account.grants) == account.balance


async def test_a_keyed_hold_claimed_with_the_lock_that_waited_sees_the_grant_committed_meanwhile(
    pg_db: Database, service: CreditService, clock: MutableClock
) -> None:
    """A keyed batch naming accounts only claims its keys and locks the accounts in one
    statement (CLAIM_AND_LOCK): the same re-read applies there."""
    async with pg_db.transaction() as uow:
        await service.grant(uow, "keyed", 100, "purchase")

    async def nowhere(events: list[Event]) -> None:
        pass

    async def hold(uow: OperationUnitOfWork) -> tuple[int, Any]:
        opened, _ = await service.hold(uow, "keyed", 550)
        return 201, opened.to_dict()

    def refusal(exc: Exception) -> tuple[int, Any] | None:
        return None

    writer = BatchWriter(pg_db, clock.now, nowhere)
    key = IdempotencyKey("scope", "key-1", "fingerprint")
    granting = asyncio.Event()

    async def hold_after_the_grant_began() -> KeyedResult:
        await granting.wait()
        return await writer.run_keyed(hold, key, refusal, Touches(accounts=("keyed",)))

    holding = asyncio.create_task(hold_after_the_grant_began())
    try:
        async with pg_db.transaction() as uow:
            await service.grant(uow, "keyed", 500, "purchase")
            granting.set()
            await asyncio.sleep(0.3)
            assert not holding.done()
        answer = await holding
        replay = await writer.run_keyed(hold, key, refusal, Touches(accounts=("keyed",)))
    finally:
        await writer.aclose()
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
    releasing = asyncio.Event()

    async def lock_by_the_hold() -> tuple[list[Account], list[Hold]]:
        await releasing.wait()
        async with batch_session(pg_db) as session:
            locked = await session.lock_accounts([], [opened.hold_id])
            return locked, await session.holds([opened.hold_id])

    reader = asyncio.create_task(lock_by_the_hold())
    async with pg_db.transaction() as uow:
        await service.release(uow, opened.hold_id)
        releasing.set()
        await asyncio.sleep(0.3)
        assert not reader.done()
    (account,), (hold,) = await reader
    assert hold.status == Hold.RELEASED
    assert account.held == 0 and sum(g.reserved for g in account.grants) == 0
