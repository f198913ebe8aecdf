"""CreditService and JobService use cases on an in-memory unit of work: load, call the domain,
save; a refusal commits nothing."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources

import pytest

from core.errors import InsufficientCredits, InvalidInput, InvalidState, NotFound
from core.job_service import HOLD_GRACE, MAX_JOB_TTL_S, JobService
from core.jobs import FAILED, PROCESSING, SUCCESS
from core.model import Hold
from core.price_request import PriceRequest
from core.pricing import Catalogue
from core.service import MAX_HOLD_TTL_S, CreditService
from tests.support import MutableClock
from tests.unit.fakes import MemoryDatabase

TTL = timedelta(seconds=300)
START = 128


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock()


@pytest.fixture
def service(clock: MutableClock) -> CreditService:
    text = resources.files("core").joinpath("pricing.toml").read_text(encoding="utf-8")
    return CreditService(clock, Catalogue.from_toml(text), TTL, low_credits_threshold=5)


@pytest.fixture
def jobs(service: CreditService) -> JobService:
    return JobService(service, TTL)


@pytest.fixture
async def db(service: CreditService) -> MemoryDatabase:
    """One account, `paid-1`: its 28 trial credits and 100 purchased (so no trial limit)."""
    db = MemoryDatabase()
    async with db.transaction() as uow:
        await service.grant(uow, "paid-1", 100, "purchase")
    return db


async def available(db: MemoryDatabase, account_id: str = "paid-1") -> int:
    return db.accounts[account_id].available


# -- CreditService ----------------------------------------------------------------------------


async def test_ensure_account_opens_it_once_with_its_trial(service: CreditService) -> None:
    db = MemoryDatabase()
    async with db.transaction() as uow:
        account, created = await service.ensure_account(uow, "new-1")
        await uow.accounts.save(account)
    async with db.transaction() as uow:
        again, created_again = await service.ensure_account(uow, "new-1")
    assert (created, created_again) == (True, False)
    assert again.available == 28
    assert [e.type for e in db.entries] == ["grant"]


async def test_hold_then_capture_part_frees_the_rest(
    service: CreditService, db: MemoryDatabase
) -> None:
    async with db.transaction() as uow:
        hold, account = await service.hold(uow, "paid-1", 30)
    assert (account.available, db.accounts["paid-1"].held) == (START - 30, 30)
    async with db.transaction() as uow:
        captured, account = await service.capture(uow, hold.hold_id, 10)
    assert captured.status == Hold.CAPTURED
    assert (account.balance, account.held, await available(db)) == (START - 10, 0, START - 10)
    assert [e.type for e in db.entries] == ["grant", "grant", "hold", "capture"]
    assert db.holds[hold.hold_id].captured_amount == 10


async def test_a_refusal_commits_nothing(service: CreditService, db: MemoryDatabase) -> None:
    entries = len(db.entries)
    with pytest.raises(InsufficientCredits):
        async with db.transaction() as uow:
            await service.hold(uow, "paid-1", 100)
            await service.hold(uow, "paid-1", 100)  # the second one does not fit
    assert (await available(db), len(db.entries), db.holds) == (START, entries, {})


async def test_a_hold_ttl_out_of_range_is_refused_before_anything_is_read(
    service: CreditService, db: MemoryDatabase
) -> None:
    for ttl in (0, MAX_HOLD_TTL_S + 1, True):
        with pytest.raises(InvalidInput, match="ttl_seconds"):
            async with db.transaction() as uow:
                await service.hold(uow, "paid-1", 1, ttl_seconds=ttl)
    async with db.transaction() as uow:
        hold, _ = await service.hold(uow, "paid-1", 1)
    assert hold.expires_at - hold.created_at == TTL


async def test_the_sweeper_expires_a_hold_past_its_ttl_once(
    service: CreditService, db: MemoryDatabase, clock: MutableClock
) -> None:
    async with db.transaction() as uow:
        hold, _ = await service.hold(uow, "paid-1", 40, ttl_seconds=60)
    clock.advance(seconds=61)
    async with db.transaction() as uow:
        due = await uow.holds.due(clock.now(), 10)
        first = await service.expire_hold(uow, hold.hold_id)
    async with db.transaction() as uow:
        second = await service.expire_hold(uow, hold.hold_id)
    assert (due, first, second) == ([hold.hold_id], True, False)
    assert db.holds[hold.hold_id].status == Hold.EXPIRED
    assert await available(db) == START


async def test_capturing_a_released_hold_is_refused(
    service: CreditService, db: MemoryDatabase
) -> None:
    async with db.transaction() as uow:
        hold, _ = await service.hold(uow, "paid-1", 5)
        await service.release(uow, hold.hold_id)
    with pytest.raises(InvalidState, match="released"):
        async with db.transaction() as uow:
            await service.capture(uow, hold.hold_id)
    with pytest.raises(NotFound):
        async with db.transaction() as uow:
            await service.capture(uow, "hold_nope")


async def test_a_charge_below_the_threshold_says_credits_are_low_once(
    service: CreditService, db: MemoryDatabase
) -> None:
    for _ in range(2):
        async with db.transaction() as uow:
            await service.charge(uow, "paid-1", 62, "usage")
    kinds = [type(e).__name__ for e in db.events]
    assert kinds.count("CreditsLow") == 1
    assert await available(db) == 4


# -- JobService -------------------------------------------------------------------------------


async def test_a_job_holds_its_quote_and_is_charged_only_on_success(
    jobs: JobService, db: MemoryDatabase
) -> None:
    async with db.transaction() as uow:
        job, account = await jobs.create(uow, "paid-1", PriceRequest("video"), "simulated")
    assert (job.status, job.cost, account.held) == (PROCESSING, 2, 2)
    async with db.transaction() as uow:
        done, account, changed = await jobs.finish(uow, job.job_id, SUCCESS, "/r/1.mp4", None)
    async with db.transaction() as uow:
        _, _, changed_again = await jobs.finish(uow, job.job_id, SUCCESS, "/r/1.mp4", None)
    assert (done.status, changed, changed_again) == (SUCCESS, True, False)
    assert (account.balance, account.held) == (START - 2, 0)
    assert [type(e).__name__ for e in db.events][-2:] == ["BalanceUpdated", "JobUpdated"]


async def test_a_failed_job_releases_its_hold(jobs: JobService, db: MemoryDatabase) -> None:
    async with db.transaction() as uow:
        job, _ = await jobs.create(uow, "paid-1", PriceRequest("audio"), "simulated")
    async with db.transaction() as uow:
        failed, account, _ = await jobs.finish(uow, job.job_id, FAILED, None, "model error")
    assert (failed.status, failed.error, account.available) == (FAILED, "model error", START)
    with pytest.raises(InvalidState):
        async with db.transaction() as uow:
            await jobs.finish(uow, job.job_id, SUCCESS, "/r/late.mp3", None)


async def test_a_report_after_the_job_ttl_times_it_out_uncharged(
    jobs: JobService, db: MemoryDatabase, clock: MutableClock
) -> None:
    async with db.transaction() as uow:
        job, _ = await jobs.create(
            uow, "paid-1", PriceRequest("video"), "simulated", ttl_seconds=30
        )
    hold = db.holds[job.hold_id or ""]
    assert hold.expires_at - job.expires_at == HOLD_GRACE  # the job's timeout comes first
    clock.advance(seconds=31)
    async with db.transaction() as uow:
        timed_out, account, changed = await jobs.finish(uow, job.job_id, SUCCESS, "/r/x", None)
    assert (timed_out.status, changed, account.available) == (FAILED, True, START)
    assert "timed out" in (timed_out.error or "")
    async with db.transaction() as uow:
        assert await jobs.expire(uow, job.job_id) is False


async def test_the_sweeper_times_out_a_due_job(
    jobs: JobService, db: MemoryDatabase, clock: MutableClock
) -> None:
    async with db.transaction() as uow:
        job, _ = await jobs.create(uow, "paid-1", PriceRequest("audio"), "simulated")
    clock.advance(seconds=TTL.total_seconds() + 1)
    async with db.transaction() as uow:
        assert await uow.jobs.due(clock.now(), 10) == [job.job_id]
        assert await jobs.expire(uow, job.job_id) is True
    assert db.jobs[job.job_id].status == FAILED
    assert db.holds[job.hold_id or ""].status == Hold.RELEASED


async def test_a_job_ttl_leaves_room_for_the_hold_grace(
    jobs: JobService, db: MemoryDatabase
) -> None:
    with pytest.raises(InvalidInput, match=str(MAX_JOB_TTL_S)):
        async with db.transaction() as uow:
            await jobs.create(
                uow, "paid-1", PriceRequest("audio"), "simulated", ttl_seconds=MAX_JOB_TTL_S + 1
            )
    async with db.transaction() as uow:
        job, _ = await jobs.create(
            uow, "paid-1", PriceRequest("audio"), "simulated", ttl_seconds=MAX_JOB_TTL_S
        )
    assert db.holds[job.hold_id or ""].expires_at - job.created_at == timedelta(
        seconds=MAX_HOLD_TTL_S
    )
