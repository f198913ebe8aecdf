"""What an instance's outbound-webhook delivery shares between its parts: the policy, the
clocks, the store and egress, the endpoints being worked, what was last looked at per endpoint,
each endpoint's lag, and the unfinished steps readiness watches. `Deliverer`
(background/webhook_delivery.py) is one, and claims the work; `EndpointWorker`
(background/webhook_worker.py) and `DeliveryPass` (background/webhook_pass.py) do it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import metrics
from background.supervision import Heartbeat
from egress import Egress
from storage.webhook_deliveries import WebhookDeliveries

LEASE_S = 60.0

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
class Scan:
    """What this instance last looked at for an endpoint (journal clock)."""

    since: datetime | None = None  # the start of the last pass that left nothing pending
    full_at: datetime | None = None  # the start of the last pass over every account
    # the endpoint's rescan mark that pass read: a resend or an enable bumps it, and then a
    # pass looks at every account (a cursor moved back has no new events to be noticed by)
    rescans: int | None = None


@dataclass
class Lag:
    """Per account, when its oldest event not yet delivered to the endpoint was written."""

    waiting: dict[str, datetime] = field(default_factory=dict)

    def seconds(self, now: datetime) -> float:
        if not self.waiting:
            return 0.0
        return max(0.0, (now - min(self.waiting.values())).total_seconds())


class Working(Protocol):
    """An endpoint's work in progress on this instance."""

    task: asyncio.Task[None]
    dirty: bool  # events may have arrived since its last look


class DeliveryState:
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
        self.workers: dict[str, Working] = {}  # by endpoint id
        self._scans: dict[str, Scan] = {}
        self._lags: dict[str, Lag] = {}
        self._steps: dict[int, float] = {}  # unfinished steps: id -> monotonic start
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

    def lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=LEASE_S)

    def scan(self, endpoint_id: str) -> Scan:
        return self._scans.setdefault(endpoint_id, Scan())

    def lag(self, endpoint_id: str) -> Lag:
        lag = self._lags.get(endpoint_id)
        if lag is None:
            lag = self._lags[endpoint_id] = Lag()
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
