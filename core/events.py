"""Stream events: what an account's subscribers receive, in `seq` order."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

# the last moment written and its text: a batch stamps all its operations with one moment, so
# its events ask for the same text many times in a row
_last_iso: tuple[datetime | None, str | None] = (None, None)


def iso(moment: datetime | None) -> str | None:
    global _last_iso
    if moment is None:
        return None
    last, text = _last_iso
    if moment is last:
        return text
    text = moment.isoformat().replace("+00:00", "Z")
    _last_iso = (moment, text)
    return text


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(frozen=True)
class Event:
    account_id: str
    seq: int

    type = "event"

    def to_dict(self) -> dict[str, Any]:
        # shallow on purpose: events are frozen and their nested values are never changed after
        # the fact, so `dataclasses.asdict`'s deep copy would only cost time on every write
        return {"type": self.type, **{name: getattr(self, name) for name in _names(type(self))}}


@dataclass(frozen=True)
class BalanceUpdated(Event):
    balance: int = 0
    held: int = 0
    available: int = 0
    delta: int = 0
    reason: str = ""
    ref: str | None = None
    at: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # the hold's, charge's or grant's

    type = "balance.updated"


@dataclass(frozen=True)
class JobUpdated(Event):
    job: dict[str, Any] = field(default_factory=dict)
    at: str | None = None

    type = "job.updated"


@dataclass(frozen=True)
class CreditsLow(Event):
    available: int = 0
    threshold: int = 0
    at: str | None = None

    type = "credits.low"
