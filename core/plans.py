"""Plans and the trial policy (seed 001)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from core.errors import UnknownPlan


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


TRIAL = TrialPolicy()
PLANS: dict[str, Plan] = {
    plan.name: plan
    for plan in (Plan("starter", 5, 30), Plan("growth", 10, 80), Plan("pro", 20, 150))
}
_BY_TIER = {plan.price_usd: plan for plan in PLANS.values()}


def plan_for(tier_or_name: object) -> Plan:
    """A plan by its name (`"growth"`) or its price tier (`10` or `"10"`)."""
    if isinstance(tier_or_name, bool):
        raise UnknownPlan(f"Expected a tier (5, 10, 20) or a plan name, got {tier_or_name!r}")
    if isinstance(tier_or_name, str):
        key = tier_or_name.strip().lower()
        if key in PLANS:
            return PLANS[key]
        if key.isascii() and key.isdigit() and len(key) <= 6 and int(key) in _BY_TIER:
            return _BY_TIER[int(key)]
    if isinstance(tier_or_name, int) and tier_or_name in _BY_TIER:
        return _BY_TIER[tier_or_name]
    raise UnknownPlan(
        f"Expected a tier (5, 10, 20) or a plan name ({', '.join(PLANS)}), got {tier_or_name!r}",
        tiers=sorted(_BY_TIER),
        plans=list(PLANS),
    )
