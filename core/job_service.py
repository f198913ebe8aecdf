"""Job use cases: create (quote + hold + job in one transaction), finish, time out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core.account import Account
from core.errors import InvalidInput, NotFound
from core.jobs import FAILED, PROCESSING, SUCCESS, Job, check_input
from core.model import checked_ttl, new_id
from core.ports import UnitOfWork
from core.price_request import PriceRequest
from core.service import MAX_HOLD_TTL_S, CreditService

HOLD_GRACE = timedelta(seconds=60)  # the job's own timeout releases its hold, not the hold's TTL
MAX_JOB_TTL_S = MAX_HOLD_TTL_S - int(HOLD_GRACE.total_seconds())


@dataclass
class JobService:
    credits: CreditService
    job_ttl: timedelta = timedelta(seconds=300)

    async def create(
        self,
        uow: UnitOfWork,
        account_id: str,
        price: PriceRequest,
        provider: str,
        input: dict[str, Any] | None = None,
        ttl_seconds: int | None = None,
        provider_task_id: str | None = None,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Job, Account]:
        job_input = check_input(input)
        cost = self.credits.quote(price)
        ttl = checked_ttl(ttl_seconds, self.job_ttl, MAX_JOB_TTL_S)
        job_id = new_id("job")
        hold, account = await self.credits.hold(
            uow,
            account_id,
            cost,
            int((ttl + HOLD_GRACE).total_seconds()),
            ref=job_id,
            key=key,
            job_id=job_id,
            metadata=metadata,
            price=price,
        )
        now = self.credits.now()
        job = Job(
            job_id,
            account.account_id,
            price.operation,
            price.model,
            cost,
            PROCESSING,
            provider,
            now,
            now,
            now + ttl,
            params=dict(price.params or {}),
            input=job_input,
            provider_task_id=provider_task_id or job_id,
            hold_id=hold.hold_id,
            metadata=dict(hold.metadata),
        )
        await uow.jobs.add(job)
        account.record_job(job.to_dict(), now)
        await uow.accounts.save(account)
        return job, account

    async def finish(
        self, uow: UnitOfWork, job_id: str, status: str, result_url: str | None, error: str | None
    ) -> tuple[Job, Account, bool]:
        """Capture on success (the result is already stored), release on failure.

        Returns whether anything changed: a repeated report of the same outcome is a no-op.
        """
        if status not in (SUCCESS, FAILED):
            raise InvalidInput(f"Expected status success or failed, got {status!r}")
        job, account = await self._locked(uow, job_id)
        if job.is_due(self.credits.now()):
            # past its TTL the job has timed out, whatever arrives now: it is failed, not charged
            await self._time_out(uow, job, account)
            return job, account, True
        if not job.check_can_finish(status):
            return job, account, False
        if status == SUCCESS:
            if not result_url:
                raise InvalidInput("A successful job needs its stored result_url")
            await self._settle_hold(uow, job, account, capture=True)
            job.succeed(result_url, self.credits.now())
        else:
            await self._settle_hold(uow, job, account, capture=False, reason="job_failed")
            job.fail(error or "generation failed", self.credits.now())
        await self._save(uow, job, account)
        return job, account, True

    async def expire(self, uow: UnitOfWork, job_id: str) -> bool:
        """The sweeper's timeout of a job still processing past its TTL."""
        job, account = await self._locked(uow, job_id)
        if not job.is_due(self.credits.now()):
            return False
        await self._time_out(uow, job, account)
        return True

    async def _time_out(self, uow: UnitOfWork, job: Job, account: Account) -> None:
        await self._settle_hold(uow, job, account, capture=False, reason="timeout")
        ttl_s = int((job.expires_at - job.created_at).total_seconds())
        job.fail(f"timed out: no result within {ttl_s} s", self.credits.now())
        await self._save(uow, job, account)

    async def _locked(self, uow: UnitOfWork, job_id: str) -> tuple[Job, Account]:
        found = await uow.jobs.get(job_id)
        if found is None:
            raise NotFound(f"No job {job_id}", job_id=job_id)
        account, _ = await self.credits.ensure_account(uow, found.account_id)
        job = await uow.jobs.get(job_id)  # re-read under the account lock
        assert job is not None
        return job, account

    async def _settle_hold(
        self, uow: UnitOfWork, job: Job, account: Account, capture: bool, reason: str = ""
    ) -> None:
        hold = None if job.hold_id is None else await uow.holds.get(job.hold_id)
        if hold is None:
            raise NotFound(f"Job {job.job_id} has no hold")
        status_before = hold.status
        now = self.credits.now()
        if capture:
            account.capture(hold, job.cost, now)
        else:
            account.release(hold, reason, now)
        if hold.status != status_before:
            await uow.holds.save(hold, expected_status=status_before)

    async def _save(self, uow: UnitOfWork, job: Job, account: Account) -> None:
        await uow.jobs.save(job, expected_status=PROCESSING)
        account.record_job(job.to_dict(), job.updated_at)
        await uow.accounts.save(account)
