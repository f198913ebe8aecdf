"""What an account may spend now: available credits, the trial's daily allowance, feature limits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.account_state import AccountState
from core.errors import DailyLimitExceeded, InsufficientCredits
from core.limits import FeatureLimit, counted
from core.model import Hold, seconds_until_next_utc_day
from core.plans import TRIAL


class SpendLimits(AccountState):
    def _check_spendable(self, amount: int, now: datetime) -> None:
        # "you cannot afford this at all" says more than "not today", so it is checked first
        if amount > self.available:
            raise InsufficientCredits(required=amount, available=self.available)
        if self.trial_active(now):
            used = self.spent_today(now)
            if used + amount > TRIAL.daily_limit:
                raise DailyLimitExceeded(
                    TRIAL.daily_limit, used, amount, seconds_until_next_utc_day(now)
                )

    def _count_run(self, limit: FeatureLimit | None, now: datetime) -> dict[str, dict[str, Any]]:
        """The feature usage with one more run counted; FeatureLimitExceeded past the plan's."""
        if limit is None:
            return self.feature_usage
        return counted(limit, self.plan, self.feature_usage, now)

    def _count_trial_spend(self, amount: int, now: datetime) -> None:
        if not self.trial_active(now):
            return
        self.trial_used = self.spent_today(now) + amount
        self.trial_day = now.date().isoformat()

    def _uncount_trial_spend(self, hold: Hold, freed: int, now: datetime) -> None:
        # credits held and then given back today were never spent
        today = now.date().isoformat()
        if freed and self.trial_day == today and hold.created_at.date().isoformat() == today:
            self.trial_used = max(0, self.trial_used - freed)
