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
(storage/webhook_endpoints.py), renewed alongside the deliveries; when it cannot be renewed in
time the endpoint's work, attempts in flight included, is cancelled before another instance
may take the lease. A step (an attempt or a database call) unfinished for longer than
`stuck_s` makes readiness report the deliverer stuck.

A resend moves a cursor back (storage/webhook_endpoints.py `rewind`): it bumps the cursor's
generation, which a pass's `record` compares with the one it read, so a pass in flight never
moves that cursor forward again; and the endpoint's rescan mark, which makes the next pass look
at every account (a cursor moved back on a quiet account has no new event to be noticed by)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import metrics
from background.supervision import Backoff, Heartbeat
from background.webhook_sending import send_signed
from core.events import Event
from egress import Egress
from storage.webhook_deliveries import Attempt, Journaled, Outcome, WebhookDeliveries
from storage.webhook_endpoints import Endpoint

log = logging.getLogger("creditstream.outbound")
EVENT_TYPES = ("balance.updated", "job.updated", "credits.low")
LEASE_S = 60.0
# also how soon deliveries stop on an endpoint deleted (or disabled) meanwhile: a renewal
# fails once it is gone, and its work is cancelled
RENEW_EVERY_S = 1.0
RENEW_RETRY_S = 1.0
LEASE_MARGIN_S = 5.0  # give up the work this long before an unrenewed lease ends
ENDPOINTS_PER_ROUND = 32
ACCOUNTS_PER_PASS = 200
EVENTS_PER_ACCOUNT = 10  # per pass: an account with a backlog does not hold a pass for long
EVENTS_PER_PASS = 1000
RECONCILE_S = 30.0  # how often a pass looks at every account, not only those that moved
MOVED_MARGIN = timedelta(seconds=10)  # commits land later than the created_at they carry
ATTEMPT_RETENTION = timedelta(days=30)
FAILURE_BACKOFF_CAP_S = 30.0

Now = Callable[[], datetime]


@dataclass(frozen=True)
class Policy:
    timeout_s: float  # the deadline of one attempt, start to end
    poll_s: float
    retry_first_s: float
    retry_cap_s: float
    retry_window_s: float
    concurrency: int = 16  # attempts in flight per endpoint (one per account)
    stuck_s: float = 120.0

    def retry_delay(self, failures: int) -> float:
        return min(self.retry_first_s * 2.0 ** min(failures - 1, 40), self.retry_cap_s)


@dataclass
class _Scan:
    """What this instance last looked at for an endpoint (journal clock)."""

    since: datetime | None = None  # the start of the last pass that left nothing pending
    full_at: datetime | None = None  # the start of the last pass over every account
    # the endpoint's rescan mark that pass read: a resend or an enable bumps it, and then a
    # pass looks at every account (a cursor moved back has no new events to be noticed by)
    rescans: int | None = None


@dataclass
class _Lag:
    """Per account, when its oldest event not yet delivered to the endpoint was written."""

    waiting: dict[str, datetime] = field(default_factory=dict)

    def seconds(self, now: datetime) -> float:
        if not self.waiting:
            return 0.0
        return max(0.0, (now - min(self.waiting.values())).total_seconds())


class Deliverer:
    def __init__(
        self,
        store: WebhookDeliveries,
        egress: Egress,
        policy: Policy,
        journal_now: Now,
        wall_now: Now,
    ) -> None:
        self.store, self.egress, self.policy = store, egress, policy
        self.journal_now, self.wall_now = journal_now, wall_now
        self.owner = uuid.uuid4().hex[:16]
        self.heartbeat = Heartbeat(
            "outbound_webhooks", policy.stuck_s, oldest_work=self.oldest_step
        )
        self.stopping = asyncio.Event()  # replaced by run_forever's
        self._wake = asyncio.Event()
        self._scans: dict[str, _Scan] = {}
        self._lags: dict[str, _Lag] = {}
        self._workers: dict[str, _Worker] = {}
        self._steps: dict[int, float] = {}  # unfinished steps: id -> monotonic start
        self.rounds = 0
        metrics.WEBHOOK_OLDEST_STEP.set_function(self.oldest_step_age)

    def oldest_step(self) -> float | None:
        return min(self._steps.values(), default=None)

    def oldest_step_age(self) -> float:
        oldest = self.oldest_step()
        return 0.0 if oldest is None else time.monotonic() - oldest

    @contextlib.asynccontextmanager
    async def step(self) -> AsyncIterator[None]:
        """A unit of work that should end soon: readiness watches the oldest one."""
        token = object()
        self._steps[id(token)] = time.monotonic()
        try:
            yield
        finally:
            del self._steps[id(token)]

    async def wake(self, events: list[Event]) -> None:
        """A publisher: new events were committed, look sooner than the next poll."""
        self._wake.set()
        for worker in self._workers.values():
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
                *(w.task for w in list(self._workers.values())), return_exceptions=True
            )
        finally:
            for worker in list(self._workers.values()):
                worker.task.cancel()
            await asyncio.gather(
                *(w.task for w in list(self._workers.values())), return_exceptions=True
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
        for endpoint_id in await self.store.due(self.wall_now(), ENDPOINTS_PER_ROUND):
            if endpoint_id in self._workers or self.stopping.is_set():
                continue  # a worker whose lease lapsed is still ending
            now = self.wall_now()
            endpoint = await self.store.acquire(endpoint_id, self.owner, now, self.lease_end(now))
            if endpoint is not None:
                self._workers[endpoint_id] = _Worker(self, endpoint)

    def lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=LEASE_S)

    def scan(self, endpoint_id: str) -> _Scan:
        return self._scans.setdefault(endpoint_id, _Scan())

    def lag(self, endpoint_id: str) -> _Lag:
        lag = self._lags.get(endpoint_id)
        if lag is None:
            lag = self._lags[endpoint_id] = _Lag()
            metrics.WEBHOOK_LAG.labels(endpoint_id).set_function(
                lambda: lag.seconds(self.journal_now())
            )
        return lag

    def forget(self, endpoint_id: str) -> None:
        """The endpoint is gone: no more figures for it."""
        self._scans.pop(endpoint_id, None)
        if self._lags.pop(endpoint_id, None) is not None:
            with contextlib.suppress(KeyError):
                metrics.WEBHOOK_LAG.remove(endpoint_id)


class _Worker:
    """One leased endpoint on this instance: passes until nothing is pending, then the lease
    is released. Its lease is renewed alongside; a renewal that fails cancels the work."""

    def __init__(self, deliverer: Deliverer, endpoint: Endpoint) -> None:
        self.d, self.endpoint = deliverer, endpoint
        self.outcome = Outcome(endpoint.failing_since, endpoint.failures, endpoint.next_attempt_at)
        self.lease_until = deliverer.lease_end(deliverer.wall_now())
        self.dirty = True  # events may have arrived since the last look
        self.lease_lost = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        endpoint_id = self.endpoint.endpoint_id
        renewer = asyncio.create_task(self._keep_lease())
        try:
            while self.dirty and not self.d.stopping.is_set():
                self.dirty = False
                passed = _Pass(self)
                await passed.run()
                if passed.gone:
                    self.d.forget(endpoint_id)
                    return
                if passed.stopped:
                    return
                # a pass that found work looks again at once: more may have been committed
                # meanwhile, on instances whose commits do not wake this one
                self.dirty = self.dirty or passed.more or passed.found
        except asyncio.CancelledError:
            if not self.lease_lost:
                raise
        except Exception as exc:
            metrics.BACKGROUND_ERRORS.labels(self.d.heartbeat.name).inc()
            log.warning(
                "delivery to webhook endpoint %s failed (%s: %s); retrying later",
                endpoint_id,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            if not self.lease_lost:
                with contextlib.suppress(Exception):
                    await self.d.store.release(endpoint_id, self.d.owner)
            else:  # gone, or another instance's now: this one holds nothing pending for it
                self.d.lag(endpoint_id).waiting.clear()
            self.d._workers.pop(endpoint_id, None)

    async def _keep_lease(self) -> None:
        """Renew the lease every RENEW_EVERY_S; when it is lost (or the endpoint deleted), or
        cannot be renewed until LEASE_MARGIN_S before it ends, cancel the work, attempts in
        flight included, so no attempt outlives the lease (another instance may then deliver
        the same events)."""
        worker = self.task
        wait = RENEW_EVERY_S
        while True:
            await asyncio.sleep(wait)
            now = self.d.wall_now()
            until = self.d.lease_end(now)
            try:
                renewed: bool | None = await asyncio.wait_for(
                    self.d.store.renew(self.endpoint.endpoint_id, self.d.owner, now, until),
                    LEASE_MARGIN_S,
                )
            except Exception:  # the database is down, or slow: try again soon
                renewed = None
            if renewed:
                self.lease_until, wait = until, RENEW_EVERY_S
                continue
            left = (self.lease_until - self.d.wall_now()).total_seconds()
            if renewed is False or left <= LEASE_MARGIN_S:
                log.warning(
                    "lease on webhook endpoint %s could not be renewed; its deliveries "
                    "are cancelled and another instance takes over",
                    self.endpoint.endpoint_id,
                )
                self.lease_lost = True
                worker.cancel()
                return
            wait = min(RENEW_RETRY_S, max(left - LEASE_MARGIN_S, 0.01))


class _Pass:
    """One look at an endpoint: its pending accounts and their next events read in one query
    each, up to `concurrency` accounts in flight, each account's events in seq order, and
    the cursors, attempts and health written in one transaction at the end. The first failed
    attempt stops the others at their next one."""

    def __init__(self, worker: _Worker) -> None:
        self.w, self.d = worker, worker.d
        self.endpoint = worker.endpoint
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
        queue = [
            (p.account_id, batches[p.account_id])
            for p in reversed(pending)
            if p.account_id in batches
        ]

        async def lane(number: int) -> None:
            while queue and not self._should_stop():
                account_id, batch = queue.pop()
                await self._deliver(account_id, batch, number)

        try:
            async with asyncio.TaskGroup() as lanes:
                for number in range(min(self.d.policy.concurrency, len(queue))):
                    lanes.create_task(lane(number))
        finally:  # also when cancelled: what was acknowledged moves the cursors
            async with self.d.step():
                self.gone = not await asyncio.shield(
                    self.d.store.record(
                        endpoint_id,
                        self.positions,
                        self.attempts,
                        self.w.outcome,
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

    async def _deliver(self, account_id: str, batch: list[Journaled], lane: int) -> None:
        """The account's events in order, until one fails or the pass must stop."""
        for event in batch:
            if event.type in self.wanted:
                self.lag.waiting[account_id] = event.created_at
                if self._should_stop():
                    return
                attempt = await self._send(account_id, event.seq, event.type, event.payload, lane)
                self.attempts.append(attempt)
                if not attempt.ok:
                    return
            self.positions[account_id] = event.seq
        self.lag.waiting.pop(account_id, None)  # re-set by the next pass if more came

    async def _send(
        self, account_id: str, seq: int, event_type: str, payload: dict[str, object], lane: int
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
                lane,
            )
        error = sent.error
        metrics.WEBHOOK_DELIVERIES.labels("ok" if error is None else "failed").inc()
        if error is None:
            if not self.failed and self.w.outcome != Outcome():
                self.w.outcome = Outcome()
            return Attempt(
                account_id, seq, event_type, sent.status_code, None, sent.duration_ms, at
            )
        if not self.failed:  # one failure per pass: attempts in flight fail together
            self.failed = True
            self.w.outcome = self._failed(at, error)
        return Attempt(
            account_id,
            seq,
            event_type,
            sent.status_code,
            error[:1024],
            sent.duration_ms,
            at,
            self.w.outcome.next_attempt_at,
        )

    def _failed(self, at: datetime, error: str) -> Outcome:
        outcome = self.w.outcome
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
