"""An account's state as the database holds it, and what can be read from it alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.events import Event, iso
from core.model import Entry, Grant
from core.plans import TRIAL


@dataclass
class AccountState:
    account_id: str
    balance: int
    held: int
    seq: int
    created_at: datetime
    plan: str | None = None
    paid: bool = False
    trial_expires_at: datetime | None = None
    trial_day: str | None = None
    trial_used: int = 0
    # runs of limited operations counted in their current window (core.limits); replaced, never
    # changed in place, as a working copy of the account may share it
    feature_usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)
    # what this transaction changed, for the unit of work to persist
    loaded_seq: int = 0
    new_entries: list[Entry] = field(default_factory=list)
    new_events: list[Event] = field(default_factory=list)
    new_grants: list[Grant] = field(default_factory=list)
    touched_grants: dict[str, Grant] = field(default_factory=dict)
    idempotency_key: str | None = None
    low_notified: bool = False
    low_threshold: int | None = None  # set by the service from configuration
    # `grants` in consumption order (Grant.consumption_key, which never changes) once sorted:
    # spending and expiry then walk them from the front instead of sorting them each time
    grants_ordered: bool = False
    # a working copy shares its grants with the state it was copied from, and copies one only
    # when it changes it (`own_grants` are those it copied or created): a batch of a thousand
    # parts on an account of a thousand grants copies a list per part, not a thousand grants
    shared_grants: bool = False
    own_grants: set[str] = field(default_factory=set)

    @property
    def available(self) -> int:
        return self.balance - self.held

    @property
    def changed(self) -> bool:
        return bool(self.new_entries or self.new_events)

    def trial_active(self, now: datetime) -> bool:
        return not self.paid and self.trial_expires_at is not None and now < self.trial_expires_at

    def spent_today(self, now: datetime) -> int:
        return self.trial_used if self.trial_day == now.date().isoformat() else 0

    def snapshot(self, now: datetime) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "balance": self.balance,
            "held": self.held,
            "available": self.available,
            "plan": self.plan,
            "trial": {
                "active": self.trial_active(now),
                "expires_at": iso(self.trial_expires_at),
                "daily_limit": TRIAL.daily_limit,
                "spent_today": self.spent_today(now),
            },
            "seq": self.seq,
            "created_at": iso(self.created_at),
        }
