"""The sweeper on a real database (SQLite and PostgreSQL): a backlog goes in batches without
waiting for the next tick, concurrent sweepers on multi-lane writers still release each hold and
time out each job once, and the lateness of the oldest due hold and job is exposed."""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

import metrics
from asgi import load_catalogue
from background.sweeper import Sweeper
from core.job_service import JobService
from core.jobs import FAILED
from core.model import Hold
from core.price_request import PriceRequest
from core.service import CreditService
from storage import due
from storage.audit import audit
from storage.sql import Database
from storage.tables import entries, holds, jobs
from storage.writes.batch import Touches
from storage.writes.idempotency import IdempotencyStore
from storage.writes.writer import BatchWriter
from tests.support import MutableClock

ACCOUNTS = 10


@pytest.fixture
def service(clock: MutableClock) -> CreditService:
    return CreditService(clock, load_catalogue(None))


async def open_holds(
    db: Database, service: CreditService, per_account: int, ttl_s: int = 60
) -> None:
    for n in range(ACCOUNTS):
        async with db.transaction() as uow:
            await service.grant(uow, f"swept-{n}", 10_000, "purchase")
            for _ in range(per_account):
                await service.hold(uow, f"swept-{n}", 1, ttl_seconds=ttl_s)


async def statuses(db: Database) -> dict[str, int]:
    async with db.read() as uow:
        rows = await uow.conn.execute(
            sa.select(holds.c.status, sa.func.count().label("n")).group_by(holds.c.status)
        )
    return {row.status: row.n for row in rows}


async def assert_audit_clean(db: Database) -> None:
    async with db.read() as uow:
        _, mismatches = await audit(uow.conn)
    assert [m.describe() for m in mismatches] == []


def oldest_due(kind: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "creditstream_sweeper_oldest_due_seconds", {"kind": kind}
    )


async def test_a_backlog_is_swept_in_batches_without_waiting_for_the_next_tick(
    db: Database, service: CreditService, clock: MutableClock
) -> None:
    await open_holds(db, service, per_account=25)  # 250 due: 3 passes of 100
    clock.advance(seconds=61)
    writer = BatchWriter(db, service.now, _nowhere, lanes=4)
    sweeper = Sweeper(db, service, IdempotencyStore(db), writer=writer, pass_limit=100)
    stopping = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(sweeper.run_forever(600.0, stopping))  # the tick: 10 minutes
    try:
        deadline = started + 60
        while (await statuses(db)).get(Hold.OPEN, 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await statuses(db) == {Hold.EXPIRED: 250}
    finally:
        stopping.set()
        await task
        await writer.aclose()
    assert sweeper.runs >= 3
    assert writer.commits < 250  # expiries share transactions
    await assert_audit_clean(db)


async def test_two_sweepers_on_multi_lane_writers_expire_each_hold_and_job_once(
    db: Database, service: CreditService, clock: MutableClock
) -> None:
    jobs_service = JobService(service, timedelta(seconds=30))
    await open_holds(db, service, per_account=20)
    for n in range(ACCOUNTS):
        async with db.transaction() as uow:
            for _ in range(3):
                await jobs_service.create(uow, f"swept-{n}", PriceRequest("audio"), "simulated")
    clock.advance(seconds=61)  # the holds and the jobs are due; the jobs' holds not yet
    writers = [BatchWriter(db, service.now, _nowhere, lanes=4) for _ in range(2)]
    sweepers = [
        Sweeper(db, service, IdempotencyStore(db), jobs=jobs_service, writer=w, pass_limit=1000)
        for w in writers
    ]
    try:
        reports = await asyncio.gather(*(s.run_once() for s in sweepers))
    finally:
        for writer in writers:
            await writer.aclose()
    assert sum(r.holds_expired for r in reports) == ACCOUNTS * 20
    assert sum(r.jobs_timed_out for r in reports) == ACCOUNTS * 3
    async with db.read() as uow:
        releases = (
            await uow.conn.execute(
                sa.select(sa.func.count()).select_from(entries).where(entries.c.type == "release")
            )
        ).scalar_one()
        job_statuses = set((await uow.conn.execute(sa.select(jobs.c.status))).scalars())
    assert releases == ACCOUNTS * (20 + 3)  # one release per hold, whoever's sweeper it was
    assert job_statuses == {FAILED}
    assert await statuses(db) == {Hold.EXPIRED: ACCOUNTS * 20, Hold.RELEASED: ACCOUNTS * 3}
    await assert_audit_clean(db)


async def test_the_oldest_due_hold_and_job_say_how_late_the_sweeper_is(
    db: Database, service: CreditService, clock: MutableClock
) -> None:
    jobs_service = JobService(service, timedelta(seconds=30))
    async with db.transaction() as uow:
        await service.grant(uow, "late", 100, "purchase")
        await service.hold(uow, "late", 1, ttl_seconds=60)
        await jobs_service.create(uow, "late", PriceRequest("audio"), "simulated")
    clock.advance(seconds=5)
    async with db.transaction() as uow:
        await service.hold(uow, "late", 1, ttl_seconds=60)
    clock.advance(seconds=67)  # the first hold 12 s late, the second 7 s; the job 42 s
    sweeper = Sweeper(db, service, IdempotencyStore(db), jobs=jobs_service)
    try:
        report = await sweeper.run_once()
        assert (report.holds_expired, report.jobs_timed_out) == (2, 1)
        assert (oldest_due("hold"), oldest_due("job")) == (12.0, 42.0)
        await sweeper.run_once()  # nothing due any more
        assert (oldest_due("hold"), oldest_due("job")) == (0.0, 0.0)
    finally:
        await sweeper.writer.aclose()


async def test_the_due_reads_find_the_same_on_either_path(
    db: Database, service: CreditService, clock: MutableClock
) -> None:
    """On PostgreSQL the sweeper's reads are prepared statements straight on asyncpg; they find
    what the SQLAlchemy statements (SQLite's path) find, in the same order and up to the limit."""
    jobs_service = JobService(service, timedelta(seconds=30))
    async with db.transaction() as uow:
        for n in range(4):
            await service.grant(
                uow, f"due-{n}", 50, "purchase", expires_at=clock.now() + timedelta(seconds=10 + n)
            )
            await service.hold(uow, f"due-{n}", 1, ttl_seconds=20 + n)
            await jobs_service.create(uow, f"due-{n}", PriceRequest("audio"), "simulated")
        await service.hold(uow, "due-0", 1, ttl_seconds=3600)  # not due
    clock.advance(seconds=90)
    now = clock.now()
    holds_found = await due.holds_due(db, now, 3)
    jobs_found = await due.jobs_due(db, now, 3)
    grant_accounts = await due.accounts_with_due_grants(db, now, 3)
    async with db.read() as uow:
        assert holds_found == await due.due_holds(uow.conn, now, 3)
        assert jobs_found == await due.due_jobs(uow.conn, now, 3)
        assert sorted(grant_accounts) == sorted(await uow.accounts.with_due_grants(now, 3))
    assert [d.account_id for d in holds_found] == ["due-0", "due-1", "due-2"]
    assert all(d.hold_id is not None for d in jobs_found) and len(jobs_found) == 3
    assert sorted(grant_accounts) == ["due-0", "due-1", "due-2"]
    assert all(d.expires_at.tzinfo is not None for d in holds_found + jobs_found)


async def _nowhere(events: list) -> None:  # type: ignore[type-arg]
    """The journal has the events; these tests read the tables."""


async def test_the_due_grants_query_reads_the_partial_index(
    pg_db: Database, service: CreditService, clock: MutableClock
) -> None:
    """The sweeper's due-grants read must imply ix_grants_due's predicate, or PostgreSQL cannot
    use the index and walks every grant ever made (seq scans off: the index is the only way
    left that fits)."""
    async with pg_db.transaction() as uow:
        await service.grant(
            uow, "due-plan", 50, "purchase", expires_at=clock.now() + timedelta(seconds=5)
        )
    async with pg_db.driver() as driver, driver.transaction():
        await driver.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0] for r in await driver.fetch("EXPLAIN " + due.DUE_GRANT_ACCOUNTS, clock.now(), 10)
        )
    assert "ix_grants_due" in plan, plan


@pytest.mark.parametrize(
    ("query", "index"),
    [(due.DUE_HOLDS, "ix_holds_open_expires"), (due.DUE_JOBS, "ix_jobs_processing_expires")],
)
async def test_the_due_holds_and_jobs_queries_read_their_partial_indexes(
    pg_db: Database, clock: MutableClock, query: str, index: str
) -> None:
    """The due holds and jobs are read through indexes of the open holds and the processing
    jobs alone (migration 0011): the query must say the index's predicate itself, as a literal,
    or PostgreSQL's generic plan for the prepared statement cannot use it (seq scans off: the
    index is the only way left that fits)."""
    async with pg_db.driver() as driver, driver.transaction():
        await driver.execute("SET LOCAL enable_seqscan = off")
        await driver.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        plan = "\n".join(r[0] for r in await driver.fetch("EXPLAIN " + query, clock.now(), 10))
    assert index in plan, plan


async def test_holds_and_releases_update_their_grant_in_place(
    pg_db: Database, service: CreditService, clock: MutableClock
) -> None:
    """A hold and a release change a grant's `reserved` only. No index may name it (a partial
    index's predicate counts), or every one of them writes new entries into each of the grants'
    indexes and leaves a dead row version behind (migration 0009): PostgreSQL's statistics
    count the grants' updates that were HOT (in place)."""
    async with pg_db.transaction() as uow:
        await service.grant(uow, "hot-grant", 10_000, "purchase")
    writer = BatchWriter(pg_db, service.now, _nowhere)
    touches = Touches(accounts=("hot-grant",))
    try:
        for _ in range(20):
            hold, _ = await writer.run(
                lambda uow: service.hold(uow, "hot-grant", 5, ttl_seconds=60), touches
            )
            release = functools.partial(service.release, hold_id=hold.hold_id)
            await writer.run(release, touches)
    finally:
        await writer.aclose()
    deadline = time.monotonic() + 15
    async with pg_db.driver() as driver:
        while True:  # a backend reports its counts once idle, at most once a second
            row = await driver.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'grants'"
            )
            if row["n_tup_upd"] >= 40 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert row["n_tup_upd"] >= 40
    assert row["n_tup_hot_upd"] >= 0.9 * row["n_tup_upd"], dict(row)
