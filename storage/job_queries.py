"""Reads of an account's jobs: a job as the API shows it, and a page of them by status."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.events import iso
from storage.tables import jobs


def job_to_dict(row: Any) -> dict[str, Any]:
    return {
        "job_id": row.id,
        "account_id": row.account_id,
        "operation": row.operation,
        "model": row.model,
        "params": row.params or {},
        "cost": row.cost,
        "status": row.status,
        "result_url": row.result_url,
        "error": row.error,
        "provider": row.provider,
        "provider_task_id": row.provider_task_id,
        "hold_id": row.hold_id,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "expires_at": iso(row.expires_at),
        "completed_at": iso(row.completed_at),
        "metadata": row.metadata or {},
    }


async def jobs_of(
    conn: AsyncConnection, account_id: str, status: str | None, limit: int
) -> list[dict[str, Any]]:
    stmt = sa.select(jobs).where(jobs.c.account_id == account_id)
    if status is not None:
        stmt = stmt.where(jobs.c.status == status)
    rows = await conn.execute(
        stmt.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
    )
    return [job_to_dict(r) for r in rows]
