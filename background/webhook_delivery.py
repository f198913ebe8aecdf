"""Outbound webhooks: every instance runs a `Deliverer`, which reads the event journal and POSTs
each event an endpoint asked for to its URL, signed as inbound webhooks are
(`X-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, core/signatures.py).

At least once, in order per account: an endpoint's cursor per account moves only after the
receiver answered 2xx, and an account's events go out one at a time in seq order. A failure
pauses the whole endpoint with exponential backoff; after the retry window (three days by
default) it is disabled with the reason. One instance at a time delivers to an endpoint: it holds
the endpoint's lease (storage/webhook_endpoints.py) and renews it before a delivery could
outlast it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

import metrics
from api import webhook_urls
from background.supervision import Backoff, Heartbeat
from core.events import Event
from core.signatures import sign
from storage.webhook_endpoints import Attempt, Endpoint, Outcome, WebhookEndpoints

log = logging.getLogger("creditstream.outbound")
EVENT_TYPES = ("balance.updated", "job.updated", "credits.low")
LEASE_S = 60.0
ENDPOINTS_PER_ROUND = 32
ACCOUNTS_PER_PASS = 200
EVENTS_PER_READ = 100
RECONCILE_S = 30.0  # how often a pass looks at every account, not only those that moved
MOVED_MARGIN = timedelta(seconds=10)  # commits land later than the created_at they carry
ATTEMPT_RETENTION = timedelta(days=30)
FAILURE_BACKOFF_CAP_S = 30.0
USER_AGENT = "creditstream-webhooks/1"

Now = Callable[[], datetime]


@dataclass(frozen=True)
class Policy:
    allow_private: bool
    timeout_s: float
    poll_s: float
    retry_first_s: float
    retry_cap_s: float
    retry_window_s: float

    def retry_delay(self, failures: int) -> float:
        return min(self.retry_first_s * 2.0 ** min(failures - 1, 40), self.retry_cap_s)


@dataclass
class _Scan:
    """What this instance last looked at for an endpoint (journal clock)."""

    since: datetime | None = None  # the start of the last pass that left nothing pending
    full_at: datetime | None = None  # the start of the last pass over every account


class Deliverer:
    def __init__(self, store: WebhookEndpoints, http: httpx.AsyncClient, policy: Policy,
                 journal_now: Now, wall_now: Now) -> None:
        self.store, self.http, self.policy = store, http, policy
        self.journal_now, self.wall_now = journal_now, wall_now
        self.owner = uuid.uuid4().hex[:16]
        self.heartbeat = Heartbeat("outbound_webhooks")
        self.stopping = asyncio.Event()  # replaced by run_forever's
        self._wake = asyncio.Event()
        self._scans: dict[str, _Scan] = {}
        self.rounds = 0

    async def wake(self, events: list[Event]) -> None:
        """A publisher: new events were committed, look sooner than the next poll."""
        self._wake.set()

    async def run_forever(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping` is set; a pass in progress stops before its next attempt
        and saves its progress. A failed round (the database down) is logged, counted and
        retried after a backoff."""
        self.stopping = stopping
        backoff = Backoff(self.policy.poll_s, max(self.policy.poll_s, FAILURE_BACKOFF_CAP_S))
        while not self.stopping.is_set():
            wait = self.policy.poll_s
            self.heartbeat.beat()
            self._wake.clear()
            try:
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

    async def _woken(self) -> None:
        stop = asyncio.ensure_future(self.stopping.wait())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait([stop, wake], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    async def run_once(self) -> None:
        """One round: every endpoint this instance can lease gets a pass."""
        if self.rounds % 3600 == 0:
            await self.store.purge_attempts(self.wall_now() - ATTEMPT_RETENTION)
        self.rounds += 1
        due = await self.store.due(self.wall_now(), ENDPOINTS_PER_ROUND)
        passes = await asyncio.gather(*(self._leased_pass(endpoint_id) for endpoint_id in due),
                                      return_exceptions=True)
        failed = [p for p in passes if isinstance(p, BaseException)]
        if failed:  # after every pass ended, so none outlives its round
            raise failed[0]

    async def _leased_pass(self, endpoint_id: str) -> None:
        now = self.wall_now()
        endpoint = await self.store.acquire(endpoint_id, self.owner, now, self._lease_end(now))
        if endpoint is None:
            return  # another instance has it
        try:
            await self._pass(endpoint)
        finally:
            await self.store.release(endpoint_id, self.owner)

    def _lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=LEASE_S)

    async def _pass(self, endpoint: Endpoint) -> None:
        scan = self._scans.setdefault(endpoint.endpoint_id, _Scan())
        started = self.journal_now()
        among: list[str] | None = None
        full = (scan.since is None or scan.full_at is None
                or started - scan.full_at > timedelta(seconds=RECONCILE_S))
        if scan.since is not None and not full:
            among = await self.store.moved_since(scan.since - MOVED_MARGIN)
        pending = await self.store.pending(endpoint.endpoint_id, ACCOUNTS_PER_PASS, among)
        delivery = _Delivery(self, endpoint)
        for account_id, after in pending:
            if not await delivery.drain(account_id, after):
                scan.since = None  # stopped early: the next pass looks at every account
                return
        if len(pending) < ACCOUNTS_PER_PASS:
            scan.since = started
            scan.full_at = started if full else scan.full_at
        else:
            scan.since = None


class _Delivery:
    """One leased pass over one endpoint: its health as the attempts go."""

    def __init__(self, deliverer: Deliverer, endpoint: Endpoint) -> None:
        self.d, self.endpoint = deliverer, endpoint
        self.lease_until = deliverer.wall_now() + timedelta(seconds=LEASE_S)
        self.outcome = Outcome(endpoint.failing_since, endpoint.failures,
                               endpoint.next_attempt_at)

    async def drain(self, account_id: str, after: int) -> bool:
        """Deliver the account's events past `after`, in order; False when the pass must stop
        (a failed attempt, a lapsed lease, shutdown)."""
        wanted = set(self.endpoint.events)
        while True:
            batch = await self.d.store.events_after(account_id, after, EVENTS_PER_READ)
            if not batch:
                return True
            attempts: list[Attempt] = []
            position = after
            for seq, event_type, payload in batch:
                if event_type not in wanted:
                    position = seq
                    continue
                if self.d.stopping.is_set() or not await self._lease_held():
                    await self._record(account_id, position, attempts)
                    return False
                attempt = await self._send(account_id, seq, event_type, payload)
                attempts.append(attempt)
                if not attempt.ok:
                    await self._record(account_id, position, attempts)
                    return False
                position = seq
            if not await self._record(account_id, position, attempts):
                return False  # the endpoint was deleted
            after = position

    async def _lease_held(self) -> bool:
        now = self.d.wall_now()
        if (self.lease_until - now).total_seconds() > self.d.policy.timeout_s * 2 + 5:
            return True
        until = self.d._lease_end(now)
        if not await self.d.store.renew(self.endpoint.endpoint_id, self.d.owner, now, until):
            log.warning("lease on webhook endpoint %s lapsed; another instance takes over",
                        self.endpoint.endpoint_id)
            return False
        self.lease_until = until
        return True

    async def _record(self, account_id: str, position: int, attempts: list[Attempt]) -> bool:
        return await self.d.store.record(self.endpoint.endpoint_id, account_id, position, attempts,
                                  self.outcome, self.d.wall_now())

    async def _send(self, account_id: str, seq: int, event_type: str,
                    payload: dict[str, object]) -> Attempt:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        at = self.d.wall_now()
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            await webhook_urls.check(self.endpoint.url, self.d.policy.allow_private,
                                     self.d.policy.timeout_s)
            status = await self._post(body, event_type, f"{account_id}:{seq}")
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except webhook_urls.UrlRefused as exc:
            error = str(exc)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration_ms = int((time.monotonic() - started) * 1000)
        metrics.WEBHOOK_DELIVERIES.labels("ok" if error is None else "failed").inc()
        if error is None:
            self.outcome = Outcome()
            return Attempt(account_id, seq, event_type, status, None, duration_ms, at)
        self.outcome = self._failed(at, error)
        return Attempt(account_id, seq, event_type, status, error[:1024], duration_ms, at,
                       self.outcome.next_attempt_at)

    async def _post(self, body: bytes, event_type: str, event_id: str) -> int:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Signature": sign(self.endpoint.secret, body, int(time.time())),
                   "X-Creditstream-Event": event_type, "X-Creditstream-Event-Id": event_id}
        # no redirects: a 3xx could point anywhere, past the address check
        async with self.d.http.stream("POST", self.endpoint.url, content=body, headers=headers,
                                      timeout=self.d.policy.timeout_s,
                                      follow_redirects=False) as response:
            return response.status_code

    def _failed(self, at: datetime, error: str) -> Outcome:
        since = self.outcome.failing_since or at
        failures = self.outcome.failures + 1
        window = self.d.policy.retry_window_s
        if (at - since).total_seconds() >= window:
            reason = (f"disabled after {failures} failed attempts over {window:g} s "
                      f"(since {since.isoformat()}); last error: {error}")
            log.warning("webhook endpoint %s %s", self.endpoint.endpoint_id, reason)
            metrics.WEBHOOK_DELIVERIES.labels("disabled").inc()
            return Outcome(since, failures, None, reason)
        retry = at + timedelta(seconds=self.d.policy.retry_delay(failures))
        return Outcome(since, failures, retry)
