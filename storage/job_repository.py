"""The job repository: jobs in SQL, by id or provider task, added and saved under their status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import ConcurrentUpdate
from core.jobs import PROCESSING, Job
from storage.dialects import storable_key
from storage.tables import jobs

# the write methods are the per-operation reference path (storage/account_repository.py says why)


def job_from_row(row: Any) -> Job:
    return Job(
        job_id=row.id,
        account_id=row.account_id,
        operation=row.operation,
        model=row.model,
        cost=row.cost,
        status=row.status,
        provider=row.provider,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        params=dict(row.params or {}),
        input=dict(row.input or {}),
        provider_task_id=row.provider_task_id,
        hold_id=row.hold_id,
        result_url=row.result_url,
        error=row.error,
        completed_at=row.completed_at,
        metadata=dict(row.metadata or {}),
    )


class SqlJobs:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, job: Job) -> None:
        await self.conn.execute(sa.insert(jobs).values(**self._row(job)))

    async def get(self, job_id: str) -> Job | None:
        if not storable_key(job_id):
            return None
        row = (await self.conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).one_or_none()
        return None if row is None else job_from_row(row)

    async def by_task(self, provider: str, task_id: str) -> Job | None:
        if not (storable_key(provider) and storable_key(task_id)):
            return None
        row = (
            await self.conn.execute(
                sa.select(jobs).where(
                    jobs.c.provider == provider, jobs.c.provider_task_id == task_id
                )
            )
        ).one_or_none()
        return None if row is None else job_from_row(row)

    async def save(self, job: Job, expected_status: str) -> None:
        result = await self.conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job.job_id, jobs.c.status == expected_status)
            .values(**self._row(job))
        )
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"Job {job.job_id} left {expected_status} under its lock")

    async def due(self, now: datetime, limit: int) -> list[str]:
        stmt = (
            sa.select(jobs.c.id)
            .where(jobs.c.status == PROCESSING, jobs.c.expires_at <= now)
            .order_by(jobs.c.expires_at)
            .limit(limit)
        )
        return list((await self.conn.execute(stmt)).scalars())

    @staticmethod
    def _row(job: Job) -> dict[str, Any]:
        return {
            "id": job.job_id,
            "account_id": job.account_id,
            "operation": job.operation,
            "model": job.model,
            "params": job.params,
            "input": job.input,
            "cost": job.cost,
            "status": job.status,
            "result_url": job.result_url,
            "error": job.error,
            "provider": job.provider,
            "provider_task_id": job.provider_task_id,
            "hold_id": job.hold_id,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "expires_at": job.expires_at,
            "completed_at": job.completed_at,
            "metadata": job.metadata,
        }
