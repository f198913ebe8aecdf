"""Outbound webhooks: every instance runs a `Deliverer`, which reads the event journal and POSTs
each event an endpoint asked for to its URL, signed as inbound webhooks are
(`X-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, core/signatures.py), through
egress/ (the address policy, the pinned connect, the deadline).

At least once, in order per account: an endpoint's cursor per account moves only after the
receiver answered 2xx, and an account's events go out one at a time in seq order. Different
accounts' events go to an endpoint concurrently, up to `concurrency` in flight. Every attempt
has a deadline for the whole exchange. Each endpoint is worked by a task of its own, so a slow
receiver holds back nobody else. A failure pauses the whole endpoint with exponential backoff;
after the retry window (three days by default) it is disabled with the reason.

One instance at a time delivers to an endpoint: it holds the endpoint's lease
(storage/webhook_leases.py), renewed alongside the deliveries; when it cannot be renewed in
time the endpoint's work, attempts in flight included, is cancelled before another instance
may take the lease (background/webhook_worker.py). A step (an attempt or a database call) unfinished for longer than
`stuck_s` makes readiness report the deliverer stuck.

A resend moves a cursor back (storage/webhook_resends.py `rewind`): it bumps the cursor's
generation, which a pass's `record` compares with the one it read, so a pass in flight never
moves that cursor forward again; and the endpoint's rescan mark, which makes the next pass look
at every account (a cursor moved back on a quiet account has no new event to be noticed by)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from background.supervision import Backoff
from background.webhook_state import DeliveryState, Now, Policy
from background.webhook_worker import EndpointWorker
from core.events import Event
from egress import Egress
from storage.webhook_deliveries import WebhookDeliveries

__all__ = ["Deliverer", "Policy"]

EVENT_TYPES = ("balance.updated", "job.updated", "credits.low")
ENDPOINTS_PER_ROUND = 32
ATTEMPT_RETENTION = timedelta(days=30)
FAILURE_BACKOFF_CAP_S = 30.0


class Deliverer(DeliveryState):
    """Claims the work: every round, each due endpoint this instance can lease gets an
    `EndpointWorker` of its own."""

    def __init__(
        self,
        store: WebhookDeliveries,
        egress: Egress,
        policy: Policy,
        journal_now: Now,
        wall_now: Now,
    ) -> None:
        super().__init__(store, egress, policy, journal_now, wall_now)
        self._wake = asyncio.Event()
        self.rounds = 0
        # no endpoint was due for this instance in the last round (none enabled, or all leased
        # by other instances or backing off): commits then need no round of their own, the
        # next poll finds what changes — a woken round per commit batch cost a query each
        self._idle = False

    async def wake(self, events: list[Event]) -> None:
        """A publisher: new events were committed, look sooner than the next poll."""
        if not self._idle:
            self._wake.set()
        for worker in self.workers.values():
            worker.dirty = True

    async def run_forever(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping` is set; attempts in flight end (each within its deadline)
        and their progress is saved. A failed round (the database down) is logged, counted and
        retried after a backoff."""
        self.stopping = stopping
        backoff = Backoff(self.policy.poll_s, max(self.policy.poll_s, FAILURE_BACKOFF_CAP_S))
        try:
            while not self.stopping.is_set():
                wait = self.policy.poll_s
                self.heartbeat.beat()
                self._wake.clear()
                try:
                    async with self.step():
                        await self.run_once()
                    self.heartbeat.succeeded()
                    backoff.reset()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.heartbeat.failed(exc, "a delivery round")
                    wait = backoff.next_delay()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._woken(), wait)
            await asyncio.gather(
                *(w.task for w in list(self.workers.values())), return_exceptions=True
            )
        finally:
            for worker in list(self.workers.values()):
                worker.task.cancel()
            await asyncio.gather(
                *(w.task for w in list(self.workers.values())), return_exceptions=True
            )

    async def _woken(self) -> None:
        stop = asyncio.ensure_future(self.stopping.wait())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait([stop, wake], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    async def run_once(self) -> None:
        """One round: every due endpoint this instance can lease gets a worker of its own,
        which runs until nothing is pending; the round does not wait for it."""
        if self.rounds % 3600 == 0:
            await self.store.purge_attempts(self.wall_now() - ATTEMPT_RETENTION)
        self.rounds += 1
        due = await self.store.due(self.wall_now(), ENDPOINTS_PER_ROUND, self.owner)
        self._idle = not due and not self.workers
        for endpoint_id in due:
            if endpoint_id in self.workers or self.stopping.is_set():
                continue  # a worker whose lease lapsed is still ending
            now = self.wall_now()
            endpoint = await self.store.acquire(endpoint_id, self.owner, now, self.lease_end(now))
            if endpoint is not None:
                self.workers[endpoint_id] = EndpointWorker(self, endpoint)
