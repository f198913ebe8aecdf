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
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from core.errors import AmountTooLarge, InvariantViolated, RefundExceedsSpend
from core.events import iso
from core.model import MAX_BALANCE, Entry, Grant, check_amount, new_id

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
    def from_journal(
        cls, spend_id: str, kind: str, entries: Iterable[Entry], grants: Iterable[Grant]
    ) -> Spend | None:
        """The spend among `entries` (its journal lines: op_id == spend_id), or None."""
        lines = [e for e in entries if e.op_id == spend_id]
        spent = next((e for e in lines if e.type == kind), None)
        if spent is None:
            return None
        return cls(
            spend_id,
            spent,
            tuple(e for e in lines if e.type == REFUND),
            {g.grant_id: g for g in grants},
        )

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
        return {
            k: self.entry.metadata[k]
            for k in ("operation", "model", "params")
            if k in self.entry.metadata
        }

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
        raise InvariantViolated(
            f"The funding of {self.spend_id} does not cover {amount} more "
            f"refunded credits (refundable {self.refundable})"
        )

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
        return [
            (grant_id, kind, amount - back.get(grant_id, 0))
            for grant_id, (kind, amount) in reversed(funded.items())
        ]

    def refund_views(self) -> list[dict[str, Any]]:
        """Its refunds, oldest first, each as `POST /v1/refunds` answered it (`refunded` and
        `refundable` as they were right after that refund)."""
        views: list[dict[str, Any]] = []
        refunded = 0
        for entry in self.refunds:
            refunded += entry.amount
            views.append(
                {
                    "refund_id": entry.metadata.get("refund_id"),
                    "account_id": entry.account_id,
                    "charge_id": self.spend_id if self.kind == CHARGE else None,
                    "hold_id": self.spend_id if self.kind == CAPTURE else None,
                    "amount": entry.amount,
                    "reason": entry.reason,
                    "funding": _funding(entry),
                    "spent": self.amount,
                    "refunded": refunded,
                    "refundable": self.amount - refunded,
                    "metadata": dict(entry.metadata.get("metadata") or {}),
                    "created_at": iso(entry.at),
                }
            )
        return views

    def refund_view(self, refund_id: str) -> dict[str, Any] | None:
        return next((v for v in self.refund_views() if v["refund_id"] == refund_id), None)

    def charge_view(self) -> dict[str, Any]:
        """A charge as `POST …/charges` answered it, with what has been refunded of it since
        and its refunds."""
        price = self.price()
        return {
            "charge_id": self.spend_id,
            "account_id": self.account_id,
            "amount": self.amount,
            "reason": self.entry.reason,
            "ref": self.entry.ref,
            "funding": _funding(self.entry),
            "metadata": dict(self.entry.metadata.get("metadata") or {}),
            "price": price or None,
            "created_at": iso(self.entry.at),
            "refunded": self.refunded,
            "refundable": self.refundable,
            "refunds": self.refund_views(),
        }


class RefundRules:
    """An account's refund rules, mixed into `core.account.Account`, whose state and journal
    they use through the names declared here."""

    account_id: str
    balance: int
    trial_day: str | None
    trial_used: int
    grants: list[Grant]
    new_grants: list[Grant]

    def _insert_grant(self, grant: Grant) -> None:
        raise NotImplementedError

    def _changing(self, grant: Grant, index: int | None = None) -> Grant:
        raise NotImplementedError

    def _record(
        self,
        type_: str,
        amount: int,
        delta: int,
        held_delta: int,
        reason: str,
        ref: str | None,
        op_id: str,
        details: dict[str, Any],
        now: datetime,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        raise NotImplementedError

    def refund(
        self,
        spend: Spend,
        refund_id: str,
        amount: int | None,
        reason: str,
        now: datetime,
        metadata: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Give back `amount` (default: all that is left) of a charge or capture to the grants
        that funded it (core.refunds). Returns where each grant's credits went."""
        take = spend.refundable if amount is None else check_amount(amount)
        if take < 1 or take > spend.refundable:
            raise RefundExceedsSpend(spend.spend_id, spend.amount, spend.refunded, take)
        if self.balance + take > MAX_BALANCE:
            raise AmountTooLarge(
                f"A balance may hold at most {MAX_BALANCE} credits; this refund would exceed it"
            )
        funding = [
            self._give_back(spend, grant_id, kind, part, refund_id, now)
            for grant_id, kind, part in spend.plan(take)
        ]
        self.balance += take
        if self.trial_day == now.date().isoformat() == spend.counted_day.isoformat():
            # only credits counted today come back to today's allowance: a capture's were
            # counted when its hold opened, maybe on an earlier day
            self.trial_used = max(0, self.trial_used - take)
        details = {
            "refund_id": refund_id,
            "refund_of": spend.kind,
            "spent_at": iso(spend.entry.at),
            **spend.price(),
            "funding": funding,
        }
        self._record(
            "refund", take, take, 0, reason, spend.entry.ref, spend.spend_id, details, now, metadata
        )
        return funding

    def _give_back(
        self, spend: Spend, grant_id: str, kind: str, amount: int, refund_id: str, now: datetime
    ) -> dict[str, Any]:
        live = next((g for g in self.grants if g.grant_id == grant_id), None)
        grant = live or spend.grants.get(grant_id)  # a spent-out grant is not a live one
        if grant is None:
            raise InvariantViolated(
                f"{spend.spend_id} was funded by grant {grant_id}, which {self.account_id} lacks"
            )
        line = {"grant_id": grant_id, "kind": kind, "amount": amount}
        if grant.expires_at is not None and grant.expires_at <= now:
            # an expired grant's credits come back for as long as the grant lasted
            lasting = grant.expires_at - grant.created_at
            again = Grant(
                new_id("grt"),
                self.account_id,
                amount,
                amount,
                grant.reason,
                grant.kind,
                now + lasting,
                now,
                refund_id,
            )
            self._insert_grant(again)
            self.new_grants.append(again)
            return {**line, "returned_to": again.grant_id, "expires_at": iso(again.expires_at)}
        if live is None:
            grant = replace(grant)
            self._insert_grant(grant)
        grant = self._changing(grant)
        grant.remaining += amount
        return {**line, "returned_to": grant_id, "expires_at": iso(grant.expires_at)}


def _funding(entry: Entry) -> list[dict[str, Any]]:
    funding = entry.metadata.get("funding")
    return list(funding) if isinstance(funding, list) else []
