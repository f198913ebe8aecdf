"""Batches on the accounts this process last committed (and on the holds committed with them)
skip the locking read: they apply on the remembered state, and their write locks the accounts and checks each row's version before any
of it counts (storage/writes/committed_accounts.py). A row changed anywhere else — another
instance, a transaction that holds the lock meanwhile, an operator's SQL — sends the batch back to
the locking read, so no answer is ever given on a stale balance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from asgi import load_catalogue
from core.errors import CreditError, IdempotencyKeyReused, InsufficientCredits, InvalidState
from core.events import Event
from core.service import CreditService
from storage.connection_errors import DatabaseUnavailable
from storage.sql import Database
from storage.writes.batch import Touches
from storage.writes.committed_accounts import CommittedAccounts
from storage.writes.idempotency import IdempotencyKey, KeyedResult
from storage.writes.writer import BatchWriter
from tests.support import MutableClock, audit_mismatches


async def _nowhere(events: list[Event]) -> None:
    return None


@pytest.fixture
def service(clock: MutableClock) -> CreditService:
    return CreditService(clock, load_catalogue(None))


@pytest.fixture
async def instances(pg_url: str, clock: MutableClock) -> AsyncIterator[list[BatchWriter]]:
    """Two instances' writers on one database, each with a pool of its own."""
    from storage.migrate import upgrade_async

    await upgrade_async(pg_url)
    dbs = [Database.from_url(pg_url, pool_size=4) for _ in range(2)]
    writers = [BatchWriter(d, clock.now, _nowhere) for d in dbs]
    yield writers
    for writer in writers:
        await writer.aclose()
    for db in dbs:
        await db.dispose()


def remembered(writer: BatchWriter) -> CommittedAccounts:
    assert writer.remembered is not None
    return writer.remembered


async def hold(writer: BatchWriter, service: CreditService, account: str, amount: int) -> int:
    opened, _ = await writer.run(
        lambda uow: service.hold(uow, account, amount), Touches(accounts=(account,))
    )
    return opened.amount


async def grant(writer: BatchWriter, service: CreditService, account: str, amount: int) -> None:
    await writer.run(
        lambda uow: service.grant(uow, account, amount, "purchase"), Touches(accounts=(account,))
    )


async def balance_and_held(db: Database, account: str) -> tuple[int, int]:
    async with db.read() as uow:
        state = await uow.accounts.get(account)
    assert state is not None
    return state.balance, state.held


async def test_a_batch_on_accounts_it_committed_skips_the_locking_read(
    instances: list[BatchWriter], service: CreditService, pg_url: str
) -> None:
    writer = instances[0]
    await writer.run(lambda uow: service.grant(uow, "known", 100, "purchase"))  # no hint: locks
    assert remembered(writer).hits == 0 and len(remembered(writer)) == 1
    balance, _ = await balance_and_held(writer.db, "known")  # the grant and the signup bonus
    amounts = await asyncio.gather(*(hold(writer, service, "known", 7) for _ in range(10)))
    assert amounts == [7] * 10
    assert remembered(writer).hits >= 1, "expected the holds to apply on the remembered account"
    assert remembered(writer).stale == 0, "nothing else wrote the account"
    assert await balance_and_held(writer.db, "known") == (balance, 70)
    with pytest.raises(InsufficientCredits):
        await hold(writer, service, "known", balance - 70 + 1)
    assert await audit_mismatches(pg_url) == []


async def test_credits_spent_by_another_instance_are_not_spent_again(
    instances: list[BatchWriter], service: CreditService, pg_url: str
) -> None:
    here, there = instances
    await grant(here, service, "spent", 100)
    balance, _ = await balance_and_held(here.db, "spent")
    await hold(here, service, "spent", 60)  # here remembers balance - 60 free
    await there.run(
        lambda uow: service.charge(uow, "spent", balance - 60, "elsewhere"),
        Touches(accounts=("spent",)),
    )
    with pytest.raises(InsufficientCredits):
        await hold(here, service, "spent", 10)
    assert remembered(here).stale == 1, "expected the remembered account to be found stale"
    assert await balance_and_held(here.db, "spent") == (60, 60)
    hits = remembered(here).hits
    await grant(here, service, "spent", 5)  # forgotten: locks, and is remembered again
    await grant(here, service, "spent", 5)
    assert (remembered(here).hits, remembered(here).stale) == (hits + 1, 1)
    await grant(there, service, "spent", 5)  # changed elsewhere again, soon after
    await grant(here, service, "spent", 5)
    await grant(here, service, "spent", 5)  # not remembered for a while: both lock
    assert (remembered(here).hits, remembered(here).stale) == (hits + 1, 2)
    assert len(remembered(here)) == 0
    assert await audit_mismatches(pg_url) == []


async def test_credits_granted_by_another_instance_fund_a_hold_the_remembered_state_refuses(
    instances: list[BatchWriter], service: CreditService
) -> None:
    here, there = instances
    await grant(here, service, "topped", 10)
    balance, _ = await balance_and_held(here.db, "topped")
    await hold(here, service, "topped", balance)  # here remembers nothing free
    await grant(there, service, "topped", 100)
    assert await hold(here, service, "topped", 50) == 50
    assert remembered(here).stale == 1
    assert await balance_and_held(here.db, "topped") == (balance + 100, balance + 50)


async def test_an_operators_sql_between_two_batches_is_seen(
    instances: list[BatchWriter], service: CreditService, pg_url: str
) -> None:
    writer = instances[0]
    await grant(writer, service, "by-hand", 100)
    async with writer.db.engine.begin() as conn:  # a grant drained by hand, with its account
        await conn.execute(sa.text("UPDATE grants SET remaining = 0 WHERE account_id = 'by-hand'"))
        await conn.execute(sa.text("UPDATE accounts SET balance = 0 WHERE id = 'by-hand'"))
    with pytest.raises(InsufficientCredits):
        await hold(writer, service, "by-hand", 1)
    assert remembered(writer).stale == 1


async def test_a_batch_whose_write_waits_for_a_lock_sees_what_that_lock_committed(
    instances: list[BatchWriter], service: CreditService
) -> None:
    """The write locks the remembered accounts first; one locked by a transaction that then
    grants credits waits for its commit, finds the row changed, and runs again on it."""
    here, there = instances
    await grant(here, service, "waited", 10)
    balance, _ = await balance_and_held(here.db, "waited")
    await hold(here, service, "waited", balance)
    began = asyncio.Event()

    async def hold_once_it_began() -> int:
        await began.wait()
        return await hold(here, service, "waited", 50)

    task = asyncio.create_task(hold_once_it_began())
    async with there.db.transaction() as uow:
        await service.grant(uow, "waited", 100, "purchase")  # holds the account's lock
        began.set()
        await asyncio.sleep(0.3)
        assert not task.done(), "expected the write to wait for the account's lock"
    assert await task == 50
    assert remembered(here).stale == 1
    assert await balance_and_held(here.db, "waited") == (balance + 100, balance + 50)


async def test_a_batch_that_failed_as_a_whole_forgets_every_account(
    instances: list[BatchWriter], service: CreditService
) -> None:
    writer = instances[0]
    for account in ("lost-a", "lost-b"):
        await grant(writer, service, account, 10)
    assert len(remembered(writer)) == 2
    async with writer.db.engine.begin() as conn:  # the writer's kept connections are cut
        await conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    with pytest.raises(DatabaseUnavailable):
        await hold(writer, service, "lost-a", 1)
    assert len(remembered(writer)) == 0
    assert await hold(writer, service, "lost-a", 1) == 1  # a fresh connection locks again


async def test_two_instances_racing_on_remembered_accounts_keep_the_ledger(
    instances: list[BatchWriter], service: CreditService, pg_url: str
) -> None:
    accounts = ["race-a", "race-b", "race-c"]
    for account in accounts:
        await grant(instances[0], service, account, 200)
        await grant(instances[1], service, account, 1)  # both instances remember them

    async def one(i: int) -> str:
        writer, account = instances[i % 2], accounts[(i // 2) % 3]
        try:
            if i % 5 == 0:
                await writer.run(
                    lambda uow: service.charge(uow, account, 3, f"c-{i}"),
                    Touches(accounts=(account,)),
                )
            else:
                await hold(writer, service, account, 2)
        except InsufficientCredits:
            return "refused"
        return "done"

    results = await asyncio.gather(*(one(i) for i in range(600)))
    assert results.count("refused") > 0, "expected the accounts to run dry"
    assert sum(remembered(w).hits + remembered(w).stale for w in instances) > 0
    assert await audit_mismatches(pg_url) == []
    async with instances[0].db.read() as uow:
        for account in accounts:
            state = await uow.accounts.get(account)
            assert state is not None and 0 <= state.held <= state.balance
            seqs = (
                await uow.conn.execute(
                    sa.text("SELECT seq FROM events WHERE account_id = :a ORDER BY seq"),
                    {"a": account},
                )
            ).scalars()
            assert list(seqs) == list(range(1, state.seq + 1)), "expected every event, in order"


async def charge_keyed(
    writer: BatchWriter, service: CreditService, account: str, key: IdempotencyKey
) -> KeyedResult:
    async def charge(uow: Any) -> tuple[int, Any]:
        made, _ = await service.charge(uow, account, 5, "keyed")
        return 201, {"charge_id": made["charge_id"]}

    return await writer.run_keyed(charge, key, _refusal, Touches(accounts=(account,)))


def _refusal(exc: Exception) -> tuple[int, Any] | None:
    return (402, {"error": exc.code}) if isinstance(exc, CreditError) else None


async def test_keys_are_claimed_with_the_write_and_a_repeat_replays_its_answer(
    instances: list[BatchWriter], service: CreditService, pg_url: str
) -> None:
    writer, other = instances
    await grant(writer, service, "keyed", 100)
    keys = [IdempotencyKey("scope", f"k{i}", "fp") for i in range(8)]
    first = await asyncio.gather(*(charge_keyed(writer, service, "keyed", k) for k in keys))
    assert remembered(writer).hits >= 1 and remembered(writer).stale == 0
    assert not any(r.replayed for r in first)
    hits = remembered(writer).hits
    again = await charge_keyed(writer, service, "keyed", keys[3])  # claimed here: the usual way
    assert again.replayed and again.body == first[3].body
    assert (remembered(writer).hits, remembered(writer).stale) == (hits, 0)
    elsewhere = IdempotencyKey("scope", "elsewhere", "fp")
    answered = await charge_keyed(other, service, "keyed", elsewhere)
    repeat = await charge_keyed(writer, service, "keyed", elsewhere)  # claimed as new: fails
    assert repeat.replayed and repeat.body == answered.body
    assert remembered(writer).stale == 1
    with pytest.raises(IdempotencyKeyReused):
        await charge_keyed(writer, service, "keyed", IdempotencyKey("scope", "k0", "other"))
    async with writer.db.read() as uow:
        claims = (
            await uow.conn.execute(sa.text("SELECT count(*) FROM idempotency_keys"))
        ).scalar_one()
        answers = (
            await uow.conn.execute(sa.text("SELECT count(*) FROM idempotency_answers"))
        ).scalar_one()
    assert (claims, answers) == (9, 9)
    assert await audit_mismatches(pg_url) == []


async def test_one_key_sent_to_two_instances_on_remembered_accounts_has_one_effect(
    instances: list[BatchWriter], service: CreditService
) -> None:
    for writer in instances:
        await grant(writer, service, "shared-key", 500)  # both remember the account
    key = IdempotencyKey("scope", "same", "fp")
    results = await asyncio.gather(
        *(charge_keyed(instances[i % 2], service, "shared-key", key) for i in range(12))
    )
    assert len({str(r.body) for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    async with instances[0].db.read() as uow:
        charged = (
            await uow.conn.execute(
                sa.text("SELECT count(*) FROM entries WHERE type = 'charge' AND account_id = :a"),
                {"a": "shared-key"},
            )
        ).scalar_one()
    assert charged == 1


async def test_a_key_whose_operation_failed_unexpectedly_is_not_claimed(
    instances: list[BatchWriter], service: CreditService
) -> None:
    writer = instances[0]
    await grant(writer, service, "flaky", 100)
    key = IdempotencyKey("scope", "flaky", "fp")
    attempts: list[int] = []

    async def flaky(uow: Any) -> tuple[int, Any]:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("a bug, not a refusal")
        made, _ = await service.charge(uow, "flaky", 5, "flaky")
        return 201, {"charge_id": made["charge_id"]}

    touches = Touches(accounts=("flaky",))
    with pytest.raises(RuntimeError):
        await writer.run_keyed(flaky, key, _refusal, touches)
    retried = await writer.run_keyed(flaky, key, _refusal, touches)
    assert retried.status == 201 and not retried.replayed
    assert remembered(writer).hits == 2 and remembered(writer).stale == 0


async def open_hold(writer: BatchWriter, service: CreditService, account: str, amount: int) -> str:
    opened, _ = await writer.run(
        lambda uow: service.hold(uow, account, amount), Touches(accounts=(account,))
    )
    return opened.hold_id


async def capture(writer: BatchWriter, service: CreditService, hold_id: str) -> str:
    captured, _ = await writer.run(
        lambda uow: service.capture(uow, hold_id), Touches(holds=(hold_id,))
    )
    return captured.status


async def test_a_hold_committed_here_is_captured_without_the_locking_read(
    instances: list[BatchWriter], service: CreditService, pg_url: str
) -> None:
    writer = instances[0]
    await grant(writer, service, "cycle", 100)
    balance, _ = await balance_and_held(writer.db, "cycle")
    hold_ids = [await open_hold(writer, service, "cycle", 5) for _ in range(4)]
    hits = remembered(writer).hits
    assert (
        await asyncio.gather(*(capture(writer, service, h) for h in hold_ids)) == ["captured"] * 4
    )
    assert remembered(writer).hits > hits and remembered(writer).stale == 0
    assert await balance_and_held(writer.db, "cycle") == (balance - 20, 0)
    assert await capture(writer, service, hold_ids[0]) == "captured"  # a repeat: a no-op
    assert await balance_and_held(writer.db, "cycle") == (balance - 20, 0)
    assert await audit_mismatches(pg_url) == []


async def test_a_hold_released_by_another_instance_is_not_captured_here(
    instances: list[BatchWriter], service: CreditService, pg_url: str
) -> None:
    here, there = instances
    await grant(here, service, "released", 100)
    balance, _ = await balance_and_held(here.db, "released")
    hold_id = await open_hold(here, service, "released", 30)  # here remembers it open
    await there.run(lambda uow: service.release(uow, hold_id), Touches(holds=(hold_id,)))
    with pytest.raises(InvalidState):
        await capture(here, service, hold_id)
    assert remembered(here).stale == 1
    assert await balance_and_held(here.db, "released") == (balance, 0)
    assert await audit_mismatches(pg_url) == []


async def test_a_hold_not_read_by_the_accounts_last_commit_here_is_read_again(
    instances: list[BatchWriter], service: CreditService
) -> None:
    """A commit of the account that did not read the hold leaves the remembered hold behind
    the account's version: another instance may have ended it in between."""
    here, there = instances
    await grant(here, service, "behind", 100)
    hold_id = await open_hold(here, service, "behind", 30)
    await there.run(lambda uow: service.release(uow, hold_id), Touches(holds=(hold_id,)))
    await hold(here, service, "behind", 1)  # stale: runs again, the account remembered anew
    assert remembered(here).stale == 1
    with pytest.raises(InvalidState):
        await capture(here, service, hold_id)
    assert remembered(here).stale == 1, "expected the hold's capture to lock first"
