"""Refunds after success: a charge, or a hold's capture, gives credits back to the grants that
funded it.

- The refunds of one spend never exceed it, and each grant gets back at most what it funded.
- A partial refund undoes the spend from its end: the credits taken last come back first (a
  spend funded by trial credits and then paid ones gives the paid ones back first).
- Credits of a grant still live go back into it. Credits of a grant that has expired
  (`expires_at` at or before the refund) come back as a new grant of the same reason and kind
  that lasts as long as the original did (its `expires_at - created_at`), counted from the
  refund: a 7-day trial grant's credits come back for 7 days, never as credits that outlive
  their grant silently and never as credits that vanish on arrival.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from core.errors import InvariantViolated
from core.events import iso
from core.model import Entry, Grant

CHARGE = "charge"
CAPTURE = "capture"
REFUND = "refund"


@dataclass(frozen=True)
class Spend:
    """A charge (by its charge_id) or a capture (by its hold_id), with its refunds so far and
    the grants its `funding` names as they are now (spent-out ones included)."""

    spend_id: str
    entry: Entry
    refunds: tuple[Entry, ...]
    grants: dict[str, Grant]
    # when its credits were counted against the trial's daily allowance: a charge's own time,
    # a capture's hold's opening (the capture only settles what the hold counted)
    counted_at: datetime | None = None

    @classmethod
    def from_journal(cls, spend_id: str, kind: str, entries: Iterable[Entry],
                     grants: Iterable[Grant]) -> Spend | None:
        """The spend among `entries` (its journal lines: op_id == spend_id), or None."""
        lines = [e for e in entries if e.op_id == spend_id]
        spent = next((e for e in lines if e.type == kind), None)
        if spent is None:
            return None
        return cls(spend_id, spent, tuple(e for e in lines if e.type == REFUND),
                   {g.grant_id: g for g in grants})

    @property
    def account_id(self) -> str:
        return self.entry.account_id

    @property
    def kind(self) -> str:
        return self.entry.type

    @property
    def amount(self) -> int:
        return self.entry.amount

    @property
    def counted_day(self) -> date:
        """The UTC day whose trial allowance this spend used."""
        return (self.counted_at or self.entry.at).date()

    @property
    def refunded(self) -> int:
        return sum(e.amount for e in self.refunds)

    @property
    def refundable(self) -> int:
        return self.amount - self.refunded

    def price(self) -> dict[str, Any]:
        """The priced operation the spend paid for (operation, model, params), if any."""
        return {k: self.entry.metadata[k] for k in ("operation", "model", "params")
                if k in self.entry.metadata}

    def plan(self, amount: int) -> list[tuple[str, str, int]]:
        """(grant_id, kind, credits) the next `amount` refunded credits go back to."""
        parts: list[tuple[str, str, int]] = []
        left = amount
        for grant_id, kind, open_ in self._returnable():
            take = min(open_, left)
            if take > 0:
                parts.append((grant_id, kind, take))
                left -= take
            if left == 0:
                return parts
        raise InvariantViolated(f"The funding of {self.spend_id} does not cover {amount} more "
                                f"refunded credits (refundable {self.refundable})")

    def _returnable(self) -> list[tuple[str, str, int]]:
        """Per funding grant, last taken first: what it funded and has not had back yet."""
        funded: dict[str, tuple[str, int]] = {}
        for part in _funding(self.entry):
            kind, amount = funded.get(part["grant_id"], (part["kind"], 0))
            funded[part["grant_id"]] = (kind, amount + int(part["amount"]))
        back: dict[str, int] = {}
        for refund in self.refunds:
            for part in _funding(refund):
                back[part["grant_id"]] = back.get(part["grant_id"], 0) + int(part["amount"])
        return [(grant_id, kind, amount - back.get(grant_id, 0))
                for grant_id, (kind, amount) in reversed(funded.items())]


    def refund_views(self) -> list[dict[str, Any]]:
        """Its refunds, oldest first, each as `POST /v1/refunds` answered it (`refunded` and
        `refundable` as they were right after that refund)."""
        views: list[dict[str, Any]] = []
        refunded = 0
        for entry in self.refunds:
            refunded += entry.amount
            views.append({
                "refund_id": entry.metadata.get("refund_id"), "account_id": entry.account_id,
                "charge_id": self.spend_id if self.kind == CHARGE else None,
                "hold_id": self.spend_id if self.kind == CAPTURE else None,
                "amount": entry.amount, "reason": entry.reason, "funding": _funding(entry),
                "spent": self.amount, "refunded": refunded, "refundable": self.amount - refunded,
                "metadata": dict(entry.metadata.get("metadata") or {}),
                "created_at": iso(entry.at)})
        return views

    def refund_view(self, refund_id: str) -> dict[str, Any] | None:
        return next((v for v in self.refund_views() if v["refund_id"] == refund_id), None)

    def charge_view(self) -> dict[str, Any]:
        """A charge as `POST …/charges` answered it, with what has been refunded of it since
        and its refunds."""
        price = self.price()
        return {"charge_id": self.spend_id, "account_id": self.account_id,
                "amount": self.amount, "reason": self.entry.reason, "ref": self.entry.ref,
                "funding": _funding(self.entry),
                "metadata": dict(self.entry.metadata.get("metadata") or {}),
                "price": price or None, "created_at": iso(self.entry.at),
                "refunded": self.refunded, "refundable": self.refundable,
                "refunds": self.refund_views()}


def _funding(entry: Entry) -> list[dict[str, Any]]:
    funding = entry.metadata.get("funding")
    return list(funding) if isinstance(funding, list) else []
