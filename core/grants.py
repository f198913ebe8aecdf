"""An account's grants: adding, expiring, and taking their credits soonest-expiring first."""

from __future__ import annotations

from bisect import bisect_left, insort
from datetime import datetime
from typing import Any

from core.errors import AmountTooLarge, InvalidInput, InvariantViolated
from core.events import iso
from core.journal import AccountJournal
from core.model import MAX_BALANCE, Grant, Hold, check_amount, grant_kind


class GrantRules(AccountJournal):
    def add_grant(
        self,
        grant_id: str,
        amount: int,
        reason: str,
        now: datetime,
        expires_at: datetime | None = None,
        ref: str | None = None,
        plan: str | None = None,
        details: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Grant:
        """`details` are the engine's own notes for the journal (a payment's event id);
        `metadata` is the caller's."""
        check_amount(amount)
        if expires_at is not None and expires_at <= now:
            raise InvalidInput(f"Expected expires_at in the future, got {iso(expires_at)}")
        if self.balance + amount > MAX_BALANCE:
            raise AmountTooLarge(
                f"A balance may hold at most {MAX_BALANCE} credits; this grant would exceed it"
            )
        grant = Grant(
            grant_id,
            self.account_id,
            amount,
            amount,
            reason,
            grant_kind(reason),
            expires_at,
            now,
            ref,
            metadata=dict(metadata or {}),
        )
        self._insert_grant(grant)
        self.new_grants.append(grant)
        self.balance += amount
        if grant.kind == "paid":
            self.paid = True
        if plan is not None:
            self.plan = plan
        meta = {"kind": grant.kind, "expires_at": iso(expires_at), **(details or {})}
        if plan is not None:
            meta["plan"] = plan
        self._record("grant", amount, amount, 0, reason, ref, grant_id, meta, now, metadata)
        return grant

    def expire_due_grants(self, now: datetime) -> int:
        """Expire the unconsumed, unreserved remainder of grants past `expires_at`.

        Credits reserved by open holds stay until the hold ends: a capture consumes them, and a
        release frees them, at which point they expire too.
        """
        expired_total = 0
        self._order_grants()
        due = []
        for index, grant in enumerate(self.grants):
            if grant.expires_at is None or grant.expires_at > now:
                break  # in consumption order: those that expire later, or never, follow
            if grant.is_due(now):
                due.append((index, grant))
        for index, shared in due:
            grant = self._changing(shared, index)
            expiring = grant.free
            grant.remaining -= expiring
            self.balance -= expiring
            expired_total += expiring
            self._record(
                "expire",
                expiring,
                -expiring,
                0,
                grant.reason,
                grant.ref,
                grant.grant_id,
                {"grant_id": grant.grant_id, "kind": grant.kind},
                now,
            )
        return expired_total

    def _take(self, amount: int, reserve: bool) -> list[dict[str, Any]]:
        """Reserve (for a hold) or spend (a charge) unreserved credits, soonest-expiring first;
        returns the grants it came from."""
        parts = []
        for grant, take in self._allocate(amount):
            if reserve:
                grant.reserved += take
            else:
                grant.remaining -= take
            parts.append(_funding(grant, take))
        return parts

    def _allocate(self, amount: int) -> list[tuple[Grant, int]]:
        parts: list[tuple[Grant, int]] = []
        left = amount
        self._order_grants()
        for index, grant in enumerate(self.grants):
            take = min(grant.free, left)
            if take <= 0:
                continue
            parts.append((self._changing(grant, index), take))
            left -= take
            if left == 0:
                return parts
        raise InvariantViolated(
            f"Grants of {self.account_id} do not cover {amount} credits "
            f"(available {self.available}): the balance and its grants "
            "disagree"
        )

    def _unreserve(self, hold: Hold, consume: int) -> list[dict[str, Any]]:
        """Give back a hold's reservation, consuming the first `consume` credits of it."""
        funding = []
        for part in hold.allocation:
            found = next((g for g in self.grants if g.grant_id == part["grant_id"]), None)
            if found is None:
                raise InvariantViolated(
                    f"Hold {hold.hold_id} reserved grant "
                    f"{part['grant_id']}, which {self.account_id} lacks"
                )
            grant = self._changing(found)
            grant.reserved -= part["amount"]
            take = min(part["amount"], consume)
            consume -= take
            grant.remaining -= take
            if take:
                funding.append(_funding(grant, take))
        return funding

    def _order_grants(self) -> None:
        if not self.grants_ordered:
            self.grants.sort(key=Grant.consumption_key)
            self.grants_ordered = True

    def _insert_grant(self, grant: Grant) -> None:
        if self.grants_ordered:
            insort(self.grants, grant, key=Grant.consumption_key)
        else:
            self.grants.append(grant)
        self.own_grants.add(grant.grant_id)

    def _changing(self, grant: Grant, index: int | None = None) -> Grant:
        """`grant` ready to change, and marked so: a working copy's own copy of it when it was
        shared (`index`, its place in `grants`, when the caller knows it)."""
        if self.shared_grants and grant.grant_id not in self.own_grants:
            mine = object.__new__(Grant)  # dataclasses.replace, without its per-field walk
            mine.__dict__.update(grant.__dict__)
            self.grants[self._index_of(grant) if index is None else index] = mine
            self.own_grants.add(grant.grant_id)
            grant = mine
        self.touched_grants[grant.grant_id] = grant
        return grant

    def _index_of(self, grant: Grant) -> int:
        if self.grants_ordered:
            index = bisect_left(self.grants, grant.consumption_key(), key=Grant.consumption_key)
            if index < len(self.grants) and self.grants[index] is grant:
                return index
        return next(i for i, g in enumerate(self.grants) if g is grant)


def _funding(grant: Grant, amount: int) -> dict[str, Any]:
    """One line of what funded a capture or charge (or what a hold reserved)."""
    return {"grant_id": grant.grant_id, "kind": grant.kind, "amount": amount}
