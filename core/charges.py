"""An account's charges: a one-step debit, a hold and its capture in one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.grants import GrantRules
from core.limits import FeatureLimit
from core.model import check_amount
from core.spend_limits import SpendLimits


class ChargeRules(GrantRules, SpendLimits):
    def charge(
        self,
        charge_id: str,
        amount: int,
        reason: str,
        now: datetime,
        ref: str | None = None,
        metadata: dict[str, Any] | None = None,
        price: dict[str, Any] | None = None,
        limit: FeatureLimit | None = None,
    ) -> list[dict[str, Any]]:
        """One-step debit: hold and capture in one transaction. Returns the grants that funded it."""
        check_amount(amount)
        self._check_spendable(amount, now)
        usage = self._count_run(limit, now)
        funding = self._take(amount, reserve=False)
        self.balance -= amount
        self._count_trial_spend(amount, now)
        self.feature_usage = usage
        self._record(
            "charge",
            amount,
            -amount,
            0,
            reason,
            ref,
            charge_id,
            {**(price or {}), "funding": funding},
            now,
            metadata,
        )
        return funding
