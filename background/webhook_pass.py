"""One delivery pass over a leased endpoint (background/webhook_worker.py runs them): its
pending accounts and their next events read, delivered concurrently (one account's events at a
time, in seq order), and what was acknowledged recorded in one transaction."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta

import metrics
from background.webhook_sending import send_signed
from background.webhook_state import DeliveryState
from storage.webhook_backlog import Journaled
from storage.webhook_deliveries import Attempt, Outcome
from storage.webhook_endpoint_record import Endpoint

log = logging.getLogger("creditstream.outbound")
ACCOUNTS_PER_PASS = 200
EVENTS_PER_ACCOUNT = 10  # per pass: an account with a backlog does not hold a pass for long
EVENTS_PER_PASS = 1000
RECONCILE_S = 30.0  # how often a pass looks at every account, not only those that moved
MOVED_MARGIN = timedelta(seconds=10)  # commits land later than the created_at they carry


class DeliveryPass:
    """One look at an endpoint: its pending accounts and their next events read in one query
    each, up to `concurrency` accounts in flight, each account's events in seq order, and
    the cursors, attempts and health written in one transaction at the end. The first failed
    attempt stops the others at their next one."""

    def __init__(self, state: DeliveryState, endpoint: Endpoint, outcome: Outcome) -> None:
        self.d, self.endpoint = state, endpoint
        self.outcome = outcome  # the endpoint's health, as the pass leaves it
        self.wanted = set(self.endpoint.events)
        self.stopped = False  # a failure, shutdown: the pass ended early
        self.failed = False
        self.gone = False  # the endpoint was deleted
        self.more = False  # more was pending than one pass takes
        self.found = False  # some account was pending
        self.lag = self.d.lag(self.endpoint.endpoint_id)
        self.positions: dict[str, int] = {}
        self.generations: dict[str, int] = {}  # each cursor's, as the pass read it
        self.attempts: list[Attempt] = []

    async def run(self) -> None:
        endpoint_id = self.endpoint.endpoint_id
        scan = self.d.scan(endpoint_id)
        started = self.d.journal_now()
        among: list[str] | None = None
        full = (
            scan.since is None
            or scan.full_at is None
            or started - scan.full_at > timedelta(seconds=RECONCILE_S)
        )
        async with self.d.step():
            rescans = await self.d.store.rescans(endpoint_id)  # read before the cursors
            full = full or rescans != scan.rescans
            if scan.since is not None and not full:
                among = await self.d.store.moved_since(scan.since - MOVED_MARGIN)
            pending = await self.d.store.pending(endpoint_id, ACCOUNTS_PER_PASS, among)
            self.found = bool(pending)
            self.generations = {p.account_id: p.generation for p in pending}
            batches = await self.d.store.events_for(
                [(p.account_id, p.after) for p in pending], EVENTS_PER_ACCOUNT, EVENTS_PER_PASS
            )
        if full:
            self.lag.waiting.clear()
        for account in pending:
            if account.first_at is not None:
                self.lag.waiting.setdefault(account.account_id, account.first_at)
        # an account read short of its head (per-account or per-pass cap): look again at once
        self.more = (
            len(pending) >= ACCOUNTS_PER_PASS
            or any(len(batches.get(p.account_id, ())) >= EVENTS_PER_ACCOUNT for p in pending)
            or (sum(len(b) for b in batches.values()) >= EVENTS_PER_PASS)
        )
        # the longest batches first (popped from the end): an account's events go one at a
        # time, so one started last with many events would keep the pass, and its record,
        # waiting while the other lanes idle
        ready = [(p.account_id, batches[p.account_id]) for p in pending if p.account_id in batches]
        queue = sorted(reversed(ready), key=lambda item: len(item[1]))  # ties: pending order

        async def lane() -> None:
            while queue and not self._should_stop():
                account_id, batch = queue.pop()
                await self._deliver(account_id, batch)

        try:
            async with asyncio.TaskGroup() as lanes:
                for _ in range(min(self.d.policy.concurrency, len(queue))):
                    lanes.create_task(lane())
        finally:  # also when cancelled: what was acknowledged moves the cursors
            async with self.d.step():
                self.gone = not await asyncio.shield(
                    self.d.store.record(
                        endpoint_id,
                        self.positions,
                        self.attempts,
                        self.outcome,
                        self.d.wall_now(),
                        self.generations,
                    )
                )
        self.stopped = self.gone or self.failed or self.d.stopping.is_set() or bool(queue)
        if self.stopped:
            scan.since = None  # the next pass looks at every account
        elif not self.more:  # else: what is left moved since `scan.since` too
            scan.since = started
            scan.full_at = started if full else scan.full_at
            scan.rescans = rescans if full else scan.rescans

    def _should_stop(self) -> bool:
        return self.failed or self.d.stopping.is_set()

    async def _deliver(self, account_id: str, batch: list[Journaled]) -> None:
        """The account's events in order, until one fails or the pass must stop."""
        for event in batch:
            if event.type in self.wanted:
                self.lag.waiting[account_id] = event.created_at
                if self._should_stop():
                    return
                attempt = await self._send(account_id, event.seq, event.type, event.payload)
                self.attempts.append(attempt)
                if not attempt.ok:
                    return
            self.positions[account_id] = event.seq
        self.lag.waiting.pop(account_id, None)  # re-set by the next pass if more came

    async def _send(
        self, account_id: str, seq: int, event_type: str, payload: dict[str, object]
    ) -> Attempt:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        at = self.d.wall_now()
        async with self.d.step():
            sent = await send_signed(
                self.d.egress,
                self.endpoint.url,
                self.endpoint.secret,
                body,
                event_type,
                f"{account_id}:{seq}",
            )
        error = sent.error
        metrics.WEBHOOK_DELIVERIES.labels("ok" if error is None else "failed").inc()
        if error is None:
            if not self.failed and self.outcome != Outcome():
                self.outcome = Outcome()
            return Attempt(
                account_id, seq, event_type, sent.status_code, None, sent.duration_ms, at
            )
        if not self.failed:  # one failure per pass: attempts in flight fail together
            self.failed = True
            self.outcome = self._failed(at, error)
        return Attempt(
            account_id,
            seq,
            event_type,
            sent.status_code,
            error[:1024],
            sent.duration_ms,
            at,
            self.outcome.next_attempt_at,
        )

    def _failed(self, at: datetime, error: str) -> Outcome:
        outcome = self.outcome
        since = outcome.failing_since or at
        failures = outcome.failures + 1
        window = self.d.policy.retry_window_s
        if (at - since).total_seconds() >= window:
            reason = (
                f"disabled after {failures} failed attempts over {window:g} s "
                f"(since {since.isoformat()}); last error: {error}"
            )
            log.warning("webhook endpoint %s %s", self.endpoint.endpoint_id, reason)
            metrics.WEBHOOK_DELIVERIES.labels("disabled").inc()
            return Outcome(since, failures, None, reason)
        retry = at + timedelta(seconds=self.d.policy.retry_delay(failures))
        return Outcome(since, failures, retry)
