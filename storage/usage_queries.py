"""An account's usage: credits spent net of refunds by operation, model and day; jobs by status."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.tables import entries, jobs

Tally = dict[str, int]


def _add(tallies: dict[str, Tally], name: str, credits: int, runs: int = 1) -> None:
    slot = tallies.setdefault(name, {"count": 0, "credits": 0})
    slot["count"] += runs
    slot["credits"] += credits


def _days(since: datetime, until: datetime) -> dict[str, dict[str, Any]]:
    """One empty tally per UTC day of the period, oldest first."""
    days: dict[str, dict[str, Any]] = {}
    day = since.date()
    while day <= until.date():
        days[day.isoformat()] = {
            "date": day.isoformat(),
            "count": 0,
            "credits": 0,
            "operations": {},
            "models": {},
        }
        day += timedelta(days=1)
    return days


async def usage(
    conn: AsyncConnection, account_id: str, since: datetime, until: datetime
) -> dict[str, Any]:
    """Credits spent (captures and charges) since `since`, net of their refunds: in all, by
    operation, by model and per UTC day; and jobs by status. A refund counts against its
    spend's operation, model and day (a refund comes after its spend, so one made in the
    period of a spend made before it is left out); counts are of runs, refunded or not."""
    spent = await conn.execute(
        sa.select(entries.c.type, entries.c.amount, entries.c.metadata, entries.c.created_at).where(
            entries.c.account_id == account_id,
            entries.c.created_at >= since,
            entries.c.type.in_(("capture", "charge", "refund")),
        )
    )
    per_operation: dict[str, Tally] = {}
    per_model: dict[str, Tally] = {}
    days = _days(since, until)
    used = refunded = 0
    for row in spent:
        details = row.metadata or {}
        at, credits, runs = row.created_at, row.amount, 1
        if row.type == "refund":
            spent_at = details.get("spent_at")
            if isinstance(spent_at, str):
                at = datetime.fromisoformat(spent_at.replace("Z", "+00:00"))
            if at < since:
                continue
            credits, runs = -row.amount, 0
            refunded += row.amount
        used += credits
        operation = details.get("operation") or "other"
        model = details.get("model")
        _add(per_operation, operation, credits, runs)
        day = days.get(at.date().isoformat())
        if day is not None:
            day["count"] += runs
            day["credits"] += credits
            _add(day["operations"], operation, credits, runs)
        if isinstance(model, str):
            _add(per_model, model, credits, runs)
            if day is not None:
                _add(day["models"], model, credits, runs)
    by_status = await conn.execute(
        sa.select(jobs.c.status, sa.func.count())
        .where(jobs.c.account_id == account_id, jobs.c.created_at >= since)
        .group_by(jobs.c.status)
    )
    job_counts = {"processing": 0, "success": 0, "failed": 0}
    job_counts.update({status: int(count) for status, count in by_status})
    return {
        "credits_used": used,
        "credits_refunded": refunded,
        "operations": per_operation,
        "models": per_model,
        "days": list(days.values()),
        "jobs": job_counts,
    }
