"""The group-commit writer: refusals and failures stay with their own operation, keys are
claimed across writers (instances), and the connections used do not grow with the callers."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

import metrics
from core.errors import ConcurrentUpdate, CreditError, InsufficientCredits, RequestInProgress
from core.events import Event
from core.model import Hold
from core.service import CreditService
from storage.sql import Database
from storage.tables import entries, holds, idempotency_keys
from storage.writes.batch import NOTHING, PendingWrites, Touches
from storage.writes.idempotency import IdempotencyKey
from storage.writes.writer import BatchWriter
from tests.support import MutableClock


@pytest.fixture
async def writer(db: Database, clock: MutableClock) -> AsyncIterator[BatchWriter]:
    published: list[Event] = []

    async def publish(events: list[Event]) -> None:
        published.extend(events)

    batch_writer = BatchWriter(db, clock.now, publish, lanes=2)
    batch_writer.published = published  # type: ignore[attr-defined]
    yield batch_writer
    await batch_writer.aclose()


def refusal(exc: Exception) -> tuple[int, Any] | None:
    return (402, {"error": exc.code}) if isinstance(exc, CreditError) else None


async def funded(writer: BatchWriter, service: CreditService, account_id: str, amount: int) -> None:
    await writer.run(lambda uow: service.grant(uow, account_id, amount, "purchase"))


async def entry_count(db: Database, account_id: str) -> int:
    async with db.read() as uow:
        return int(
            (
                await uow.conn.execute(
                    sa.select(sa.func.count())
                    .select_from(entries)
                    .where(entries.c.account_id == account_id)
                )
            ).scalar_one()
        )


async def test_a_refusal_leaves_its_batch_mates_alone(
    service: CreditService, db: Database, clock: MutableClock
) -> None:
    # one batch in flight: the three are one batch (two in flight would split a burst in two)
    writer = BatchWriter(db, clock.now, _no_subscribers, depth=1)
    await funded(writer, service, "acct-r", 100)
    commits = writer.commits
    results = await asyncio.gather(
        writer.run(lambda uow: service.charge(uow, "acct-r", 60, "a")),
        writer.run(lambda uow: service.charge(uow, "acct-r", 70, "b")),  # 402: 68 left
        writer.run(lambda uow: service.charge(uow, "acct-r", 40, "c")),
        return_exceptions=True,
    )
    assert writer.commits == commits + 1, "expected the three to share one transaction"
    assert isinstance(results[1], InsufficientCredits)
    assert not isinstance(results[0], BaseException)
    assert not isinstance(results[2], BaseException)
    async with db.read() as uow:
        account = await uow.accounts.get("acct-r")
    assert account is not None and account.balance == 128 - 100
    await writer.aclose()


async def test_a_failing_write_splits_the_batch_and_nothing_is_applied_twice(
    writer: BatchWriter, service: CreditService, db: Database
) -> None:
    await funded(writer, service, "acct-s", 1000)
    existing, _ = await writer.run(lambda uow: service.hold(uow, "acct-s", 1))

    async def duplicate_hold(uow: Any) -> None:
        # a row the database refuses only at the commit: the same primary key again
        account = await uow.accounts.lock("acct-s")
        clone = Hold(
            existing.hold_id, "acct-s", 1, Hold.OPEN, existing.created_at, existing.expires_at
        )
        await uow.holds.add(clone)
        await uow.accounts.save(account)

    splits = metrics.WRITE_BATCH_SPLITS._value.get()
    before = await entry_count(db, "acct-s")
    results = await asyncio.gather(
        *(
            writer.run(
                lambda uow: service.charge(uow, "acct-s", 1, "ok"), Touches(accounts=("acct-s",))
            )
            for _ in range(5)
        ),
        writer.run(duplicate_hold),
        *(writer.run(lambda uow: service.charge(uow, "acct-s", 1, "ok")) for _ in range(5)),
        return_exceptions=True,
    )
    assert isinstance(results[5], ConcurrentUpdate)
    assert [r for i, r in enumerate(results) if i != 5 and isinstance(r, BaseException)] == []
    assert metrics.WRITE_BATCH_SPLITS._value.get() > splits
    assert await entry_count(db, "acct-s") == before + 10  # each charge exactly once


async def test_an_unexpected_error_gives_the_key_back(
    writer: BatchWriter, service: CreditService, db: Database
) -> None:
    await funded(writer, service, "acct-u", 100)
    key = IdempotencyKey("scope-u", "k1", "fp")
    attempts: list[int] = []

    async def flaky(uow: Any) -> tuple[int, Any]:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("a bug, not a refusal")
        charge, _ = await service.charge(uow, "acct-u", 5, "flaky")
        return 201, {"charge_id": charge["charge_id"]}

    mate = writer.run(lambda uow: service.charge(uow, "acct-u", 1, "mate"))
    first = writer.run_keyed(flaky, key, refusal)
    results = await asyncio.gather(first, mate, return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and not isinstance(results[1], BaseException)
    retried = await writer.run_keyed(flaky, key, refusal)
    replay = await writer.run_keyed(flaky, key, refusal)
    assert retried.status == 201 and not retried.replayed
    assert replay.replayed and replay.body == retried.body and len(attempts) == 2


@pytest.mark.postgres
@pytest.mark.parametrize(
    "touches",
    [NOTHING, Touches(accounts=("acct-k",))],
    ids=["claimed-alone", "claimed-with-the-lock"],
)
async def test_one_key_on_two_instances_has_one_effect(
    pg_url: str, clock: MutableClock, service: CreditService, touches: Touches
) -> None:
    """Said or not, what the operation touches: the key is claimed alone, or in the statement
    that also locks the account (storage/writes/pg_statements.py CLAIM_AND_LOCK)."""
    from storage.migrate import upgrade_async

    await upgrade_async(pg_url)
    dbs = [Database.from_url(pg_url, pool_size=2) for _ in range(2)]

    async def nowhere(events: list[Event]) -> None:
        return None

    writers = [BatchWriter(d, clock.now, nowhere, lanes=2) for d in dbs]
    try:
        await funded(writers[0], service, "acct-k", 1000)
        key = IdempotencyKey("scope-k", "same-key", "fp")

        async def charge(uow: Any) -> tuple[int, Any]:
            charge, _ = await service.charge(uow, "acct-k", 7, "once")
            return 201, {"charge_id": charge["charge_id"]}

        results = await asyncio.gather(
            *(writers[i % 2].run_keyed(charge, key, refusal, touches) for i in range(20))
        )
        assert len({str(r.body) for r in results}) == 1
        assert sum(not r.replayed for r in results) == 1
        assert await entry_count(dbs[0], "acct-k") == 3  # trial grant, purchase, one charge
    finally:
        for w in writers:
            await w.aclose()
        for d in dbs:
            await d.dispose()


async def test_connections_stay_few_whatever_the_callers(
    writer: BatchWriter, service: CreditService, db: Database
) -> None:
    accounts = [f"acct-c{i}" for i in range(50)]
    most = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, db.engine.pool.checkedout())  # type: ignore[attr-defined]
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(
        *(
            writer.run(
                functools.partial(service.hold, account_id=a, amount=1), Touches(accounts=(a,))
            )
            for a in accounts * 4
        )
    )
    done.set()
    await sampler
    assert 1 <= most <= writer.connection_count
    async with db.read() as uow:
        count = (await uow.conn.execute(sa.select(sa.func.count()).select_from(holds))).scalar()
    assert count == 200


@pytest.fixture
def service(clock: MutableClock) -> CreditService:
    from asgi import load_catalogue

    return CreditService(clock, load_catalogue(None))


@pytest.mark.postgres
async def test_two_instances_on_one_hot_account_keep_the_ledger(
    pg_url: str, clock: MutableClock, service: CreditService
) -> None:
    """Two writers (two instances) batch holds, captures and charges on the same accounts at
    once: every batch reads the grants its locks protect, so nothing is lost or overdrawn."""
    from storage.migrate import upgrade_async
    from tests.support import audit_mismatches

    await upgrade_async(pg_url)
    dbs = [Database.from_url(pg_url, pool_size=2) for _ in range(2)]

    async def nowhere(events: list[Event]) -> None:
        return None

    writers = [BatchWriter(d, clock.now, nowhere, lanes=2) for d in dbs]
    accounts = ["hot-a", "hot-b"]
    try:
        for account in accounts:
            await funded(writers[0], service, account, 150)

        async def hold_then_settle(i: int) -> str:
            writer, account = writers[i % 2], accounts[(i // 2) % 2]
            try:
                hold, _ = await writer.run(
                    lambda uow: service.hold(uow, account, 1), Touches(accounts=(account,))
                )
            except InsufficientCredits:
                return "refused"
            if i % 3:
                await writer.run(
                    lambda uow: service.capture(uow, hold.hold_id), Touches(holds=(hold.hold_id,))
                )
                return "captured"
            return "held"

        results = await asyncio.gather(*(hold_then_settle(i) for i in range(400)))
        assert results.count("refused") > 0, "expected the accounts to run dry"
        assert await audit_mismatches(pg_url) == []
        async with dbs[0].read() as uow:
            for account in accounts:
                state = await uow.accounts.get(account)
                assert state is not None and 0 <= state.held <= state.balance
                seqs = (
                    (
                        await uow.conn.execute(
                            sa.text("SELECT seq FROM events WHERE account_id = :a ORDER BY seq"),
                            {"a": account},
                        )
                    )
                    .scalars()
                    .all()
                )
                assert list(seqs) == list(range(1, len(seqs) + 1)), "seqs must be consecutive"
    finally:
        for w in writers:
            await w.aclose()
        for d in dbs:
            await d.dispose()


async def test_the_operations_of_one_batch_carry_its_time(db: Database) -> None:
    """On the system clock, every operation of a batch is stamped with the batch's time (as one
    transaction's now()); outside a batch the clock runs on."""
    from asgi import load_catalogue
    from core.ports import SystemClock

    service = CreditService(SystemClock(), load_catalogue(None))
    writer = BatchWriter(db, service.now, _no_subscribers)
    try:
        await writer.run(lambda uow: service.grant(uow, "acct-t", 100, "purchase"))
        commits = writer.commits
        opened = await asyncio.gather(
            *(writer.run(lambda uow: service.hold(uow, "acct-t", 1)) for _ in range(12))
        )
        batches = writer.commits - commits
        assert batches < 12, "expected holds to share batches"
        stamps = {hold.created_at for hold, _ in opened}
        assert len(stamps) <= batches
        assert {hold.expires_at - hold.created_at for hold, _ in opened} == {service.hold_ttl}
        async with db.read() as uow:
            stored = [await uow.holds.get(hold.hold_id) for hold, _ in opened]
        assert {h.created_at for h in stored if h is not None} == stamps
        first = service.now()
        await asyncio.sleep(0.002)
        assert service.now() > first, "outside a batch the clock is the system's"
    finally:
        await writer.aclose()


async def _no_subscribers(events: list[Event]) -> None:
    pass


@pytest.mark.postgres
async def test_two_batches_overlap_and_answer_in_the_order_they_started(
    pg_url: str, clock: MutableClock
) -> None:
    """A burst is split over two batches in flight at once (two write connections checked
    out). Operations that did not say which account they touch, on accounts of the first, wait
    until it has landed, and their events must still be published after the first batch's,
    though the first one's broker is slow."""
    from storage.migrate import upgrade_async

    await upgrade_async(pg_url)
    db = Database.from_url(pg_url, pool_size=4)
    published: list[Event] = []
    calls = 0

    async def publish(events: list[Event]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.05)  # the first batch's broker is slow
        published.extend(events)

    service = CreditService(clock, __import__("asgi").load_catalogue(None))
    writer = BatchWriter(db, clock.now, publish)
    accounts = [f"acct-o{i}" for i in range(40)]
    most = 0
    sampling = True

    async def sample() -> None:
        nonlocal most
        while sampling:
            most = max(most, db.engine.pool.checkedout())  # type: ignore[attr-defined]
            await asyncio.sleep(0)

    def grant(account_id: str) -> Any:
        return functools.partial(service.grant, account_id=account_id, amount=5, reason="p")

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.gather(
            *(writer.run(grant(a), Touches(accounts=(a,))) for a in accounts),
            *(writer.run(grant(a)) for a in accounts[:10]),  # no touches said
        )
    finally:
        sampling = False
        await sampler
        await writer.aclose()
        await db.dispose()
    assert most == 2, "expected two batches in flight at once"
    assert writer.commits >= 2
    for account in accounts:
        seqs = [e.seq for e in published if e.account_id == account]
        assert seqs == list(range(1, len(seqs) + 1)), f"{account}'s events out of order: {seqs}"


async def test_an_operation_that_did_not_say_what_it_touches_waits_for_the_batch_in_flight(
    pg_url: str, clock: MutableClock
) -> None:
    """A refund that did not name its account reads the charge before it locks anything: it
    must not start beside the batch in flight that is about to commit that charge, or it would
    not find it (404) where one batch would."""
    from storage.migrate import upgrade_async

    await upgrade_async(pg_url)
    db = Database.from_url(pg_url, pool_size=4)
    service = CreditService(clock, __import__("asgi").load_catalogue(None))
    writer = BatchWriter(db, clock.now, _no_subscribers)
    charged: list[str] = []

    async def charge(uow: Any) -> Any:
        result = await service.charge(uow, "acct-r", 3, "generation")
        charged.append(result[0]["charge_id"])
        return result

    async def refund(uow: Any) -> Any:
        return await service.refund(uow, charged[0], "charge", 3)

    try:
        # the first batch takes half of what waits (the charge), the second what is left
        _, (refunded, _) = await asyncio.gather(
            writer.run(charge, Touches(accounts=("acct-r",))), writer.run(refund)
        )
    finally:
        await writer.aclose()
        await db.dispose()
    assert refunded["refunded"] == 3


@pytest.mark.postgres
async def test_a_keyed_answer_is_a_row_of_its_own_and_its_claim_is_never_rewritten(
    pg_db: Database, clock: MutableClock, service: CreditService
) -> None:
    """Batches of dozens of keys: each key's claim is inserted once and never updated (an
    update found no room on the claim's page and wrote new index entries and a dead row, per
    request: migration 0010); each answer is inserted beside it, and replays read it."""
    from time import monotonic

    writer = BatchWriter(pg_db, clock.now, _discard)
    touches = Touches(accounts=("acct-pages",))

    def keyed(n: int) -> IdempotencyKey:
        return IdempotencyKey("scope-p", f"key-{n:04d}", "fp")

    async def open_hold(uow: Any) -> tuple[int, Any]:
        hold, account = await service.hold(uow, "acct-pages", 1)
        return 201, {"hold": hold.to_dict(), "account": account.snapshot(clock.now())}

    try:
        await funded(writer, service, "acct-pages", 10_000)
        first = await asyncio.gather(
            *(writer.run_keyed(open_hold, keyed(n), refusal, touches) for n in range(150))
        )
        again = await asyncio.gather(
            *(writer.run_keyed(open_hold, keyed(n), refusal, touches) for n in range(150))
        )
    finally:
        await writer.aclose()
    assert all(a.status == 201 and not a.replayed for a in first)
    assert [(a.body, a.replayed) for a in again] == [(a.body, True) for a in first]
    async with pg_db.driver() as driver:
        assert await driver.fetchval("SELECT count(*) FROM idempotency_answers") == 150
        deadline = monotonic() + 15
        while True:  # a backend reports its counts once idle, at most once a second
            row = await driver.fetchrow(
                "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables "
                "WHERE relname = 'idempotency_keys'"
            )
            if row["n_tup_ins"] >= 150 or monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert row["n_tup_ins"] >= 150 and row["n_tup_upd"] == 0, dict(row)


async def test_keys_claimed_before_answers_had_rows_replay_from_their_claim(
    db: Database, writer: BatchWriter, clock: MutableClock
) -> None:
    """Claims written before migration 0010 hold their answer themselves (`done`), or none yet
    (`in_progress`: a request of that version still running): the first replays, the second
    is refused as in progress, and neither runs the operation."""
    now = clock.now()
    async with db.transaction() as uow:
        await uow.conn.execute(
            sa.insert(idempotency_keys),
            [
                {
                    "scope": "scope-old",
                    "key": "answered",
                    "fingerprint": "fp",
                    "status": "done",
                    "response_status": 201,
                    "response_body": '{"charge_id": "chg_before"}',
                    "created_at": now,
                    "locked_at": now,
                },
                {
                    "scope": "scope-old",
                    "key": "running",
                    "fingerprint": "fp",
                    "status": "in_progress",
                    "response_status": None,
                    "response_body": None,
                    "created_at": now,
                    "locked_at": now,
                },
            ],
        )
    ran: list[str] = []

    async def never(uow: Any) -> tuple[int, Any]:
        ran.append("ran")
        return 201, {}

    replay = await writer.run_keyed(never, IdempotencyKey("scope-old", "answered", "fp"), refusal)
    assert (replay.status, replay.body, replay.replayed) == (201, {"charge_id": "chg_before"}, True)
    with pytest.raises(RequestInProgress):
        await writer.run_keyed(never, IdempotencyKey("scope-old", "running", "fp"), refusal)
    assert ran == []


@pytest.mark.postgres
async def test_a_key_forgotten_between_its_claim_and_its_read_is_claimed_again(
    pg_db: Database, clock: MutableClock
) -> None:
    """The claim meets a key that exists (`ON CONFLICT DO NOTHING`, no lock taken), and
    retention deletes it before the claim's answer is read: the key is then neither claimed nor
    found, and is claimed again rather than failing its batch."""
    from storage.writes import idempotency
    from storage.writes.batch_session import batch_session
    from storage.writes.idempotency import IdempotencyStore

    key = IdempotencyKey("scope-gone", "old", "fp")
    async with batch_session(pg_db) as first:
        assert await idempotency.claim(first, [key], clock.now()) == {key.id: None}
        await first.record({key.id: (201, {"n": 1})})
        await first.flush(PendingWrites(), clock.now())

    class ForgottenMeanwhile:
        """The batch's real session, with retention running in between its two statements."""

        def __init__(self, session: Any) -> None:
            self.session = session

        async def claim(self, ordered: list[IdempotencyKey], now: Any) -> Any:
            return await self.session.claim(ordered, now)

        async def stored(self, key_ids: Any) -> Any:
            await IdempotencyStore(pg_db).purge(clock.now() + timedelta(days=1))
            return await self.session.stored(key_ids)

    async with batch_session(pg_db) as second:
        claims = await idempotency.claim(ForgottenMeanwhile(second), [key], clock.now())
        assert claims == {key.id: None}
        await second.record({key.id: (201, {"n": 2})})
        await second.flush(PendingWrites(), clock.now())
    async with pg_db.driver() as driver:
        body = await driver.fetchval(
            "SELECT response_body FROM idempotency_answers WHERE key = 'old'"
        )
    assert json.loads(body) == {"n": 2}


async def test_an_answer_left_without_its_claim_gives_way_to_the_keys_next_answer(
    db: Database, writer: BatchWriter
) -> None:
    """A claim deleted on its own (by hand, or by a sweeper of the version before 0010, which
    knows no answers) leaves its answer behind; the key's next claim is new, and its answer
    replaces the one left, instead of refusing the batch."""
    key = IdempotencyKey("scope-orphan", "k", "fp")

    def answering(n: int) -> Any:
        async def answer(uow: Any) -> tuple[int, Any]:
            return 201, {"n": n}

        return answer

    first = await writer.run_keyed(answering(1), key, refusal)
    async with db.transaction() as uow:
        await uow.conn.execute(sa.delete(idempotency_keys))
    again = await writer.run_keyed(answering(2), key, refusal)
    replay = await writer.run_keyed(answering(3), key, refusal)
    assert (first.body, first.replayed) == ({"n": 1}, False)
    assert (again.body, again.replayed) == ({"n": 2}, False)
    assert (replay.body, replay.replayed) == ({"n": 2}, True)


async def _discard(events: list[Event]) -> None:
    return None


@pytest.mark.postgres
async def test_a_burst_beside_a_batch_in_flight_keeps_each_accounts_order(
    pg_url: str, clock: MutableClock
) -> None:
    """Captures named by their hold alone and grants named by their account, interleaved over a
    few accounts in one burst: the batches beside one in flight pass over what names its
    accounts (a capture's account is known from the batch that opened its hold), yet every
    operation applies once, and each account's events are published in the order of its
    commits."""
    from storage.migrate import upgrade_async

    await upgrade_async(pg_url)
    db = Database.from_url(pg_url, pool_size=4)
    published: list[Event] = []

    async def publish(events: list[Event]) -> None:
        published.extend(events)

    service = CreditService(clock, __import__("asgi").load_catalogue(None))
    writer = BatchWriter(db, clock.now, publish)
    accounts = [f"acct-p{i}" for i in range(4)]
    try:
        for account in accounts:
            await writer.run(
                functools.partial(service.grant, account_id=account, amount=100, reason="p"),
                Touches(accounts=(account,)),
            )
        held: list[tuple[str, str]] = []
        for account in accounts:
            for _ in range(6):
                hold, _ = await writer.run(
                    functools.partial(service.hold, account_id=account, amount=2),
                    Touches(accounts=(account,)),
                )
                held.append((hold.hold_id, account))
        # the batch that opened a hold taught the writer its account before answering
        assert all(
            writer.hold_owners.complete(Touches(holds=(h,))).accounts == (a,) for h, a in held
        )
        before = await _balances(db, accounts)
        calls: list[Any] = []
        for hold_id, account in held:
            calls.append(
                writer.run(
                    functools.partial(service.capture, hold_id=hold_id), Touches(holds=(hold_id,))
                )
            )
            calls.append(
                writer.run(
                    functools.partial(service.grant, account_id=account, amount=1, reason="p"),
                    Touches(accounts=(account,)),
                )
            )
        results = await asyncio.gather(*calls)
        assert writer.commits >= 2 + len(held)
        balances = await _balances(db, accounts)
    finally:
        await writer.aclose()
        await db.dispose()
    captured = [r[0] for r in results[::2]]
    assert all(h.status == Hold.CAPTURED for h in captured)
    assert balances == {a: before[a] - 6 * 2 + 6 for a in accounts}
    for account in accounts:
        seqs = [e.seq for e in published if e.account_id == account]
        assert seqs == list(range(1, len(seqs) + 1)), f"{account}'s events out of order: {seqs}"
        assert len(seqs) >= 1 + 6 + 12


async def _balances(db: Database, accounts: list[str]) -> dict[str, int]:
    found = {}
    async with db.read() as uow:
        for account_id in accounts:
            account = await uow.accounts.get(account_id)
            assert account is not None
            found[account_id] = account.balance
    return found


@pytest.mark.postgres
async def test_a_batch_beside_a_small_one_in_flight_takes_its_even_share(
    pg_url: str, clock: MutableClock
) -> None:
    """Callers in a closed loop come back in the groups their batches answered. A batch of one
    held up in its write, and 60 operations waiting: the next batch takes 31 (its half of the
    61 that wait or fly), not all 60, and the last 29 go once a slot is free; a lone big batch
    beside a small one would keep the two lopsided, one at a time with the database."""
    from storage.migrate import upgrade_async

    await upgrade_async(pg_url)
    db = Database.from_url(pg_url, pool_size=4)
    sizes: list[int] = []

    async def publish(events: list[Event]) -> None:
        sizes.append(len(events))  # a hold publishes one event; one call per batch

    service = CreditService(clock, __import__("asgi").load_catalogue(None))
    writer = BatchWriter(db, clock.now, publish)
    slow, others = "acct-s", [f"acct-e{i:02d}" for i in range(60)]

    def hold(account_id: str) -> Any:
        return writer.run(
            functools.partial(service.hold, account_id=account_id, amount=1),
            Touches(accounts=(account_id,)),
        )

    outside = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for account_id in [slow, *others]:
            await writer.run(
                functools.partial(service.grant, account_id=account_id, amount=5, reason="p"),
                Touches(accounts=(account_id,)),
            )
        await asyncio.gather(*(hold(a) for a in [slow, *others]))  # all remembered now
        hits = writer.remembered.hits if writer.remembered is not None else 0
        sizes.clear()
        # the slow account's row locked elsewhere: its batch applies (no locking read on a
        # remembered account), then waits in its write
        locker = outside.transaction()
        await locker.start()
        await outside.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", slow)
        first = asyncio.ensure_future(hold(slow))
        for _ in range(100):
            waiting = await outside.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting, "the slow batch should wait for the row lock in its write"
        rest = asyncio.gather(*(hold(a) for a in others))
        await asyncio.sleep(0.2)  # the second batch writes, then waits to answer after the first
        await locker.rollback()
        await first
        await rest
    finally:
        await outside.close()
        await writer.aclose()
        await db.dispose()
    assert writer.remembered is not None and writer.remembered.hits > hits
    assert sizes == [1, 31, 29], f"batch sizes {sizes}"
