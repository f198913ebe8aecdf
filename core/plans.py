"""Plans, their feature limits and the trial policy (seeds 001 and 004). Plans and limits are
data (core/plans.toml), validated on load; the trial stays a policy of the engine."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property, lru_cache
from importlib import resources
from typing import Any

from core.errors import UnknownPlan
from core.limits import NO_PLAN, PERIODS, FeatureLimit
from core.pricing import parse_toml

MAX_CREDIT_DAYS = 3660


class PlansFileError(ValueError):
    """The plans file is not valid; the message names the offending item."""


@dataclass(frozen=True)
class TrialPolicy:
    credits: int = 28
    duration: timedelta = timedelta(days=7)
    daily_limit: int = 4


@dataclass(frozen=True)
class Plan:
    name: str
    price_usd: int
    credits: int
    credit_days: int | None = None  # how long a plan's credits last; None: they never expire

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "price_usd": self.price_usd,
            "credits": self.credits,
            "credit_days": self.credit_days,
        }


TRIAL = TrialPolicy()


@dataclass(frozen=True)
class PlanCatalogue:
    plans: dict[str, Plan]
    limits: dict[str, FeatureLimit] = field(default_factory=dict)  # by operation

    @classmethod
    def from_toml(cls, text: str) -> PlanCatalogue:
        return cls.from_dict(parse_toml(text, "plans file", PlansFileError))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanCatalogue:
        unknown = sorted(set(data) - {"plans", "limits"})
        if unknown:
            raise PlansFileError(f"plans file: unknown tables {unknown}")
        raw_plans = data.get("plans")
        if not isinstance(raw_plans, dict) or not raw_plans:
            raise PlansFileError("plans file needs a non-empty [plans] table")
        plans = {name: _parse_plan(name, spec) for name, spec in raw_plans.items()}
        tiers = [p.price_usd for p in plans.values()]
        if len(set(tiers)) != len(tiers):
            raise PlansFileError(f"plans file: two plans share a price_usd tier ({tiers})")
        raw_limits = data.get("limits", {})
        if not isinstance(raw_limits, dict):
            raise PlansFileError("plans file: [limits] must be a table")
        limits = {op: _parse_limit(op, spec, plans) for op, spec in raw_limits.items()}
        return cls(plans, limits)

    def check_operations(self, operations: Collection[str]) -> None:
        """Every limited operation must be one the price catalogue knows."""
        unknown = sorted(set(self.limits) - set(operations))
        if unknown:
            raise PlansFileError(
                f"plans file limits unknown operations {unknown}; the price "
                f"catalogue has {sorted(operations)}"
            )

    @cached_property
    def _by_tier(self) -> dict[int, Plan]:
        return {plan.price_usd: plan for plan in self.plans.values()}

    def plan_for(self, tier_or_name: object) -> Plan:
        """A plan by its name (`"growth"`) or its price tier (`10` or `"10"`)."""
        by_tier = self._by_tier
        if isinstance(tier_or_name, str):
            key = tier_or_name.strip().lower()
            if key in self.plans:
                return self.plans[key]
            if key.isascii() and key.isdigit() and len(key) <= 6 and int(key) in by_tier:
                return by_tier[int(key)]
        if (
            isinstance(tier_or_name, int)
            and not isinstance(tier_or_name, bool)
            and tier_or_name in by_tier
        ):
            return by_tier[tier_or_name]
        tiers = sorted(by_tier)
        raise UnknownPlan(
            f"Expected a tier ({', '.join(map(str, tiers))}) or a plan name "
            f"({', '.join(self.plans)}), got {tier_or_name!r}",
            tiers=tiers,
            plans=list(self.plans),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "plans": [plan.to_dict() for plan in self.plans.values()],
            "no_plan": NO_PLAN,
            "limits": [limit.to_dict() for limit in self.limits.values()],
            "trial": {
                "credits": TRIAL.credits,
                "days": TRIAL.duration.days,
                "daily_limit": TRIAL.daily_limit,
            },
        }


@lru_cache(maxsize=1)
def packaged_plans() -> PlanCatalogue:
    """The plans file shipped with the package (read once)."""
    return PlanCatalogue.from_toml(
        resources.files("core").joinpath("plans.toml").read_text(encoding="utf-8")
    )


def _parse_plan(name: str, spec: Any) -> Plan:
    where = f"plan {name!r}"
    if name != name.lower() or not name.replace("_", "").isalnum() or len(name) > 32:
        raise PlansFileError(f"{where}: a plan name is 1-32 lowercase letters, digits or _")
    if name == NO_PLAN:
        raise PlansFileError(f"{where}: {NO_PLAN!r} names accounts without a plan")
    if not isinstance(spec, dict):
        raise PlansFileError(f"{where} must be a table")
    unknown = sorted(set(spec) - {"price_usd", "credits", "credit_days"})
    if unknown:
        raise PlansFileError(f"{where}: unknown keys {unknown}")
    days = spec.get("credit_days")
    return Plan(
        name,
        _positive(spec.get("price_usd"), f"{where} price_usd"),
        _positive(spec.get("credits"), f"{where} credits"),
        None if days is None else _positive(days, f"{where} credit_days", MAX_CREDIT_DAYS),
    )


def _parse_limit(operation: str, spec: Any, plans: dict[str, Plan]) -> FeatureLimit:
    where = f"limit {operation!r}"
    if not isinstance(spec, dict):
        raise PlansFileError(f"{where} must be a table")
    period = spec.get("period")
    if period not in PERIODS:
        raise PlansFileError(f"{where}: period must be one of {list(PERIODS)}, got {period!r}")
    per_plan: dict[str, int] = {}
    for name, allowed in spec.items():
        if name == "period":
            continue
        if name != NO_PLAN and name not in plans:
            raise PlansFileError(
                f"{where}: unknown plan {name!r}; expected {NO_PLAN!r} or one of {list(plans)}"
            )
        if isinstance(allowed, bool) or not isinstance(allowed, int) or allowed < 0:
            raise PlansFileError(f"{where}: {name} must be a whole number >= 0, got {allowed!r}")
        per_plan[name] = allowed
    if not per_plan:
        raise PlansFileError(f"{where} limits no plan")
    return FeatureLimit(operation, period, per_plan)


def _positive(value: Any, where: str, highest: int = 10**12) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= highest:
        raise PlansFileError(f"{where}: expected a whole number 1..{highest}, got {value!r}")
    return value
