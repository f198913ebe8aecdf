"""How late `bench soak`'s background work was, from the database's timestamps: the sweeper's
hold expiries and job timeouts, and the outbound deliveries against the receiver's arrivals
once they have drained.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from bench.soak_figures import delivery_lag, lateness
from bench.soak_receiver import DeliveryReceiver

# the receiver's endpoint is registered for these; their events are the ones whose lag counts
EVENT_TYPES = ["balance.updated", "job.updated", "credits.low"]


async def read_sweeper_lateness(dsn: str, start: datetime, end: datetime) -> dict[str, Any]:
    """From the database: each hold created since `start` the sweeper expired
    (closed_at − expires_at) and each such job it timed out (completed_at − expires_at), with
    those still open past expiry at `end`. Holds of jobs are left out: their job's timeout
    releases them."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        holds_closed = await conn.fetch(
            "SELECT extract(epoch FROM closed_at - expires_at)::float8 AS late FROM holds "
            "WHERE job_id IS NULL AND status = 'expired' AND created_at >= $1",
            start,
        )
        holds_open = await conn.fetch(
            "SELECT extract(epoch FROM $2 - expires_at)::float8 AS late FROM holds "
            "WHERE job_id IS NULL AND status = 'open' AND expires_at < $2 AND created_at >= $1",
            start,
            end,
        )
        jobs_closed = await conn.fetch(
            "SELECT extract(epoch FROM completed_at - expires_at)::float8 AS late FROM jobs "
            "WHERE status = 'failed' AND error LIKE 'timed out%' AND created_at >= $1",
            start,
        )
        jobs_open = await conn.fetch(
            "SELECT extract(epoch FROM $2 - expires_at)::float8 AS late FROM jobs "
            "WHERE status = 'processing' AND expires_at < $2 AND created_at >= $1",
            start,
            end,
        )
        created = await conn.fetchval(
            "SELECT count(*) FROM holds WHERE job_id IS NULL AND created_at >= $1", start
        )
    finally:
        await conn.close()
    return {
        "holds": {
            **lateness([r["late"] for r in holds_closed], [r["late"] for r in holds_open]),
            "created": created,
        },
        "jobs": lateness([r["late"] for r in jobs_closed], [r["late"] for r in jobs_open]),
    }


async def drain(receiver: DeliveryReceiver, most_s: float) -> float:
    """Wait, at most `most_s`, until no delivery arrived for 3 s (counted from the drain's start
    at the earliest); the wall time it ended."""
    deadline = time.monotonic() + most_s
    started = time.time()
    while time.monotonic() < deadline:
        if time.time() - max(started, receiver.last_arrival) >= 3.0:
            break
        await asyncio.sleep(0.25)
    return time.time()


async def read_delivery_lag(
    dsn: str, receiver: DeliveryReceiver, registered_at: float, end: float
) -> dict[str, Any]:
    """Every journal event of the endpoint's types written after it was registered, against
    the receiver's arrivals."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT account_id, seq, extract(epoch FROM created_at)::float8 AS at FROM events "
            "WHERE type = ANY($1) AND created_at > to_timestamp($2)",
            EVENT_TYPES,
            registered_at,
        )
    finally:
        await conn.close()
    created = {(r["account_id"], int(r["seq"])): float(r["at"]) for r in rows}
    return delivery_lag(created, receiver.arrivals, end)
