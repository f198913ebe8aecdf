"""The work on one leased endpoint on this instance (background/webhook_delivery.py's
`Deliverer` starts one per endpoint it leases): delivery passes until nothing is pending, and
the lease renewed alongside; a renewal that fails cancels the work, attempts in flight
included, before another instance may take the lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import metrics
from background.webhook_pass import DeliveryPass
from background.webhook_state import DeliveryState
from storage.webhook_deliveries import Outcome
from storage.webhook_endpoint_record import Endpoint

log = logging.getLogger("creditstream.outbound")
# also how soon deliveries stop on an endpoint deleted (or disabled) meanwhile: a renewal
# fails once it is gone, and its work is cancelled
RENEW_EVERY_S = 1.0
RENEW_RETRY_S = 1.0
LEASE_MARGIN_S = 5.0  # give up the work this long before an unrenewed lease ends


class EndpointWorker:
    """One leased endpoint on this instance: passes until nothing is pending, then the lease
    is released. Its lease is renewed alongside; a renewal that fails cancels the work."""

    def __init__(self, deliverer: DeliveryState, endpoint: Endpoint) -> None:
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
                passed = DeliveryPass(self.d, self.endpoint, self.outcome)
                await passed.run()
                self.outcome = passed.outcome
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
            self.d.workers.pop(endpoint_id, None)

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
