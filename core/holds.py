"""An account's holds: opened they reserve credits; a capture takes them, a release frees them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from core.errors import InvalidInput, InvalidState
from core.events import iso
from core.grants import GrantRules
from core.limits import FeatureLimit, uncounted
from core.model import Hold, check_amount
from core.spend_limits import SpendLimits


class HoldRules(GrantRules, SpendLimits):
    def open_hold(
        self,
        hold_id: str,
        amount: int,
        ttl: timedelta,
        now: datetime,
        ref: str | None = None,
        job_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        price: dict[str, Any] | None = None,
        limit: FeatureLimit | None = None,
    ) -> Hold:
        """`price` names the priced operation (and model, params), `limit` the feature limit
        its operation has; `metadata` is the caller's."""
        check_amount(amount)
        self._check_spendable(amount, now)
        usage = self._count_run(limit, now)
        hold = Hold(
            hold_id,
            self.account_id,
            amount,
            Hold.OPEN,
            now,
            now + ttl,
            ref,
            job_id=job_id,
            metadata=dict(metadata or {}),
            price=dict(price or {}),
        )
        hold.allocation = self._take(amount, reserve=True)
        self.held += amount
        self._count_trial_spend(amount, now)
        self.feature_usage = usage
        self._record(
            "hold", amount, 0, amount, "hold", ref, hold_id, dict(price or {}), now, metadata
        )
        return hold

    def capture(self, hold: Hold, amount: int | None, now: datetime) -> None:
        """Take `amount` (default: all) of an open hold and free the rest. Repeats are no-ops."""
        self._check_owns(hold)
        if amount is not None:
            check_amount(amount)
        if hold.status == Hold.CAPTURED and amount in (None, hold.captured_amount):
            return
        if hold.status != Hold.OPEN:
            raise InvalidState(
                f"Hold {hold.hold_id} is {hold.status}; only an open hold can be captured",
                hold_status=hold.status,
            )
        if hold.is_due(now):
            raise InvalidState(
                f"Hold {hold.hold_id} expired at {iso(hold.expires_at)}", hold_status="expired"
            )
        take = hold.amount if amount is None else amount
        if take > hold.amount:
            raise InvalidInput(f"Expected a capture of at most the held {hold.amount}, got {take}")
        funding = self._unreserve(hold, consume=take)
        self.held -= hold.amount
        self.balance -= take
        self._uncount_trial_spend(hold, hold.amount - take, now)
        hold.status, hold.captured_amount, hold.closed_at, hold.funding = (
            Hold.CAPTURED,
            take,
            now,
            funding,
        )
        meta = {
            **hold.price,
            "hold_id": hold.hold_id,
            "released": hold.amount - take,
            "funding": funding,
        }
        self._record(
            "capture",
            take,
            -take,
            -hold.amount,
            "capture",
            hold.ref,
            hold.hold_id,
            meta,
            now,
            hold.metadata,
        )
        self.expire_due_grants(now)  # the freed rest may belong to a grant already expired

    def release(
        self, hold: Hold, reason: str, now: datetime, details: dict[str, Any] | None = None
    ) -> None:
        """Free an open hold in full. Releasing a released or expired hold again is a no-op."""
        self._check_owns(hold)
        if hold.status in (Hold.RELEASED, Hold.EXPIRED):
            return
        if hold.status != Hold.OPEN:
            raise InvalidState(
                f"Hold {hold.hold_id} is {hold.status}; only an open hold can be released",
                hold_status=hold.status,
            )
        self._free(hold, Hold.RELEASED, reason, now, details)

    def expire_hold(self, hold: Hold, now: datetime) -> bool:
        """The sweeper's release of a hold past its TTL; False when there was nothing to do."""
        self._check_owns(hold)
        if not hold.is_due(now):
            return False
        self._free(hold, Hold.EXPIRED, "timeout", now)
        return True

    def _check_owns(self, hold: Hold) -> None:
        if hold.account_id != self.account_id:
            raise InvalidState(f"Hold {hold.hold_id} belongs to another account")

    def _free(
        self,
        hold: Hold,
        status: str,
        reason: str,
        now: datetime,
        details: dict[str, Any] | None = None,
    ) -> None:
        self._unreserve(hold, consume=0)
        self.held -= hold.amount
        self._uncount_trial_spend(hold, hold.amount, now)
        operation = hold.price.get("operation")
        if isinstance(operation, str):  # a released run never ran: it is given back
            usage = uncounted(operation, hold.created_at, self.feature_usage, now)
            self.feature_usage = self.feature_usage if usage is None else usage
        hold.status, hold.release_reason, hold.closed_at = status, reason, now
        self._record(
            "release",
            hold.amount,
            0,
            -hold.amount,
            reason,
            hold.ref,
            hold.hold_id,
            {**(details or {}), "hold_id": hold.hold_id},
            now,
            hold.metadata,
        )
        self.expire_due_grants(now)
