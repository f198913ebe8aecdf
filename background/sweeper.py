"""The sweeper: releases holds past their TTL, expires grants past `expires_at` and forgets old
idempotency keys. Every instance runs one; the engine's locks and status guards make concurrent
sweepers safe (each hold is released once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import metrics
from background.supervision import Backoff, Heartbeat
from core.errors import ConcurrentUpdate
from core.events import Event
from core.job_service import JobService
from core.service import CreditService
from storage.sql import Database
from storage.writes.idempotency import IdempotencyStore
from storage.writes.writer import BatchWriter

log = logging.getLogger("creditstream.sweeper")
BATCH = 200
KEY_RETENTION = timedelta(hours=48)
FAILURE_BACKOFF_CAP_S = 30.0
STUCK_S = 300.0  # one pass of at most 3 × BATCH transactions, each bounded by the db's timeouts

Publish = Callable[[list[Event]], Awaitable[None]]


@dataclass
class SweepReport:
    holds_expired: int = 0
    grants_expired: int = 0
    jobs_timed_out: int = 0
    keys_purged: int = 0


class Sweeper:
    def __init__(self, db: Database, service: CreditService, idempotency: IdempotencyStore,
                 publish: Publish | None = None, jobs: JobService | None = None,
                 writer: BatchWriter | None = None) -> None:
        self.db, self.service, self.idempotency = db, service, idempotency
        self.jobs = jobs or JobService(service)
        self.writer = writer or BatchWriter(db, service.now, publish or _nowhere, lanes=1)
        self.runs = 0
        self.heartbeat = Heartbeat("sweeper", STUCK_S)

    async def run_once(self) -> SweepReport:
        report = SweepReport()
        async with self.db.read() as uow:
            job_ids = await uow.jobs.due(self.service.now(), BATCH)
        for job_id in job_ids:  # before holds: a job's timeout releases its own hold
            report.jobs_timed_out += await self._one(
                lambda uow, j=job_id: self.jobs.expire(uow, j))
        async with self.db.read() as uow:
            hold_ids = await uow.holds.due(self.service.now(), BATCH)
        for hold_id in hold_ids:
            report.holds_expired += await self._one(
                lambda uow, h=hold_id: self.service.expire_hold(uow, h))
        async with self.db.read() as uow:
            account_ids = await uow.accounts.with_due_grants(self.service.now(), BATCH)
        for account_id in account_ids:
            report.grants_expired += await self._one(
                lambda uow, a=account_id: self.service.expire_grants(uow, a))
        if self.runs % 600 == 0:
            report.keys_purged = await self.idempotency.purge(self.service.now() - KEY_RETENTION)
        self.runs += 1
        return report

    async def run_forever(self, interval_s: float, stopping: asyncio.Event) -> None:
        """Sweep until `stopping` is set; a pass in progress finishes first, so shutdown never
        cancels a transaction halfway (asyncpg connections cancelled mid-query can hang).
        A failed pass (the database down) is logged, counted and retried after a backoff."""
        backoff = Backoff(interval_s, max(interval_s, FAILURE_BACKOFF_CAP_S))
        while not stopping.is_set():
            wait = interval_s
            self.heartbeat.beat()
            try:
                report = await self.run_once()
                self.heartbeat.succeeded()
                backoff.reset()
                metrics.SWEEPS.labels("ok").inc()
                for kind, count in report.__dict__.items():
                    if count:
                        metrics.SWEPT.labels(kind).inc(count)
                if report.holds_expired or report.grants_expired or report.jobs_timed_out:
                    log.info("sweep", extra=dict(report.__dict__))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.SWEEPS.labels("failed").inc()
                self.heartbeat.failed(exc, "a sweep")
                wait = backoff.next_delay()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), wait)

    async def _one(self, use_case: Callable[..., Awaitable[int | bool]]) -> int:
        try:
            return int(await self.writer.run(use_case))
        except ConcurrentUpdate:
            return 0


async def _nowhere(events: list[Event]) -> None:
    """Where a sweeper without a publisher sends its events: the journal has them."""
