"""Feature limits per plan (seed 004's "Credit Limits by Feature"): how many runs of an operation
an account may start per UTC day or month, counted on the account itself so the count is read
under the account's lock, in the same transaction as the spend it limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import FeatureLimitExceeded
from core.model import seconds_until_next_utc_day

NO_PLAN = "free"  # the key, in a limit's table, for accounts that have no plan
PERIODS = ("day", "month")

Usage = Mapping[str, Mapping[str, Any]]  # operation -> {"window": "2030-01-31", "used": 2}


@dataclass(frozen=True)
class FeatureLimit:
    operation: str
    period: str  # "day" | "month"
    per_plan: Mapping[str, int]  # plan name (or NO_PLAN) -> runs allowed per period

    def allowed(self, plan: str | None) -> int | None:
        """The runs `plan` may start per period; None when the plan has no limit here."""
        return self.per_plan.get(plan or NO_PLAN)

    def window(self, now: datetime) -> str:
        return now.strftime("%Y-%m-%d" if self.period == "day" else "%Y-%m")

    def used(self, usage: Usage, now: datetime) -> int:
        counted = usage.get(self.operation)
        if counted is None or counted.get("window") != self.window(now):
            return 0
        return int(counted.get("used", 0))

    def retry_after(self, now: datetime) -> int:
        if self.period == "day":
            return seconds_until_next_utc_day(now)
        first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
        return max(1, int((following - now).total_seconds() + 0.999))

    def status(self, plan: str | None, usage: Usage, now: datetime) -> dict[str, Any] | None:
        """What is left for `plan` now, as `POST /v1/quote` reports it."""
        allowed = self.allowed(plan)
        if allowed is None:
            return None
        used = self.used(usage, now)
        return {
            "operation": self.operation,
            "plan": plan or NO_PLAN,
            "period": self.period,
            "limit": allowed,
            "used": used,
            "remaining": max(0, allowed - used),
            "resets_in": self.retry_after(now),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"operation": self.operation, "period": self.period, "per_plan": dict(self.per_plan)}


def counted(
    limit: FeatureLimit, plan: str | None, usage: Usage, now: datetime
) -> dict[str, dict[str, Any]]:
    """`usage` with one more run of the limit's operation, or FeatureLimitExceeded.

    Returns a new mapping: the one given may be shared with a copy of the account."""
    used = limit.used(usage, now)
    allowed = limit.allowed(plan)
    if allowed is not None and used + 1 > allowed:
        raise FeatureLimitExceeded(
            limit.operation, plan or NO_PLAN, allowed, used, limit.period, limit.retry_after(now)
        )
    return {
        **{k: dict(v) for k, v in usage.items()},
        limit.operation: {"window": limit.window(now), "used": used + 1},
    }


def uncounted(
    operation: str, started: datetime, usage: Usage, now: datetime
) -> dict[str, dict[str, Any]] | None:
    """`usage` with a run given back (a hold released: nothing ran), if that run was counted in
    the window still current; None when there is nothing to give back. The window's format says
    its period, so the limit itself need not be known."""
    counted_run = usage.get(operation)
    if counted_run is None or not counted_run.get("used"):
        return None
    window = counted_run.get("window")
    windows_then = {started.strftime("%Y-%m-%d"), started.strftime("%Y-%m")}
    windows_now = {now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")}
    if window not in windows_then or window not in windows_now:
        return None
    return {
        **{k: dict(v) for k, v in usage.items()},
        operation: {"window": window, "used": int(counted_run["used"]) - 1},
    }
